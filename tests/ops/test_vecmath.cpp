// ops/kernels/vecmath.hpp against libm in double: 2^20 random bit patterns per function and
// the special values, through a target_clones loop like the library's (so the clone this CPU
// picks, AVX2/FMA or baseline, is the one checked). tools/vecmath_accuracy.cpp checks all
// 2^32 inputs of both clones; this is its quick sample.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "ops/kernels/vecmath.hpp"

namespace vm = tapegrad::detail::vm;

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define VECMATH_TEST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define VECMATH_TEST_CLONES
#endif

template <class F>
VECMATH_TEST_CLONES void apply(const float* x, const float* y, float* out, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(x[i], y[i]);
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kMinNormal = std::numeric_limits<float>::min();

/// The error of y in ulp of the float binade of the exact result ref, or 1e9 for a wrong
/// special value (NaN, infinity, signed zero, a subnormal off by more than 1 subnormal ulp).
double ulp_error(float y, double ref) {
  const auto ref_f = float(ref);
  if (std::isnan(ref_f) || std::isnan(y)) return std::isnan(ref_f) && std::isnan(y) ? 0 : 1e9;
  if (std::isinf(ref_f)) return y == ref_f ? 0 : 1e9;
  if (ref == 0) return y == 0 && std::signbit(y) == std::signbit(ref_f) ? 0 : 1e9;
  if (std::fabs(ref_f) < kMinNormal)
    return std::fabs(double(y) - ref) <= 0x1p-149 + std::fabs(double(ref_f) - ref) ? 0 : 1e9;
  if (std::isinf(y)) return 1e9;
  const double ulp = std::ldexp(1.0, std::ilogb(ref_f) - 23);
  return std::fabs(double(y) - ref) / ulp;
}

struct Worst {
  double ulp = 0;
  float x = 0, y = 0, got = 0;
  double want = 0;
};

/// Runs f over (x[i], y[i]) and returns the worst error against ref.
template <class F, class Ref>
Worst worst_error(const std::vector<float>& x, const std::vector<float>& y, F f, Ref ref) {
  std::vector<float> out(x.size());
  apply(x.data(), y.data(), out.data(), std::int64_t(x.size()), f);
  Worst worst;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = ref(double(x[i]), double(y[i]));
    const double err = ulp_error(out[i], want);
    if (err > worst.ulp) worst = {err, x[i], y[i], out[i], want};
  }
  return worst;
}

std::vector<float> special_values() {
  std::vector<float> v = {0.0f, kMinNormal, 0x1p-149f, 0x1.8p-140f, 1e-30f, 1e-7f, 0.5f, 1.0f,
                          2.0f, 3.0f, 2.5f, 0x1.62e42ep+6f, 88.7f, 88.8f, 89.0f, 104.0f, 103.9f,
                          17.0f, 20.0f, 3.9f, 4.0f, 9.0f, 10.0f, 1e6f, 0x1p24f, 1e30f,
                          std::numeric_limits<float>::max(), kInf};
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  v.push_back(kNaN);
  v.push_back(-1.0f + 0x1p-24f);
  return v;
}

/// 2^20 random bit patterns (finite and not), then the special values.
std::vector<float> unary_inputs() {
  std::mt19937 rng(20240601);
  std::vector<float> x(std::size_t(1) << 20);
  for (float& v : x) v = std::bit_cast<float>(std::uint32_t(rng()));
  for (float v : special_values()) x.push_back(v);
  return x;
}

/// Checks f against ref (≤ `allowed` ulp: 2 unless the function's comment states another) on
/// random inputs and the special values, below `limit` (and finite beyond: no NaN).
template <class F, class Ref>
void check_unary(F f, Ref ref, float limit = kInf, double allowed = 2) {
  std::vector<float> x = unary_inputs();
  std::erase_if(x, [&](float v) { return std::isfinite(v) && !(std::fabs(v) < limit); });
  const std::vector<float> unused(x.size());
  const Worst worst = worst_error(x, unused, [f](float a, float) { return f(a); },
                                  [ref](double a, double) { return ref(a); });
  INFO("worst input " << worst.x << " (" << std::hexfloat << worst.x << "): got " << worst.got
                      << ", want " << worst.want << std::defaultfloat << ", " << worst.ulp << " ulp");
  CHECK(worst.ulp <= allowed);
}

}  // namespace

// clang-format off
TEST_CASE("vecmath exp", "[vecmath]")     { check_unary([](float x) { return vm::exp(x); }, [](double x) { return std::exp(x); }); }
TEST_CASE("vecmath expm1", "[vecmath]")   { check_unary([](float x) { return vm::expm1(x); }, [](double x) { return std::expm1(x); }); }
TEST_CASE("vecmath log", "[vecmath]")     { check_unary([](float x) { return vm::log(x); }, [](double x) { return std::log(x); }); }
TEST_CASE("vecmath log1p", "[vecmath]")   { check_unary([](float x) { return vm::log1p(x); }, [](double x) { return std::log1p(x); }); }
TEST_CASE("vecmath erf", "[vecmath]")     { check_unary([](float x) { return vm::erf(x); }, [](double x) { return std::erf(x); }); }
TEST_CASE("vecmath gelu", "[vecmath]")    { check_unary([](float x) { return vm::gelu(x); }, [](double x) { return x < vm::kGeluZeroBelow ? x * 0.0 : x * 0.5 * std::erfc(-x * M_SQRT1_2); }, kInf, 7.5); }
TEST_CASE("vecmath tanh", "[vecmath]")    { check_unary([](float x) { return vm::tanh(x); }, [](double x) { return std::tanh(x); }); }
TEST_CASE("vecmath sigmoid", "[vecmath]") { check_unary([](float x) { return vm::sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }); }
// clang-format on

/// Checks sin and cos (≤ 2 ulp) on random inputs below `bound` and next to the multiples of π/2
/// below it (where the reduction cancels most), NaN for ±inf and NaN, and (if finite_beyond)
/// no NaN for finite x beyond.
template <class Sin, class Cos>
void check_sin_cos(Sin sin, Cos cos, float bound, bool finite_beyond) {
  check_unary(sin, [](double x) { return std::sin(x); }, bound);
  check_unary(cos, [](double x) { return std::cos(x); }, bound);
  // k·π/2 up to the bound, densely below 2^11 and sparser above; and the float below 2^11
  // closest to a multiple of π/2.
  std::vector<float> near_multiples = {0x1.f9cbe2p+7f, -0x1.f9cbe2p+7f};
  const auto last = std::int64_t(double(bound) / 1.5707963267948966);
  for (std::int64_t k = -last; k <= last; k += std::abs(k) < 1400 ? 1 : 7 + std::abs(k) / 1000) {
    const auto v = float(double(k) * 1.5707963267948966);
    if (!(std::fabs(v) < bound)) continue;
    for (float w : {std::nextafter(v, -kInf), v, std::nextafter(v, kInf)})
      if (std::fabs(w) < bound) near_multiples.push_back(w);
  }
  const std::vector<float> unused(near_multiples.size());
  CHECK(worst_error(near_multiples, unused, [sin](float a, float) { return sin(a); },
                    [](double a, double) { return std::sin(a); }).ulp <= 2);
  CHECK(worst_error(near_multiples, unused, [cos](float a, float) { return cos(a); },
                    [](double a, double) { return std::cos(a); }).ulp <= 2);
  std::vector<float> beyond = {bound, -bound, std::nextafter(bound, kInf), 1e30f, -3e38f,
                               std::numeric_limits<float>::max()};
  std::vector<float> out(beyond.size());
  apply(beyond.data(), beyond.data(), out.data(), std::int64_t(beyond.size()),
        [sin, cos](float a, float) { return sin(a) + cos(a); });
  if (finite_beyond)
    for (float v : out) CHECK_FALSE(std::isnan(v));
  CHECK(std::isnan(sin(kInf)));
  CHECK(std::isnan(cos(-kInf)));
  CHECK(std::isnan(sin(kNaN)));
}

TEST_CASE("vecmath sin and cos below kTrigFastBelow", "[vecmath]") {
  check_sin_cos([](float x) { return vm::sin(x); }, [](float x) { return vm::cos(x); },
                vm::kTrigFastBelow, false);
  // Just below the bound, where q = round(x·2/π) is largest.
  std::vector<float> top;
  for (float v = std::nextafter(vm::kTrigFastBelow, 0.0f); top.size() < 4096; v = std::nextafter(v, 0.0f))
    top.insert(top.end(), {v, -v});
  const std::vector<float> unused(top.size());
  CHECK(worst_error(top, unused, [](float a, float) { return vm::sin(a); },
                    [](double a, double) { return std::sin(a); }).ulp <= 2);
  CHECK(worst_error(top, unused, [](float a, float) { return vm::cos(a); },
                    [](double a, double) { return std::cos(a); }).ulp <= 2);
}

TEST_CASE("vecmath gelu: dense in [-7, 7], -0 below kGeluZeroBelow, PyTorch's special values", "[vecmath]") {
  std::vector<float> x;
  for (float v = -7.0f; v <= 7.0f; v += 0x1p-12f) x.push_back(v);
  x.insert(x.end(), {vm::kGeluZeroBelow, std::nextafter(vm::kGeluZeroBelow, 0.0f), 1e-40f, -1e-40f});
  const std::vector<float> unused(x.size());
  const Worst worst = worst_error(x, unused, [](float a, float) { return vm::gelu(a); }, [](double a, double) {
    return a < vm::kGeluZeroBelow ? a * 0.0 : a * 0.5 * std::erfc(-a * M_SQRT1_2);
  });
  INFO("worst input " << std::hexfloat << worst.x << ": got " << worst.got << ", want " << worst.want);
  CHECK(worst.ulp <= 7.5);
  CHECK(std::signbit(vm::gelu(-0.0f)));
  CHECK(vm::gelu(-100.0f) == 0.0f);
  CHECK(vm::gelu(kInf) == kInf);
  CHECK(std::isnan(vm::gelu(-kInf)));  // -inf·0, as x·½·(1 + erf(x/√2))
  CHECK(std::isnan(vm::gelu(kNaN)));
}

TEST_CASE("vecmath gelu_grad: within 5.6 ulp of its terms' size to |x| = 13 and 10.9 beyond, PyTorch's special values",
          "[vecmath]") {
  std::vector<float> x = unary_inputs();
  for (float v = -16.0f; v <= 16.0f; v += 0x1p-10f) x.push_back(v);
  x.insert(x.end(), {vm::kGeluZeroBelow, std::nextafter(vm::kGeluZeroBelow, 0.0f), 14.5f, -14.5f, -0.75f});
  std::erase_if(x, [](float v) { return !std::isfinite(v); });
  std::vector<float> got(x.size());
  const std::vector<float> unused(x.size());
  apply(x.data(), unused.data(), got.data(), std::int64_t(x.size()), [](float a, float) { return vm::gelu_grad(a); });
  // The error in ulp of Φ(x) + |x|·φ(x): the sum Φ(x) + x·φ(x) cancels to 0 near x = -0.75.
  double worst_near = 0, worst_far = 0;
  float worst_x = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double a = x[i], cdf = 0.5 * std::erfc(-a * M_SQRT1_2), pdf = std::exp(-0.5 * a * a) / std::sqrt(2 * M_PI);
    const auto scale = float(cdf + std::fabs(a) * pdf);
    const double ulp = scale < kMinNormal ? 0x1p-149 : std::ldexp(1.0, std::ilogb(scale) - 23);
    const double err = std::fabs(double(got[i]) - (cdf + a * pdf)) / ulp;
    double& worst = std::fabs(a) < 13 ? worst_near : worst_far;
    if (err > worst) worst = err, worst_x = x[i];
  }
  INFO("worst input " << std::hexfloat << worst_x << std::defaultfloat << ": " << worst_near << " ulp to 13, "
                      << worst_far << " beyond");
  CHECK(worst_near <= 5.6);
  CHECK(worst_far <= 10.9);
  CHECK(vm::gelu_grad(0.0f) == 0.5f);
  CHECK(vm::gelu_grad(-0.0f) == 0.5f);
  CHECK(vm::gelu_grad(20.0f) == 1.0f);
  CHECK(vm::gelu_grad(-20.0f) == 0.0f);
  CHECK(std::isnan(vm::gelu_grad(kInf)));  // 1 + ∞·0, as Φ(x) + x·φ(x) in PyTorch
  CHECK(std::isnan(vm::gelu_grad(-kInf)));
  CHECK(std::isnan(vm::gelu_grad(kNaN)));
}

TEST_CASE("vecmath sin_wide and cos_wide below kTrigExactBelow, no NaN beyond", "[vecmath]") {
  check_sin_cos([](float x) { return vm::sin_wide(x); }, [](float x) { return vm::cos_wide(x); },
                vm::kTrigExactBelow, true);
}

TEST_CASE("vecmath pow: random positive x, results through the whole float range", "[vecmath]") {
  std::mt19937 rng(7);
  std::vector<float> x(std::size_t(1) << 20), y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = std::bit_cast<float>(std::uint32_t(rng()) % 0x7f800000u);  // positive, finite, not 0 only by chance
    const double target_log2 = std::uniform_real_distribution<double>(-160.0, 130.0)(rng);
    const double l = std::log2(double(x[i]));
    y[i] = l == 0 ? float(target_log2) : float(target_log2 / l);
  }
  const Worst worst = worst_error(x, y, [](float a, float b) { return vm::pow(a, b); },
                                  [](double a, double b) { return std::pow(a, b); });
  INFO("worst pow(" << std::hexfloat << worst.x << ", " << worst.y << "): got " << worst.got << ", want "
                    << worst.want << std::defaultfloat << ", " << worst.ulp << " ulp");
  CHECK(worst.ulp <= 2);
}

TEST_CASE("vecmath pow: special values as C's pow", "[vecmath]") {
  // Integers on both sides of 2^22, 2^23 and 2^24, odd and even, for the sign of x < 0.
  std::vector<float> values = {0.0f, 0.5f, 1.0f, 2.0f, 3.0f, 2.5f, 0x1p22f - 1, 0x1p22f + 1, 0x1p22f + 2,
                               0x1p22f + 0.5f, 0x1p23f - 1, 0x1p23f + 1, 0x1p23f + 2, 0x1p24f, 0x1p-149f,
                               1e30f, kInf};
  const std::size_t n = values.size();
  for (std::size_t i = 0; i < n; ++i) values.push_back(-values[i]);
  values.push_back(kNaN);
  std::vector<float> x, y;
  for (float a : values)
    for (float b : values) x.push_back(a), y.push_back(b);
  std::vector<float> out(x.size());
  apply(x.data(), y.data(), out.data(), std::int64_t(x.size()), [](float a, float b) { return vm::pow(a, b); });
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::pow(double(x[i]), double(y[i]));
    INFO("pow(" << std::hexfloat << x[i] << ", " << y[i] << ") = " << out[i] << ", C gives " << want);
    CHECK(ulp_error(out[i], want) <= 2);
  }
}
