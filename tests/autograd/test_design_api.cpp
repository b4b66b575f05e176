// The public API contract of shared/DESIGN.md, written as it is there: this file must
// compile, and each call must give the documented shapes.
#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

TEST_CASE("the API of DESIGN.md compiles as written and gives the documented shapes", "[api]") {
  tg::Tensor x = tg::from_vector(std::vector<double>(2 * 3 * 8 * 8, 0.5), {2, 3, 8, 8}, tg::DType::f64);
  tg::Tensor w = tg::randn({4, 3, 3, 3}, tg::DType::f32);
  x.set_requires_grad(true);
  CHECK(x.requires_grad());
  CHECK(x.shape()[1] == 3);
  CHECK(x.shape().size() == 4);
  CHECK(x.dtype() == tg::DType::f64);
  CHECK(x.numel() == 384);
  std::vector<double> v = x.to_vector<double>();
  CHECK(v.size() == 384);

  const tg::Tensor wd = w.to(tg::DType::f64);
  const tg::Tensor b = tg::zeros({4}, tg::DType::f64);
  const tg::Tensor c = tg::conv2d(x, wd, b, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 1});
  CHECK(c.shape() == tg::Shape{2, 4, 4, 4});  // H: (8+2-3)/2+1, W: 8-2*(3-1)
  const tg::Tensor m = tg::max_pool2d(x, {.kernel_size = {2, 2}, .stride = {2, 2}, .padding = {0, 0},
                                          .dilation = {1, 1}, .ceil_mode = false});
  CHECK(m.shape() == tg::Shape{2, 3, 4, 4});
  const tg::Tensor a = tg::avg_pool2d(x, {.kernel_size = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
                                          .ceil_mode = false, .count_include_pad = true, .divisor_override = {}});
  CHECK(a.shape() == tg::Shape{2, 3, 4, 4});

  const tg::Tensor flat = tg::flatten(tg::relu(c), 1);
  const tg::Tensor lw = tg::randn({5, 64}, tg::DType::f64);
  const tg::Tensor logits = tg::linear(flat, lw, tg::Tensor{});
  const tg::Tensor logp = tg::log_softmax(logits, 1);
  const tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{1, 4}, {2});
  tg::Tensor loss = tg::nll_loss(logp, target) + tg::cross_entropy(logits, target, tg::Reduction::sum);
  loss = loss + tg::sum(tg::exp(m) * 2.0 - 1.0 / (tg::sqrt(a * a + 1.0))) + tg::mean(-tg::tanh(tg::sigmoid(a)));
  loss.backward();
  CHECK(x.grad().shape() == x.shape());
  tg::Tensor y = tg::matmul(tg::log(tg::abs(lw) + 1.0), tg::ones({64, 2}, tg::DType::f64));
  (void)y;
  {
    tg::NoGradGuard g;
    CHECK_FALSE((x * 2.0).requires_grad());
  }
  tg::Tensor z = x * 3.0;
  z.backward(tg::ones(z.shape(), tg::DType::f64));
  const auto report = tg::gradcheck([](const std::vector<tg::Tensor>& in) { return tg::tanh(in[0]); },
                                    {tg::randn({3}, tg::DType::f64).set_requires_grad(true)}, {});
  CHECK(report.passed);
}
