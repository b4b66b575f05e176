// Element-wise functions: neg, exp, log, sqrt, pow, abs, relu, sigmoid, tanh; sin and cos in
// f32 past their float kernels' range.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct UnaryCase {
  std::string name;
  TensorFn fn;
  /// Inputs are drawn with magnitudes in [low, high); `positive` drops the random sign.
  double low, high;
  bool positive;
};

TensorFn unary(Tensor (*f)(const Tensor&)) {
  return [f](const std::vector<Tensor>& in) { return f(in[0]); };
}
TensorFn power(double e) {
  return [e](const std::vector<Tensor>& in) { return tg::pow(in[0], e); };
}

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {"neg", unary(tg::neg), 0, 2, false},
      {"operator-", [](const auto& in) { return -in[0]; }, 0, 2, false},
      {"exp", unary(tg::exp), 0, 2, false},
      {"log", unary(tg::log), 0.2, 3, true},
      {"sqrt", unary(tg::sqrt), 0.2, 3, true},
      {"abs", unary(tg::abs), 0.1, 2, false},
      {"relu", unary(tg::relu), 0.1, 2, false},
      {"sigmoid", unary(tg::sigmoid), 0, 4, false},
      {"tanh", unary(tg::tanh), 0, 2, false},
      {"pow 2", power(2), 0.1, 2, false},
      {"pow 3", power(3), 0.1, 2, false},
      {"pow 1", power(1), 0.1, 2, false},
      {"pow 0", power(0), 0.1, 2, false},
      {"pow -1", power(-1), 0.5, 2, false},
      {"pow -2", power(-2), 0.5, 2, false},
      {"pow 0.5", power(0.5), 0.2, 3, true},
      {"pow 1.5", power(1.5), 0.2, 3, true},
      {"pow -1.5", power(-1.5), 0.5, 2, true},
  };
  return cases;
}

Tensor draw(const UnaryCase& c, const tg::Shape& shape, std::uint64_t seed) {
  return c.positive ? leaf(shape, seed, c.low, c.high) : random_signed(shape, seed, c.low, c.high);
}

/// grad of fn at x for the upstream gradient c.
Tensor grad_at(Tensor (*f)(const Tensor&), const Tensor& x, const Tensor& c) {
  Tensor xl = copy_values(x).set_requires_grad(true);
  return tg::grad({f(xl)}, {xl}, {c})[0];
}

}  // namespace

TEST_CASE("unary ops: forward on hand-computed values", "[ops][unary]") {
  const double e = std::exp(1.0);
  CHECK_THAT(tg::neg(f64({1, -2, 0, 3.5}, {2, 2})), AllClose({-1, 2, 0, -3.5}, {2, 2}));
  CHECK_THAT(tg::exp(f64({0, 1, -1, 2}, {4})), AllClose({1, e, 1 / e, e * e}, {4}));
  CHECK_THAT(tg::log(f64({1, e, 0, -1, 0.25}, {5})),
             AllClose({0, 1, -kInf, std::nan(""), -2 * std::log(2.0)}, {5}));
  CHECK_THAT(tg::sqrt(f64({4, 0.25, 0, 2}, {4})), AllClose({2, 0.5, 0, std::sqrt(2.0)}, {4}));
  CHECK_THAT(tg::abs(f64({-2, 0, 3, -0.5}, {4})), AllClose({2, 0, 3, 0.5}, {4}));
  CHECK_THAT(tg::relu(f64({-1, 0, 2, -0.0, 0.5}, {5})), AllClose({0, 0, 2, 0, 0.5}, {5}));
  CHECK_THAT(tg::tanh(f64({0, 0.5, -20, 1}, {4})),
             AllClose({0, std::tanh(0.5), -1, (e * e - 1) / (e * e + 1)}, {4}));
  CHECK_THAT(
      tg::sigmoid(f64({0, 2, -2, 1}, {4})),
      AllClose({0.5, 1 / (1 + std::exp(-2.0)), std::exp(-2.0) / (1 + std::exp(-2.0)), e / (1 + e)},
               {4}));
  SECTION("relu keeps NaN") {
    CHECK(std::isnan(tg::relu(f64({std::nan("")}, {1})).item<double>()));
  }
  SECTION("shape and dtype are kept, 0-dim included") {
    const Tensor s = tg::scalar_tensor(4, DType::f32);
    CHECK(tg::sqrt(s).shape() == tg::Shape{});
    CHECK(tg::sqrt(s).dtype() == DType::f32);
    CHECK(tg::sqrt(s).item<float>() == 2.0f);
  }
}

TEST_CASE("pow: integer, fractional, negative and zero exponents", "[ops][unary][pow]") {
  const Tensor x = f64({2, -3, 0.5, 4}, {2, 2});
  CHECK_THAT(tg::pow(x, 2), AllClose({4, 9, 0.25, 16}, {2, 2}));
  CHECK_THAT(tg::pow(x, 3), AllClose({8, -27, 0.125, 64}, {2, 2}));
  CHECK_THAT(tg::pow(x, -1), AllClose({0.5, -1.0 / 3, 2, 0.25}, {2, 2}));
  CHECK_THAT(tg::pow(x, -2), AllClose({0.25, 1.0 / 9, 4, 0.0625}, {2, 2}));
  CHECK_THAT(tg::pow(x, 1), AllClose({2, -3, 0.5, 4}, {2, 2}));
  SECTION("fractional exponents of positive numbers, nan for negative ones (as PyTorch)") {
    const Tensor r = tg::pow(x, 0.5);
    CHECK(r.at({0, 0}) == Approx(std::sqrt(2.0)).epsilon(1e-15));
    CHECK(std::isnan(r.at({0, 1})));
    CHECK(r.at({1, 1}) == 2.0);
    CHECK(tg::pow(f64({4}, {1}), -1.5).item<double>() == Approx(0.125).epsilon(1e-15));
    CHECK(tg::pow(f64({4}, {1}), 1.5).item<double>() == Approx(8).epsilon(1e-15));
  }
  SECTION("exponent 0 gives 1 everywhere and gradient 0 everywhere, 0 included") {
    const Tensor z = f64({0, -2, 3, 0.5}, {4}).set_requires_grad(true);
    const Tensor y = tg::pow(z, 0);
    CHECK_THAT(y, AllClose({1, 1, 1, 1}, {4}));
    const auto g = tg::grad({y}, {z}, {f64({0.3, -1.2, 0.7, 2.0}, {4})});
    CHECK_THAT(g[0], AllClose({0, 0, 0, 0}, {4}));
  }
  SECTION("gradient at 0: 2·0 for x², 1 for x¹, inf for x^0.5") {
    const Tensor c = f64({1.5}, {1});
    const Tensor z = f64({0}, {1}).set_requires_grad(true);
    CHECK(tg::grad({tg::pow(z, 2)}, {z}, {c})[0].item<double>() == 0.0);
    CHECK(tg::grad({tg::pow(z, 1)}, {z}, {c})[0].item<double>() == 1.5);
    CHECK(tg::grad({tg::pow(z, 0.5)}, {z}, {c})[0].item<double>() == kInf);
  }
  SECTION("gradient on hand-computed values: d(x^e) = e·x^(e-1)") {
    const Tensor c = f64({0.5, -2, 1, 3}, {2, 2});
    const Tensor xl = copy_values(x).set_requires_grad(true);
    CHECK_THAT(tg::grad({tg::pow(xl, 3)}, {xl}, {c})[0],
               AllClose({0.5 * 12, -2 * 27, 1 * 0.75, 3 * 48}, {2, 2}));
    CHECK_THAT(tg::grad({tg::pow(xl, -1)}, {xl}, {c})[0],
               AllClose({0.5 * -0.25, -2 * (-1.0 / 9), 1 * -4, 3 * -0.0625}, {2, 2}));
  }
}

TEST_CASE("abs and relu: gradient at the kink is 0 (PyTorch's rule)", "[ops][unary][kink]") {
  const Tensor x = f64({-2, 0, 3, -0.0, 1e-300}, {5});
  const Tensor c = f64({0.3, 0.7, 1.9, -1.1, 0.4}, {5});
  CHECK_THAT(grad_at(tg::relu, x, c), AllClose({0, 0, 1.9, 0, 0.4}, {5}, DType::f64, 0, 0));
  CHECK_THAT(grad_at(tg::abs, x, c), AllClose({-0.3, 0, 1.9, 0, 0.4}, {5}, DType::f64, 0, 0));
}

TEST_CASE("sigmoid and tanh: no overflow for |x| = 1000", "[ops][unary][stability]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    INFO(tg::dtype_name(dtype));
    const Tensor x =
        tg::from_vector(std::vector<double>{1000, -1000, 0, 88, -88, 710, -710}, {7}, dtype)
            .set_requires_grad(true);
    const Tensor s = tg::sigmoid(x);
    const auto v = s.to_vector<double>();
    CHECK(v[0] == 1.0);
    CHECK(v[1] == 0.0);
    CHECK(v[2] == 0.5);
    for (double value : v) CHECK(std::isfinite(value));
    const Tensor t = tg::tanh(x);
    CHECK_THAT(t.to(DType::f64).detach(),
               AllClose({1, -1, 0, 1, -1, 1, -1}, {7}, DType::f64, 1e-7, 0));
    // Gradients vanish at the extremes; they must not be nan (inf·0) or inf.
    const Tensor c = random_cotangent({7}, dtype, 3);
    const auto cv = c.to_vector<double>();
    const auto gs = tg::grad({s}, {x}, {c})[0].to_vector<double>();
    const auto gt = tg::grad({t}, {x}, {c})[0].to_vector<double>();
    CHECK(gs[0] == 0.0);
    CHECK(gs[1] == 0.0);
    CHECK(gs[2] == 0.25 * cv[2]);
    CHECK(gt[2] == cv[2]);
    for (double g : gs) CHECK(std::isfinite(g));
    for (double g : gt) CHECK(std::isfinite(g));
  }
}

TEST_CASE("unary ops: VJP matches finite differences", "[ops][unary][vjp]") {
  std::uint64_t seed = 1000;
  for (const auto& c : unary_cases()) {
    for (const tg::Shape& shape : {tg::Shape{2, 3, 5}, tg::Shape{}, tg::Shape{4, 1}}) {
      INFO(c.name << " on " << tg::to_string(shape));
      check_vjp(c.fn, {draw(c, shape, ++seed)}, ++seed);
    }
  }
}

TEST_CASE("unary ops: exact gradients on hand-computed values", "[ops][unary][vjp]") {
  const Tensor x = f64({0.5, -1, 2, 0.25}, {2, 2});
  const Tensor c = f64({1.5, -0.5, 2, -3}, {2, 2});
  const auto at = [&](double (*df)(double)) {
    const auto xv = x.to_vector<double>();
    const auto cv = c.to_vector<double>();
    std::vector<double> out;
    for (std::size_t i = 0; i < xv.size(); ++i) out.push_back(cv[i] * df(xv[i]));
    return AllClose(out, {2, 2}, DType::f64, 1e-14, 1e-14);
  };
  CHECK_THAT(grad_at(tg::neg, x, c), at([](double) { return -1.0; }));
  CHECK_THAT(grad_at(tg::exp, x, c), at([](double v) { return std::exp(v); }));
  CHECK_THAT(grad_at(tg::tanh, x, c), at([](double v) { return 1 - std::tanh(v) * std::tanh(v); }));
  CHECK_THAT(grad_at(tg::sigmoid, x, c), at([](double v) {
               const double s = 1 / (1 + std::exp(-v));
               return s * (1 - s);
             }));
  CHECK_THAT(grad_at(tg::abs, x, c), at([](double v) { return v > 0 ? 1.0 : -1.0; }));
  CHECK_THAT(grad_at(tg::relu, x, c), at([](double v) { return v > 0 ? 1.0 : 0.0; }));
  const Tensor p = tg::abs(x).detach();
  CHECK_THAT(grad_at(tg::log, p, c), AllClose({1.5 / 0.5, -0.5 / 1, 2 / 2.0, -3 / 0.25}, {2, 2}));
  CHECK_THAT(grad_at(tg::sqrt, p, c),
             AllClose({1.5 * 0.5 / std::sqrt(0.5), -0.5 * 0.5, 2 * 0.5 / std::sqrt(2.0), -3 * 1.0},
                      {2, 2}, DType::f64, 1e-14, 1e-14));
}

TEST_CASE("unary ops: f32 agrees with f64", "[ops][unary][f32]") {
  std::uint64_t seed = 2000;
  for (const auto& c : unary_cases()) {
    INFO(c.name);
    const Tensor x = draw(c, {3, 7}, ++seed);
    check_f32_matches_f64(c.fn, {x});
    check_f32_grads_match_f64(c.fn, {x}, ++seed);
  }
}

TEST_CASE("unary ops: integer inputs are refused", "[ops][unary][errors]") {
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3}, {3});
  for (const auto& c : unary_cases()) {
    INFO(c.name);
    REQUIRE_THROWS_AS(c.fn({n}), tg::DTypeError);
    REQUIRE_THROWS_WITH(c.fn({n}), Catch::Contains("i64"));
  }
  REQUIRE_THROWS_WITH(tg::exp(n), Catch::StartsWith("exp:") && Catch::Contains("[3]"));
  REQUIRE_THROWS_AS(tg::relu(Tensor()), tg::Error);
}

TEST_CASE("unary ops: tensors split across threads give the element-wise results", "[ops][unary][threads]") {
  // 300,000 elements: the loops run on all OpenMP threads (from 65,536 on).
  const Tensor x = random_tensor({3, 100, 1000}, 91, -2, 2, DType::f32, true);
  const Tensor seed = random_cotangent(x.shape(), DType::f32, 92);
  const Tensor y = tg::relu(x);
  const Tensor e = tg::exp(x);
  const auto grads = tg::grad({y, e}, {x}, {seed, seed});
  const auto xs = x.to_vector<float>(), ys = y.to_vector<float>(), es = e.to_vector<float>();
  const auto ss = seed.to_vector<float>(), gs = grads[0].to_vector<float>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    INFO("element " << i);
    REQUIRE(ys[i] == (xs[i] > 0 ? xs[i] : 0.0f));
    REQUIRE(es[i] == Approx(std::exp(xs[i])).epsilon(1e-6));  // a vectorised exp may round differently
    REQUIRE(gs[i] == Approx((xs[i] > 0 ? ss[i] : 0.0f) + ss[i] * es[i]).epsilon(1e-6).margin(1e-7));
  }
}

TEST_CASE("sin and cos: f32 blocks with arguments past the float reduction", "[ops][unary][f32]") {
  // Five blocks of 16,384 elements (the loops split from 65,536): block 1 has a few arguments
  // in [2^11, 2^26), which the double-reduced kernels recompute, block 3 also some at and
  // beyond 2^26, which libm recomputes; the others stay below 2^11, the float reduction's bound.
  constexpr std::int64_t kBlock = 16384;
  const Tensor small = random_tensor({5 * kBlock}, 93, -6, 6, DType::f32);
  std::vector<float> xs = small.to_vector<float>();
  const std::vector<float> past_fast = {0x1p11f, -0x1p11f, 2048.25f, -3000.5f, 1e5f, -7.5e6f,
                                        0x1.fffffep25f};
  const std::vector<float> past_wide = {0x1p26f, -0x1p26f, 1e9f, -3e20f, 3.4e38f, 0x1.fffffep10f,
                                        -1e7f, std::numeric_limits<float>::infinity(),
                                        -std::numeric_limits<float>::infinity(),
                                        std::numeric_limits<float>::quiet_NaN()};
  for (std::size_t k = 0; k < past_fast.size(); ++k) xs[std::size_t(kBlock) + 97 * k] = past_fast[k];
  for (std::size_t k = 0; k < past_wide.size(); ++k)
    xs[std::size_t(3 * kBlock) + 131 * k] = past_wide[k];
  xs[std::size_t(2 * kBlock) - 1] = 0x1.fffffep10f;  // just below 2^11: block 1 again
  const Tensor x = tg::from_vector(xs, {5 * kBlock}).set_requires_grad(true);
  const Tensor seed = random_cotangent(x.shape(), DType::f32, 94);
  const Tensor s = tg::sin(x), c = tg::cos(x);
  const auto grad_sin = tg::grad({s}, {x}, {seed})[0].to_vector<float>();
  const auto grad_cos = tg::grad({c}, {x}, {seed})[0].to_vector<float>();
  const auto sv = s.to_vector<float>(), cv = c.to_vector<float>();
  const auto seeds = seed.to_vector<float>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    INFO("element " << i << ", x = " << xs[i]);
    if (!std::isfinite(xs[i])) {
      REQUIRE((std::isnan(sv[i]) && std::isnan(cv[i]) && std::isnan(grad_sin[i]) && std::isnan(grad_cos[i])));
      continue;
    }
    const double sin_x = std::sin(double(xs[i])), cos_x = std::cos(double(xs[i]));
    // ≤ 2 ulp each; the gradient adds the rounding of its product.
    REQUIRE(sv[i] == Approx(sin_x).epsilon(2.5e-7).margin(1e-30));
    REQUIRE(cv[i] == Approx(cos_x).epsilon(2.5e-7).margin(1e-30));
    REQUIRE(grad_sin[i] == Approx(double(seeds[i]) * cos_x).epsilon(3.5e-7).margin(1e-30));
    REQUIRE(grad_cos[i] == Approx(-double(seeds[i]) * sin_x).epsilon(3.5e-7).margin(1e-30));
  }
}
