// Exhaustive accuracy check of ops/kernels/vecmath.hpp: every one of the 2^32 float bit
// patterns through each unary function, in its AVX2/FMA version and in its baseline x86-64
// version (the two clones a TAPEGRAD_MULTIVERSION loop picks from), against libm in double
// rounded to float. pow, whose input space is 2^64, is checked over all positive x for a few
// y, random (x, y) pairs whose result is in range, and a grid of special values.
//
// Build and run (not part of the CMake build; both cores, a few minutes):
//   g++ -std=gnu++20 -O2 -fopenmp -fno-trapping-math -fno-math-errno -I. \
//       tools/vecmath_accuracy.cpp -o /tmp/vecmath_accuracy && /tmp/vecmath_accuracy [names...]
//
// Per function and version it prints the max error in ulp of the float result against the
// exact value (|y - ref| / ulp(ref), ulp of the float binade), the input where it occurs, how
// many inputs are off by more than 1 ulp, and the number of special-value failures: a NaN
// where libm gives none or the reverse, a wrong infinity or signed zero, a subnormal result
// off by more than one subnormal ulp, or (sin_wide, cos_wide) a NaN beyond kTrigExactBelow for
// finite x (sin and cos may give anything beyond kTrigFastBelow, where the caller recomputes).
// It exits non-zero if any error exceeds 2 ulp (gelu: 7.5, gelu_grad: 10.9 of its terms' size,
// see their comments) or any special value fails. gelu's reference is -0 (NaN for -inf) below kGeluZeroBelow, as the kernel documents.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/kernels/vecmath.hpp"

namespace vm = tapegrad::detail::vm;

namespace {

template <class F>
__attribute__((target("arch=x86-64-v3"), flatten, noinline)) void loop_v3(const float* x, float* y,
                                                                         std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
template <class F>
__attribute__((flatten, noinline)) void loop_baseline(const float* x, float* y, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

struct Stats {
  double max_ulp = 0;
  float worst_x = 0, worst_y = 0;  // worst_y: the second argument of pow
  std::uint64_t above_1ulp = 0, checked = 0, special_failures = 0;
  float first_failure_x = 0, first_failure_y = 0;

  void merge(const Stats& o) {
    if (o.max_ulp > max_ulp) max_ulp = o.max_ulp, worst_x = o.worst_x, worst_y = o.worst_y;
    if (special_failures == 0 && o.special_failures != 0)
      first_failure_x = o.first_failure_x, first_failure_y = o.first_failure_y;
    above_1ulp += o.above_1ulp, checked += o.checked, special_failures += o.special_failures;
  }
};

/// Checks one result y for input x (and second argument x2) against the double reference.
void check(Stats& s, float x, float x2, float y, double ref) {
  const float ref_f = float(ref);
  bool ok = true;
  if (std::isnan(ref_f) || std::isnan(y)) {
    ok = std::isnan(ref_f) && std::isnan(y);
  } else if (std::isinf(ref_f)) {
    ok = y == ref_f;
  } else if (ref == 0) {
    ok = y == 0 && std::signbit(y) == std::signbit(ref_f);
  } else if (std::fabs(ref_f) < std::numeric_limits<float>::min()) {
    ok = std::fabs(double(y) - ref) <= 0x1p-149 + std::fabs(double(ref_f) - ref);
  } else {
    const auto binade = std::bit_cast<float>(std::bit_cast<std::uint32_t>(ref_f) & 0x7f800000u);
    const double ulp = double(binade) * 0x1p-23;
    const double err = std::isinf(y) ? 1e9 : std::fabs(double(y) - ref) / ulp;
    ++s.checked;
    if (err > 1) ++s.above_1ulp;
    if (err > s.max_ulp) s.max_ulp = err, s.worst_x = x, s.worst_y = x2;
  }
  if (!ok) {
    if (s.special_failures == 0) s.first_failure_x = x, s.first_failure_y = x2;
    ++s.special_failures;
  }
}

/// check for a function whose error is measured against the size of its terms, `size`
/// (gelu_grad: Φ(x) + |x|·φ(x), as the sum Φ(x) + x·φ(x) cancels to 0 near x = -0.75): the
/// error in ulp of size's float binade, 2^-149 where size is subnormal; NaN and infinities as
/// check's.
void check_sized(Stats& s, float x, float y, double ref, double size) {
  if (std::isnan(ref) || std::isnan(y) || std::isinf(float(ref)) || std::isinf(y)) return check(s, x, 0, y, ref);
  const auto size_f = float(size);
  const auto binade = std::bit_cast<float>(std::bit_cast<std::uint32_t>(size_f) & 0x7f800000u);
  const double ulp = size_f < std::numeric_limits<float>::min() ? 0x1p-149 : double(binade) * 0x1p-23;
  const double err = std::fabs(double(y) - ref) / ulp;
  ++s.checked;
  if (err > 1) ++s.above_1ulp;
  if (err > s.max_ulp) s.max_ulp = err, s.worst_x = x, s.worst_y = 0;
}

bool report(const char* name, const char* version, const Stats& s, bool binary, double allowed = 2) {
  const bool pass = s.max_ulp <= allowed && s.special_failures == 0;
  std::printf("%-9s %-8s max %.3f ulp at x=%a", name, version, s.max_ulp, double(s.worst_x));
  if (binary) std::printf(" y=%a", double(s.worst_y));
  std::printf("  >1ulp: %llu of %llu  special failures: %llu", (unsigned long long)s.above_1ulp,
              (unsigned long long)s.checked, (unsigned long long)s.special_failures);
  if (s.special_failures != 0) {
    std::printf(" (first x=%a", double(s.first_failure_x));
    if (binary) std::printf(" y=%a", double(s.first_failure_y));
    std::printf(")");
  }
  std::printf("%s\n", pass ? "" : "  FAIL");
  std::fflush(stdout);
  return pass;
}

/// All 2^32 inputs; inputs with |x| ≥ limit are only checked not to give NaN for finite x (if
/// finite_beyond), ±inf and NaN as any. The max error allowed is 2 ulp unless the function's
/// comment states another (gelu, gelu_grad). With `size`, errors are measured against it
/// (check_sized).
template <class F, class Ref, class Size = std::nullptr_t>
bool exhaustive(const char* name, F f, Ref ref, float limit = std::numeric_limits<float>::infinity(),
                double allowed = 2, bool finite_beyond = true, Size size = nullptr) {
  constexpr std::int64_t kBlock = 1 << 16;
  Stats v3_total, base_total;
#pragma omp parallel
  {
    Stats v3, base;
    std::vector<float> x(kBlock), y3(kBlock), yb(kBlock);
#pragma omp for schedule(dynamic, 16)
    for (std::int64_t block = 0; block < (std::int64_t(1) << 32) / kBlock; ++block) {
      for (std::int64_t i = 0; i < kBlock; ++i)
        x[i] = std::bit_cast<float>(std::uint32_t(block * kBlock + i));
      loop_v3(x.data(), y3.data(), kBlock, f);
      loop_baseline(x.data(), yb.data(), kBlock, f);
      for (std::int64_t i = 0; i < kBlock; ++i) {
        if (!(std::fabs(x[i]) < limit)) {
          if (std::isfinite(x[i])) {
            for (auto [s, y] : {std::pair{&v3, y3[i]}, std::pair{&base, yb[i]}})
              if (finite_beyond && std::isnan(y)) {
                if (s->special_failures == 0) s->first_failure_x = x[i];
                ++s->special_failures;
              }
            continue;
          }
        }
        const double r = ref(double(x[i]));
        if constexpr (std::is_same_v<Size, std::nullptr_t>) {
          check(v3, x[i], 0, y3[i], r);
          check(base, x[i], 0, yb[i], r);
        } else {
          const double sz = size(double(x[i]));
          check_sized(v3, x[i], y3[i], r, sz);
          check_sized(base, x[i], yb[i], r, sz);
        }
      }
    }
#pragma omp critical
    v3_total.merge(v3), base_total.merge(base);
  }
  const bool a = report(name, "avx2", v3_total, false, allowed);
  const bool b = report(name, "baseline", base_total, false, allowed);
  return a && b;
}

/// pow over pairs (x[i], y[i]).
struct PowPairs {
  std::vector<float> x, y;
};
void pow_check(Stats& v3, Stats& base, const float* x, const float* y, std::int64_t n,
               std::vector<float>& out3, std::vector<float>& outb) {
  // Pack the pair into the loop's one input: pow's vectorised loop reads both arrays.
  struct Pow {
    const float* ys;
    const float* xs;
    float operator()(const float& xi) const { return vm::pow(xi, ys[&xi - xs]); }
  };
  loop_v3(x, out3.data(), n, Pow{y, x});
  loop_baseline(x, outb.data(), n, Pow{y, x});
  for (std::int64_t i = 0; i < n; ++i) {
    const double r = std::pow(double(x[i]), double(y[i]));
    check(v3, x[i], y[i], out3[i], r);
    check(base, x[i], y[i], outb[i], r);
  }
}

bool pow_tests() {
  bool pass = true;
  constexpr std::int64_t kBlock = 1 << 16;
  // All positive x, including +0, subnormals and +inf, for a few y.
  for (float yv : {0.5f, -1.0f, 2.5f, 1.0f / 3.0f}) {
    Stats v3_total, base_total;
#pragma omp parallel
    {
      Stats v3, base;
      std::vector<float> x(kBlock), y(kBlock, yv), o3(kBlock), ob(kBlock);
#pragma omp for schedule(dynamic, 16)
      for (std::int64_t block = 0; block < (std::int64_t(1) << 31) / kBlock; ++block) {
        for (std::int64_t i = 0; i < kBlock; ++i)
          x[i] = std::bit_cast<float>(std::uint32_t(block * kBlock + i));
        pow_check(v3, base, x.data(), y.data(), kBlock, o3, ob);
      }
#pragma omp critical
      v3_total.merge(v3), base_total.merge(base);
    }
    const std::string name = "pow(x," + std::to_string(yv).substr(0, 6) + ")";
    pass &= report(name.c_str(), "avx2", v3_total, true);
    pass &= report(name.c_str(), "baseline", base_total, true);
  }
  // Random positive finite x and y with y·log2(x) in [-160, 130]: results from 0 through the
  // subnormals to +inf; and random bit patterns of both signs for the special cases.
  {
    Stats v3_total, base_total;
#pragma omp parallel
    {
      Stats v3, base;
      std::vector<float> x(kBlock), y(kBlock), o3(kBlock), ob(kBlock);
#pragma omp for schedule(dynamic, 4)
      for (std::int64_t block = 0; block < 2048; ++block) {
        std::mt19937_64 rng(block);
        for (std::int64_t i = 0; i < kBlock; ++i) {
          const auto u = std::uint32_t(rng());
          if (i % 4 == 0) {  // any bit patterns
            x[i] = std::bit_cast<float>(u);
            y[i] = std::bit_cast<float>(std::uint32_t(rng()));
          } else {
            x[i] = std::bit_cast<float>(u % 0x7f800000u);
            const double t = -160.0 + 290.0 * double(rng() >> 11) * 0x1p-53;
            const double l = std::log2(double(x[i]));
            y[i] = l == 0 ? float(t) : float(t / l);
          }
        }
        pow_check(v3, base, x.data(), y.data(), kBlock, o3, ob);
      }
#pragma omp critical
      v3_total.merge(v3), base_total.merge(base);
    }
    pass &= report("pow rand", "avx2", v3_total, true);
    pass &= report("pow rand", "baseline", base_total, true);
  }
  // Special values against C's pow, all pairs.
  {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> values = {0.0f, 1.0f, 0.5f, 2.0f, 3.0f, 2.5f, 0x1p23f + 1, 0x1p24f, 1e30f,
                                 0x1p-149f, 0x1.8p-130f, inf, 1.0f / 3, 7.0f, 0x1.fffffep127f};
    const std::size_t n = values.size();
    for (std::size_t i = 0; i < n; ++i) values.push_back(-values[i]);
    values.push_back(nan);
    std::vector<float> x, y;
    for (float a : values)
      for (float b : values) x.push_back(a), y.push_back(b);
    std::vector<float> o3(x.size()), ob(x.size());
    Stats v3, base;
    pow_check(v3, base, x.data(), y.data(), std::int64_t(x.size()), o3, ob);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float r = float(std::pow(double(x[i]), double(y[i])));
      for (float o : {o3[i], ob[i]})
        if (!(std::isnan(r) ? std::isnan(o) : (std::bit_cast<std::uint32_t>(o) == std::bit_cast<std::uint32_t>(r) ||
                                               std::fabs(o - r) <= 2 * std::fabs(r) * 0x1p-23f)))
          std::printf("pow special mismatch: pow(%a, %a) = %a, C gives %a\n", double(x[i]), double(y[i]),
                      double(o), double(r)), pass = false;
    }
    pass &= report("pow spec", "avx2", v3, true);
    pass &= report("pow spec", "baseline", base, true);
  }
  return pass;
}

}  // namespace

int main(int argc, char** argv) {
  auto wanted = [&](const char* name) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], name) == 0) return true;
    return false;
  };
  bool pass = true;
  // clang-format off
  if (wanted("exp"))     pass &= exhaustive("exp",     [](float x) { return vm::exp(x); },     [](double x) { return std::exp(x); });
  if (wanted("expm1"))   pass &= exhaustive("expm1",   [](float x) { return vm::expm1(x); },   [](double x) { return std::expm1(x); });
  if (wanted("log"))     pass &= exhaustive("log",     [](float x) { return vm::log(x); },     [](double x) { return std::log(x); });
  if (wanted("log1p"))   pass &= exhaustive("log1p",   [](float x) { return vm::log1p(x); },   [](double x) { return std::log1p(x); });
  if (wanted("sin"))     pass &= exhaustive("sin",     [](float x) { return vm::sin(x); },     [](double x) { return std::sin(x); }, vm::kTrigFastBelow, 2, false);
  if (wanted("cos"))     pass &= exhaustive("cos",     [](float x) { return vm::cos(x); },     [](double x) { return std::cos(x); }, vm::kTrigFastBelow, 2, false);
  if (wanted("sin_wide")) pass &= exhaustive("sin_wide", [](float x) { return vm::sin_wide(x); }, [](double x) { return std::sin(x); }, vm::kTrigExactBelow);
  if (wanted("cos_wide")) pass &= exhaustive("cos_wide", [](float x) { return vm::cos_wide(x); }, [](double x) { return std::cos(x); }, vm::kTrigExactBelow);
  if (wanted("erf"))     pass &= exhaustive("erf",     [](float x) { return vm::erf(x); },     [](double x) { return std::erf(x); });
  if (wanted("gelu"))    pass &= exhaustive("gelu",    [](float x) { return vm::gelu(x); },    [](double x) { return x < vm::kGeluZeroBelow ? x * 0.0 : x * 0.5 * std::erfc(-x * M_SQRT1_2); }, std::numeric_limits<float>::infinity(), 7.5);
  if (wanted("gelu_grad")) pass &= exhaustive("gelu_grad", [](float x) { return vm::gelu_grad(x); }, [](double x) { return 0.5 * std::erfc(-x * M_SQRT1_2) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); }, std::numeric_limits<float>::infinity(), 10.9, true, [](double x) { return 0.5 * std::erfc(-x * M_SQRT1_2) + std::fabs(x) * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); });
  if (wanted("tanh"))    pass &= exhaustive("tanh",    [](float x) { return vm::tanh(x); },    [](double x) { return std::tanh(x); });
  if (wanted("sigmoid")) pass &= exhaustive("sigmoid", [](float x) { return vm::sigmoid(x); }, [](double x) { return 1.0 / (1.0 + std::exp(-x)); });
  if (wanted("pow"))     pass &= pow_tests();
  // clang-format on
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
