// The test helpers can fail: compare() catches single wrong elements and NaN, and
// check_vjp catches a slightly wrong VJP and one that is only right for an all-ones
// upstream gradient.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

/// y = x², with a VJP that is either right or 0.1% too large.
template <bool Wrong>
struct Square {
  static constexpr std::string_view name = Wrong ? "test_wrong_square" : "test_square";
  tg::TensorMeta infer(std::span<const Tensor> in) const { return in[0].meta(); }
  Tensor forward(tg::OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    return in[0] * in[0];
  }
  std::vector<Tensor> vjp(tg::OpContext& ctx, const Tensor& grad_out) {
    return {grad_out * ctx.saved(0) * (Wrong ? 2.002 : 2.0)};
  }
};

/// Reverses a 1-D tensor, with a VJP that forgets to reverse the gradient back: right for
/// an all-ones upstream gradient, wrong for almost any other.
struct ReverseForgetful {
  static constexpr std::string_view name = "test_reverse_forgetful";
  tg::TensorMeta infer(std::span<const Tensor> in) const { return in[0].meta(); }
  Tensor forward(tg::OpContext&, std::span<const Tensor> in) {
    auto v = in[0].to_vector<double>();
    std::reverse(v.begin(), v.end());
    return tg::from_vector(v, in[0].shape(), in[0].dtype());
  }
  std::vector<Tensor> vjp(tg::OpContext&, const Tensor& grad_out) { return {grad_out}; }
};

template <class Op>
TensorFn apply_fn() {
  return [](const std::vector<Tensor>& in) { return tg::apply(Op{}, {in[0]}); };
}

}  // namespace

TEST_CASE("compare: reports the worst element with its index and both values", "[support]") {
  const Tensor expected = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(compare(expected, expected, 0, 0).ok);
  CHECK(compare(f64({1, 2, 3, 4, 5, 6 + 1e-9}, {2, 3}), expected, 1e-8, 0).ok);
  CHECK(compare(f64({1, 2, 3, 4, 5, 6 + 1e-9}, {2, 3}), expected, 0, 1e-9).ok);

  const Comparison c = compare(f64({1, 2, 3, 4, 5, 6.5}, {2, 3}), expected, 1e-8, 1e-8);
  CHECK_FALSE(c.ok);
  CHECK_THAT(c.report, Catch::Contains("worst at [1, 2]") && Catch::Contains("actual 6.5") &&
                           Catch::Contains("expected 6") && Catch::Contains("1 of 6"));

  const Comparison two = compare(f64({1, 2.1, 3, 4, 5, 7}, {2, 3}), expected, 1e-8, 0);
  CHECK_FALSE(two.ok);
  CHECK_THAT(two.report, Catch::Contains("2 of 6") && Catch::Contains("worst at [1, 2]"));
}

TEST_CASE("compare: NaN, infinities, shapes and dtypes", "[support]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(compare(f64({nan, inf, -inf}, {3}), f64({nan, inf, -inf}, {3}), 0, 0).ok);
  CHECK_FALSE(compare(f64({nan}, {1}), f64({1}, {1}), 1e9, 1e9).ok);
  CHECK_FALSE(compare(f64({1}, {1}), f64({nan}, {1}), 1e9, 1e9).ok);
  CHECK_FALSE(compare(f64({inf}, {1}), f64({1e308}, {1}), 1e9, 1e9).ok);
  CHECK_FALSE(compare(f64({-inf}, {1}), f64({inf}, {1}), 0, 0).ok);
  CHECK_FALSE(compare(f64({1, 2}, {2}), f64({1, 2}, {1, 2}), 0, 0).ok);
  CHECK_FALSE(
      compare(f64({1, 2}, {2}), tg::from_vector(std::vector<double>{1, 2}, {2}, DType::f32), 0, 0)
          .ok);
  CHECK_FALSE(compare(Tensor(), f64({1}, {1}), 0, 0).ok);
}

TEST_CASE("random_cotangent: not all ones, no entry near 0, reproducible", "[support]") {
  const auto c = random_cotangent({50}, DType::f64, 1).to_vector<double>();
  std::set<double> distinct(c.begin(), c.end());
  CHECK(distinct.size() == c.size());
  bool negative = false;
  for (double v : c) {
    CHECK(std::abs(v) >= 0.5);
    CHECK(std::abs(v) < 1.5);
    negative = negative || v < 0;
  }
  CHECK(negative);
  CHECK(random_cotangent({50}, DType::f64, 1).to_vector<double>() == c);
  CHECK(random_cotangent({50}, DType::f64, 2).to_vector<double>() != c);
}

TEST_CASE("check_vjp: passes a right VJP and fails wrong ones", "[support][vjp]") {
  const Tensor x = leaf({3, 4}, 1, -2, 2);
  SECTION("right") {
    const VjpReport r = vjp_report(apply_fn<Square<false>>(), {x}, 2);
    CHECK(r.ok);
    CHECK(r.setup_error.empty());
    CHECK(r.inputs.size() == 1);
    CHECK(r.accumulation.size() == 1);
    check_vjp(apply_fn<Square<false>>(), {x}, 2);
  }
  SECTION("0.1% too large") {
    const VjpReport r = vjp_report(apply_fn<Square<true>>(), {x}, 2);
    CHECK_FALSE(r.ok);
    REQUIRE(r.inputs.size() == 1);
    CHECK_FALSE(r.inputs[0].comparison.ok);
    CHECK_THAT(r.inputs[0].comparison.report,
               Catch::Contains("gradient of input 0") && Catch::Contains("worst at ["));
  }
  SECTION("right only for an all-ones upstream gradient") {
    const Tensor v = leaf({6}, 3);
    // With all ones the forgetful VJP happens to give the true gradient...
    const Tensor ones_grad =
        tg::grad({tg::apply(ReverseForgetful{}, {v})}, {v}, {tg::ones({6}, DType::f64)})[0];
    CHECK_THAT(ones_grad, AllClose(tg::ones({6}, DType::f64)));
    // ...but check_vjp's random upstream gradient exposes it.
    CHECK_FALSE(vjp_report(apply_fn<ReverseForgetful>(), {v}, 4).ok);
  }
  SECTION("misuse is reported, not silently passed") {
    CHECK_FALSE(vjp_report(apply_fn<Square<false>>(), {x.detach()}, 5).ok);
    CHECK_FALSE(vjp_report(apply_fn<Square<false>>(), {leaf({2}, 6).to(DType::f32)}, 5).ok);
  }
  SECTION("the inputs' own gradients are left as they were") {
    const Tensor before = f64({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4});
    Tensor handle = x;
    handle.set_grad(before);
    check_vjp(apply_fn<Square<false>>(), {x}, 7);
    CHECK(x.grad().impl() == before.impl());
    CHECK_THAT(x.grad(), AllClose({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4}));
  }
}
