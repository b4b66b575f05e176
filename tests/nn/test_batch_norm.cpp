// BatchNorm2d: the primitive op's forward and VJP (training and eval) against finite
// differences and hand-computed values, and the module's running statistics.
#include <cmath>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

// Channel 0 holds {1, 2, 3, 6}: mean 3, biased var 14/4, unbiased 14/3.
// Channel 1 holds {-1, 1, 0, 8}: mean 2, biased var 50/4, unbiased 50/3.
tg::Tensor hand_input() { return f64({1, 2, -1, 1, 3, 6, 0, 8}, {2, 2, 1, 2}); }

}  // namespace

TEST_CASE("batch_norm2d: training forward normalises with the batch statistics",
          "[nn][batch_norm]") {
  const tg::Tensor w = f64({2.0, -0.5}, {2});
  const tg::Tensor b = f64({0.25, 1.0}, {2});
  tg::Tensor rm = f64({0, 0}, {2});
  tg::Tensor rv = f64({1, 1}, {2});
  const tg::Tensor y = tg::batch_norm2d(hand_input(), rm, rv, w, b, true, 0.1, 1e-5);
  const double s0 = 1 / std::sqrt(3.5 + 1e-5), s1 = 1 / std::sqrt(12.5 + 1e-5);
  CHECK_THAT(y, AllClose({2 * (1 - 3) * s0 + 0.25, 2 * (2 - 3) * s0 + 0.25,
                          -0.5 * (-1 - 2) * s1 + 1, -0.5 * (1 - 2) * s1 + 1,
                          2 * (3 - 3) * s0 + 0.25, 2 * (6 - 3) * s0 + 0.25,
                          -0.5 * (0 - 2) * s1 + 1, -0.5 * (8 - 2) * s1 + 1},
                         {2, 2, 1, 2}, tg::DType::f64, 1e-12, 1e-12));
  // Running statistics: (1 - momentum)·old + momentum·batch, with the unbiased variance.
  CHECK_THAT(rm, AllClose({0.3, 0.2}, {2}));
  CHECK_THAT(rv, AllClose({0.9 + 0.1 * 14.0 / 3.0, 0.9 + 0.1 * 50.0 / 3.0}, {2}));
  tg::batch_norm2d(hand_input(), rm, rv, w, b, true, 0.25, 1e-5);
  CHECK_THAT(rm, AllClose({0.75 * 0.3 + 0.25 * 3, 0.75 * 0.2 + 0.25 * 2}, {2}));
  CHECK_THAT(rv, AllClose({0.75 * (0.9 + 0.1 * 14.0 / 3.0) + 0.25 * 14.0 / 3.0,
                           0.75 * (0.9 + 0.1 * 50.0 / 3.0) + 0.25 * 50.0 / 3.0}, {2}));
}

TEST_CASE("batch_norm2d: eval forward uses the running statistics and changes nothing",
          "[nn][batch_norm]") {
  const tg::Tensor rm = f64({0.5, -1.0}, {2});
  const tg::Tensor rv = f64({4.0, 0.25}, {2});
  const tg::Tensor y = tg::batch_norm2d(hand_input(), rm, rv, tg::Tensor(), tg::Tensor(), false,
                                        0.1, 0.0);
  CHECK_THAT(y, AllClose({0.25, 0.75, 0, 4, 1.25, 2.75, 2, 18}, {2, 2, 1, 2}));
  CHECK_THAT(rm, AllClose({0.5, -1.0}, {2}, tg::DType::f64, 0, 0));
  CHECK_THAT(rv, AllClose({4.0, 0.25}, {2}, tg::DType::f64, 0, 0));
}

TEST_CASE("batch_norm2d: VJP matches finite differences in training and eval",
          "[nn][batch_norm][vjp]") {
  // H != W, N > 1, non-trivial affine parameters and random upstream gradients.
  const tg::Tensor x = leaf({3, 4, 2, 5}, 1, -2, 3);
  const tg::Tensor w = leaf({4}, 2, 0.5, 2);
  const tg::Tensor b = leaf({4}, 3);
  SECTION("training") {
    check_vjp([](const auto& in) {
      return tg::batch_norm2d(in[0], tg::Tensor(), tg::Tensor(), in[1], in[2], true);
    }, {x, w, b}, 11);
    // Without affine parameters, and only the input requiring grad.
    check_vjp([](const auto& in) {
      return tg::batch_norm2d(in[0], tg::Tensor(), tg::Tensor(), tg::Tensor(), tg::Tensor(), true);
    }, {x}, 12);
    // Through the module (training mode, running statistics updated on every call).
    nn::BatchNorm2d bn(4);
    bn.to(tg::DType::f64);
    check_vjp([&bn](const auto& in) { return bn(in[0]); }, {x}, 13);
    // A cotangent that is a multiple of xhat and a constant exercises both extra terms.
    check_vjp([](const auto& in) {
      return tg::sigmoid(tg::batch_norm2d(in[0], tg::Tensor(), tg::Tensor(), in[1], in[2], true));
    }, {x, w, b}, 14);
  }
  SECTION("eval") {
    const tg::Tensor rm = random_tensor({4}, 4);
    const tg::Tensor rv = random_tensor({4}, 5, 0.5, 2);
    check_vjp([&](const auto& in) {
      return tg::batch_norm2d(in[0], rm, rv, in[1], in[2], false);
    }, {x, w, b}, 15);
  }
  SECTION("f32 agrees with f64") {
    check_f32_grads_match_f64([](const auto& in) {
      return tg::batch_norm2d(in[0], tg::Tensor(), tg::Tensor(), in[1], in[2], true);
    }, {x, w, b}, 16, 1e-4, 1e-3);
  }
}

TEST_CASE("batch_norm2d: argument errors", "[nn][batch_norm]") {
  const tg::Tensor x = random_tensor({2, 3, 2, 2}, 1);
  CHECK_THROWS_AS(tg::batch_norm2d(random_tensor({2, 3, 4}, 1), tg::Tensor(), tg::Tensor(),
                                   tg::Tensor(), tg::Tensor(), true), tg::ShapeError);
  CHECK_THROWS_WITH(tg::batch_norm2d(x, tg::Tensor(), tg::Tensor(), random_tensor({4}, 2)),
                    Catch::Contains("batch_norm2d") && Catch::Contains("weight must be [3]") &&
                        Catch::Contains("[4]"));
  CHECK_THROWS_AS(tg::batch_norm2d(x, tg::Tensor(), tg::Tensor()), tg::ValueError);  // eval needs stats
  CHECK_THROWS_AS(tg::batch_norm2d(x, tg::zeros({3}), tg::ones({3}), tg::Tensor(), tg::Tensor(), true),
                  tg::DTypeError);
  CHECK_THROWS_WITH(tg::batch_norm2d(random_tensor({1, 3, 1, 1}, 3), tg::Tensor(), tg::Tensor(),
                                     tg::Tensor(), tg::Tensor(), true),
                    Catch::Contains("more than 1 value per channel"));
  CHECK_THROWS_AS(tg::batch_norm2d(x, tg::Tensor(), tg::Tensor(), tg::Tensor(), tg::Tensor(), true, 2.0),
                  tg::ValueError);
}

TEST_CASE("BatchNorm2d module: buffers, running statistics, train/eval", "[nn][batch_norm]") {
  nn::BatchNorm2d bn(2);
  bn.to(tg::DType::f64);
  std::vector<std::string> state;
  for (const auto& [name, _] : bn.named_state()) state.push_back(name);
  CHECK(state == std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked"});
  const tg::Tensor x = hand_input();
  bn(x);
  bn(x);
  CHECK(bn.num_batches_tracked().item<std::int64_t>() == 2);
  const double rv0 = 0.9 * (0.9 + 0.1 * 14.0 / 3.0) + 0.1 * 14.0 / 3.0;
  CHECK_THAT(bn.running_mean(), AllClose({0.9 * 0.3 + 0.3, 0.9 * 0.2 + 0.2}, {2}));
  const double rv1 = 0.9 * (0.9 + 0.1 * 50.0 / 3.0) + 0.1 * 50.0 / 3.0;
  CHECK_THAT(bn.running_var(), AllClose({rv0, rv1}, {2}));

  bn.eval();
  const tg::Tensor y = bn(x);
  CHECK(bn.num_batches_tracked().item<std::int64_t>() == 2);
  CHECK_THAT(bn.running_var(), AllClose({rv0, rv1}, {2}));
  const double m0 = 0.9 * 0.3 + 0.3;
  CHECK(y.at({1, 0, 0, 1}) == Approx((6 - m0) / std::sqrt(rv0 + 1e-5)).epsilon(1e-12));

  // momentum = nullopt: a cumulative average, so two equal batches leave the batch mean.
  nn::BatchNorm2d cumulative(2, {.momentum = std::nullopt, .affine = false});
  cumulative.to(tg::DType::f64);
  CHECK(cumulative.named_parameters().empty());
  cumulative(x);
  cumulative(x);
  CHECK_THAT(cumulative.running_mean(), AllClose({3, 2}, {2}));
  CHECK_THAT(cumulative.running_var(), AllClose({14.0 / 3.0, 50.0 / 3.0}, {2}));

  // Without running statistics, evaluation also normalises with the batch's.
  nn::BatchNorm2d untracked(2, {.track_running_stats = false});
  untracked.to(tg::DType::f64);
  CHECK(untracked.named_buffers().empty());
  untracked.eval();
  CHECK(untracked(x).at({0, 0, 0, 0}) == Approx(-2 / std::sqrt(3.5 + 1e-5)).epsilon(1e-12));
}
