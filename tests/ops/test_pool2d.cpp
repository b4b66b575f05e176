// max_pool2d and avg_pool2d: output sizes (every ceil_mode rule), ties, overlapping windows,
// -inf, NaN, divisor rules, gradients against finite differences, and errors.
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using tg::testing::AllClose;
using tg::testing::f64;
using Catch::Matchers::Contains;

TEST_CASE("pool output sizes follow PyTorch, including ceil_mode's rule", "[pool]") {
  struct Row {
    std::int64_t h, k, s, p, d;
    bool ceil;
    std::int64_t expected;
  };
  // expected = floor or ceil((h + 2p - d(k-1) - 1)/s) + 1, minus a last window that would
  // start in the right padding.
  const Row rows[] = {
      {6, 2, 2, 0, 1, false, 3}, {7, 2, 2, 0, 1, false, 3}, {7, 2, 2, 0, 1, true, 4},
      {6, 3, 2, 0, 1, true, 3},  {7, 3, 2, 1, 1, false, 4}, {7, 3, 2, 1, 1, true, 4},
      {5, 2, 2, 1, 1, true, 3},  // ceil gives 4, but window 4 would start at 5 = h + p: dropped
      {7, 3, 3, 1, 1, true, 3},  {8, 3, 3, 1, 1, true, 3},  // 8: the 4th window starts at 8 = h + p {9, 3, 1, 0, 2, false, 5},
      {9, 3, 2, 0, 2, true, 3},  {1, 1, 1, 0, 1, false, 1}, {4, 4, 3, 0, 1, true, 1},
  };
  for (const Row& r : rows) {
    INFO("H=" << r.h << " k=" << r.k << " s=" << r.s << " p=" << r.p << " d=" << r.d << " ceil=" << r.ceil);
    const tg::Tensor x = tg::zeros({1, 1, r.h, 3});
    const tg::Tensor y = tg::max_pool2d(x, {.kernel_size = {r.k, 1}, .stride = {{r.s, 1}}, .padding = {r.p, 0},
                                            .dilation = {r.d, 1}, .ceil_mode = r.ceil});
    CHECK(y.shape()[2] == r.expected);
    if (r.d == 1) {
      const tg::Tensor a = tg::avg_pool2d(x, {.kernel_size = {r.k, 1}, .stride = {{r.s, 1}}, .padding = {r.p, 0}, .ceil_mode = r.ceil});
      CHECK(a.shape()[2] == r.expected);
    }
  }
}

TEST_CASE("max_pool2d ties go to the first maximum in row-major window order", "[pool]") {
  // One 2x2 window per output, all four equal except where marked.
  tg::Tensor x = f64({1, 1, 3, 3,  //
                      1, 1, 3, 3,  //
                      2, 5, 5, 0,  //
                      5, 1, 0, 5},
                     {1, 1, 4, 4}).set_requires_grad(true);
  auto r = tg::max_pool2d_with_indices(x, {.kernel_size = {2, 2}});
  CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 2, 9, 10});
  r.values.backward(f64({1, 2, 3, 4}, {1, 1, 2, 2}));
  CHECK(x.grad().to_vector<double>() ==
        std::vector<double>{1, 0, 2, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0});
}

TEST_CASE("max_pool2d: an element winning overlapping windows receives the sum", "[pool]") {
  // 3x3 windows with stride 1 on a 4x4 plane whose maximum sits at (1, 1): it wins all four.
  std::vector<double> v(16, 0.0);
  for (std::size_t i = 0; i < 16; ++i) v[i] = -static_cast<double>(i);
  v[5] = 10;
  tg::Tensor x = f64(v, {1, 1, 4, 4}).set_requires_grad(true);
  tg::Tensor y = tg::max_pool2d(x, {.kernel_size = {3, 3}, .stride = {{1, 1}}});
  y.backward(f64({0.5, -1.5, 2.25, 4}, {1, 1, 2, 2}));
  const auto g = x.grad().to_vector<double>();
  CHECK(g[5] == 0.5 - 1.5 + 2.25 + 4);
  double others = 0;
  for (std::size_t i = 0; i < 16; ++i) others += i == 5 ? 0 : std::abs(g[i]);
  CHECK(others == 0);
}

TEST_CASE("max_pool2d with -inf, all-equal windows and NaN", "[pool]") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  SECTION("a window of -inf returns -inf and its first element") {
    auto r = tg::max_pool2d_with_indices(f64({-inf, -inf, -inf, -inf, 1, 2, 3, 4}, {1, 2, 2, 2}),
                                         {.kernel_size = {2, 2}});
    CHECK(r.values.at({0, 0, 0, 0}) == -inf);
    CHECK(r.indices.at({0, 0, 0, 0}) == 0);
    CHECK(r.indices.at({0, 1, 0, 0}) == 3);
  }
  SECTION("padding is never selected, even when every element is negative") {
    auto r = tg::max_pool2d_with_indices(f64({-3, -2, -5, -4}, {1, 1, 2, 2}),
                                         {.kernel_size = {2, 2}, .stride = {{1, 1}}, .padding = {1, 1}});
    CHECK(r.values.to_vector<double>() == std::vector<double>{-3, -2, -2, -3, -2, -2, -5, -4, -4});
  }
  SECTION("NaN wins; of two NaN the later one (PyTorch's rule)") {
    tg::Tensor x = f64({1, nan, 7, 2, nan, nan, 3, 4, 5, 6, 7, 8}, {1, 1, 3, 4}).set_requires_grad(true);
    auto r = tg::max_pool2d_with_indices(x, {.kernel_size = {2, 2}, .stride = {{1, 2}}});
    CHECK(std::isnan(r.values.at({0, 0, 0, 0})));
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{5, 2, 5, 11});
    r.values.backward(f64({1, 2, 3, 4}, {1, 1, 2, 2}));
    CHECK(x.grad().at({0, 0, 1, 1}) == 4);  // windows 0 and 2 both pick the NaN at (1, 1)
    CHECK(x.grad().at({0, 0, 0, 1}) == 0);  // the earlier NaNs get nothing
    CHECK(x.grad().at({0, 0, 1, 0}) == 0);
    CHECK(x.grad().at({0, 0, 0, 2}) == 2);
    CHECK(x.grad().at({0, 0, 2, 3}) == 4);
  }
}

TEST_CASE("max_pool2d and avg_pool2d VJPs match finite differences", "[pool][gradcheck]") {
  // Distinct values (a scrambled ramp) keep max_pool2d away from ties.
  auto distinct = [](const tg::Shape& s) {
    const std::int64_t n = s.numel();
    std::vector<double> v(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<double>((i * 53) % n) / static_cast<double>(n);
    return f64(v, s).set_requires_grad(true);
  };
  const tg::MaxPool2dOptions maxes[] = {
      {.kernel_size = {3, 2}, .stride = {{2, 1}}, .padding = {1, 1}, .dilation = {1, 2}},
      {.kernel_size = {3, 3}, .stride = {{2, 2}}, .padding = {1, 1}, .ceil_mode = true},
      {.kernel_size = {2, 3}, .stride = {{3, 2}}},
  };
  std::uint64_t seed = 50;
  for (const auto& opt : maxes) {
    tg::testing::check_vjp([opt](const auto& in) { return tg::max_pool2d(in[0], opt); },
                           {distinct({2, 2, 7, 8})}, seed++);
  }
  const tg::AvgPool2dOptions avgs[] = {
      {.kernel_size = {3, 2}, .stride = {{2, 1}}, .padding = {1, 1}},
      {.kernel_size = {3, 3}, .stride = {{2, 2}}, .padding = {1, 1}, .ceil_mode = true, .count_include_pad = false},
      {.kernel_size = {2, 3}, .stride = {{3, 2}}, .divisor_override = 7},
  };
  for (const auto& opt : avgs) {
    tg::testing::check_vjp([opt](const auto& in) { return tg::avg_pool2d(in[0], opt); },
                           {tg::testing::leaf({2, 2, 7, 8}, seed)}, seed + 1);
    tg::testing::check_f32_grads_match_f64([opt](const auto& in) { return tg::avg_pool2d(in[0], opt); },
                                           {tg::testing::leaf({2, 2, 7, 8}, seed)}, seed + 2);
    seed += 3;
  }
}

TEST_CASE("avg_pool2d divisors follow PyTorch", "[pool]") {
  const tg::Tensor x = tg::ones({1, 1, 3, 3}, tg::DType::f64);
  SECTION("count_include_pad counts padding: the corner window sums 4 ones over 9") {
    const tg::Tensor y = tg::avg_pool2d(x, {.kernel_size = {3, 3}, .stride = {{2, 2}}, .padding = {1, 1}});
    CHECK(y.at({0, 0, 0, 0}) == Approx(4.0 / 9.0));
  }
  SECTION("excluding padding, a window of ones averages to 1") {
    const tg::Tensor y = tg::avg_pool2d(x, {.kernel_size = {3, 3}, .stride = {{2, 2}}, .padding = {1, 1}, .count_include_pad = false});
    CHECK(y.to_vector<double>() == std::vector<double>{1, 1, 1, 1});
  }
  SECTION("a ceil_mode window past the padding does not count the part outside it") {
    // H = W = 4, k 3, s 2, p 1, ceil: windows start at -1, 1, 3; the last covers 3..5,
    // clipped to the padded input 3..4 (2 rows): divisor 2*2 = 4 at the corner, 1 element.
    const tg::Tensor y = tg::avg_pool2d(tg::ones({1, 1, 4, 4}, tg::DType::f64),
                                        {.kernel_size = {3, 3}, .stride = {{2, 2}}, .padding = {1, 1}, .ceil_mode = true});
    REQUIRE(y.shape() == tg::Shape{1, 1, 3, 3});
    CHECK(y.at({0, 0, 2, 2}) == Approx(1.0 / 4.0));
    CHECK(y.at({0, 0, 1, 1}) == Approx(1.0));
  }
  SECTION("divisor_override replaces the count") {
    const tg::Tensor y = tg::avg_pool2d(x, {.kernel_size = {2, 2}, .stride = {{1, 1}}, .divisor_override = 3});
    CHECK(y.to_vector<double>() == std::vector<double>{4.0 / 3, 4.0 / 3, 4.0 / 3, 4.0 / 3});
  }
}

TEST_CASE("pools reject bad input, naming the op and showing the arithmetic", "[pool][errors]") {
  const tg::Tensor x = tg::zeros({2, 3, 3, 5});
  CHECK_THROWS_AS(tg::max_pool2d(x, {.kernel_size = {4, 2}}), tg::ShapeError);
  CHECK_THROWS_WITH(tg::max_pool2d(x, {.kernel_size = {4, 2}}),
                    Contains("max_pool2d: output height would be 0") && Contains("H=3") && Contains("kernel=4"));
  CHECK_THROWS_WITH(tg::max_pool2d(x, {.kernel_size = {2, 2}, .padding = {2, 0}}),
                    Contains("max_pool2d") && Contains("half the kernel"));
  CHECK_THROWS_AS(tg::max_pool2d(x, {.kernel_size = {2, 2}, .stride = {{0, 1}}}), tg::ValueError);
  CHECK_THROWS_WITH(tg::max_pool2d(x, {.kernel_size = {2, 2}, .dilation = {1, 0}}), Contains("dilation=0"));
  CHECK_THROWS_WITH(tg::max_pool2d(x, {.kernel_size = {0, 2}}), Contains("kernel=0"));
  CHECK_THROWS_WITH(tg::max_pool2d(x, {.kernel_size = {2, 2}, .padding = {-1, 0}}), Contains("non-negative"));
  CHECK_THROWS_WITH(tg::max_pool2d(tg::zeros({3, 5}), {}), Contains("[3, 5]"));
  CHECK_THROWS_AS(tg::max_pool2d(tg::zeros({1, 1, 4, 4}, tg::DType::i64), {}), tg::DTypeError);
  CHECK_THROWS_AS(tg::avg_pool2d(tg::zeros({1, 1, 4, 4}, tg::DType::i64), {}), tg::DTypeError);
  CHECK_THROWS_WITH(tg::avg_pool2d(x, {.kernel_size = {2, 2}, .divisor_override = 0}), Contains("divisor_override"));
  CHECK_THROWS_WITH(tg::avg_pool2d(x, {.kernel_size = {3, 6}}), Contains("avg_pool2d: output width would be 0"));
}
