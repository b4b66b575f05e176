// AdaptiveAvgPool2d and AdaptiveMaxPool2d: no parameters or buffers (as libtorch's), the
// forward of each equal to its functional op, one-number output sizes, and use in a Sequential.
#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

TEST_CASE("AdaptiveAvgPool2d and AdaptiveMaxPool2d forward their functional ops", "[nn][pool-layers]") {
  const tg::Tensor x = tg::randn({2, 3, 7, 5}, tg::DType::f64);
  const auto avg = nn::adaptive_avg_pool2d({3, 2});
  const auto max = nn::adaptive_max_pool2d(4);
  CHECK(avg->named_parameters().empty());
  CHECK(max->named_parameters().empty());
  CHECK(avg->named_buffers().empty());
  CHECK(avg->output_size() == tg::Size2{3, 2});
  CHECK(max->output_size() == tg::Size2{4, 4});
  CHECK((*avg)(x).to_vector<double>() == tg::adaptive_avg_pool2d(x, {3, 2}).to_vector<double>());
  CHECK((*max)(x).shape() == tg::Shape{2, 3, 4, 4});
  CHECK((*max)(x).to_vector<double>() == tg::adaptive_max_pool2d(x, 4).to_vector<double>());
  // The ResNet head: global average pooling, flatten, linear.
  const auto head = nn::sequential({nn::adaptive_avg_pool2d(1), nn::flatten(), nn::linear(3, 2)});
  head->to(tg::DType::f64);
  const tg::Tensor y = (*head)(x.detach().set_requires_grad(true));
  CHECK(y.shape() == tg::Shape{2, 2});
  tg::sum(y).backward();
  CHECK_THROWS_AS((*avg)(tg::zeros({7, 5})), tg::ShapeError);
}
