#pragma once
// Numeric test helpers, header-only:
//   - compare / AllClose: element-wise comparison of two tensors with atol + rtol·|expected|,
//     reporting the worst element (multi-index, both values, the allowed error);
//   - check_vjp: an op's VJP against central finite differences in f64, projected on a
//     random upstream gradient c: analytic grad(<fn(x), c>) vs (<fn(x+h), c> - <fn(x-h), c>)/2h;
//   - check_f32_matches_f64: the f32 forward agrees with the f64 forward.
// Everything draws from private generators seeded by the caller, never the global one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tapegrad::testing {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// ---- building tensors ------------------------------------------------------------------------

inline Tensor f64(const std::vector<double>& values, const Shape& shape) {
  return from_vector(values, shape, DType::f64);
}

inline Tensor i64(const std::vector<std::int64_t>& values, const Shape& shape) {
  return from_vector(values, shape, DType::i64);
}

/// Uniform values in [low, high) from a private generator seeded with `seed`.
inline std::vector<double> random_values(std::size_t n, std::uint64_t seed, double low = -1.0,
                                         double high = 1.0) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(engine);
  return v;
}

/// A tensor of random_values.
inline Tensor random_tensor(const Shape& shape, std::uint64_t seed, double low = -1.0,
                            double high = 1.0, DType dtype = DType::f64,
                            bool requires_grad = false) {
  Tensor t = from_vector(random_values(static_cast<std::size_t>(shape.numel()), seed, low, high),
                         shape, dtype);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

/// An f64 leaf that requires grad, uniform in [low, high).
inline Tensor leaf(const Shape& shape, std::uint64_t seed, double low = -1.0, double high = 1.0) {
  return random_tensor(shape, seed, low, high, DType::f64, true);
}

/// Uniform magnitudes in [low, high) with random signs: values kept away from 0, for ops
/// with a kink (abs, relu) or a pole (division, negative powers) there.
inline Tensor random_signed(const Shape& shape, std::uint64_t seed, double low, double high,
                            bool requires_grad = true) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> magnitude(low, high);
  std::bernoulli_distribution negative(0.5);
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = negative(engine) ? -magnitude(engine) : magnitude(engine);
  Tensor t = from_vector(v, shape, DType::f64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

/// An upstream gradient: magnitudes in [0.5, 1.5) with random signs, so no entry is near 0
/// (which would hide a wrong gradient there) and no two entries are alike (as all ones are).
inline Tensor random_cotangent(const Shape& shape, DType dtype, std::uint64_t seed) {
  std::mt19937_64 engine(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<double> magnitude(0.5, 1.5);
  std::bernoulli_distribution negative(0.5);
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = negative(engine) ? -magnitude(engine) : magnitude(engine);
  return from_vector(v, shape, dtype);
}

/// A copy of t's values cut from any graph (a fresh leaf that does not require grad).
inline Tensor copy_values(const Tensor& t) {
  if (t.dtype() == DType::i64)
    return from_vector(t.to_vector<std::int64_t>(), t.shape(), DType::i64);
  return from_vector(t.to_vector<double>(), t.shape(), t.dtype());
}

// ---- printing --------------------------------------------------------------------------------

/// The multi-index "[1, 0, 2]" of flat index `flat` in a row-major `shape`.
inline std::string index_string(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  return fmt::format("[{}]", fmt::join(idx, ", "));
}

/// Full-precision text of a tensor (summarised past 64 elements), for failure messages.
inline std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  const auto v = t.to_vector<double>();
  const std::size_t shown = std::min<std::size_t>(v.size(), 64);
  std::vector<std::string> cells;
  for (std::size_t i = 0; i < shown; ++i) cells.push_back(fmt::format("{:.10g}", v[i]));
  if (shown < v.size()) cells.emplace_back("...");
  return fmt::format("{} {} {{{}}}", t.shape(), t.dtype(), fmt::join(cells, ", "));
}

// ---- element-wise comparison -------------------------------------------------------------------

/// True when |actual - expected| <= atol + rtol·|expected|; NaN matches only NaN and an
/// infinity only the same infinity.
inline bool close(double actual, double expected, double atol, double rtol) {
  if (std::isnan(actual) || std::isnan(expected)) return std::isnan(actual) && std::isnan(expected);
  if (std::isinf(actual) || std::isinf(expected)) return actual == expected;
  return std::abs(actual - expected) <= atol + rtol * std::abs(expected);
}

struct Comparison {
  bool ok = true;
  std::string report;  ///< empty when ok
};

/// Compares shape, dtype and values. On failure the report names the worst element (by
/// error relative to what is allowed) with its multi-index and both values.
inline Comparison compare(const Tensor& actual, const Tensor& expected, double atol, double rtol) {
  if (!actual.defined() || !expected.defined()) {
    return {actual.defined() == expected.defined(),
            fmt::format("actual is {}, expected is {}", describe(actual), describe(expected))};
  }
  if (actual.shape() != expected.shape() || actual.dtype() != expected.dtype()) {
    return {false, fmt::format("actual is {} {}, expected {} {}", actual.shape(), actual.dtype(),
                               expected.shape(), expected.dtype())};
  }
  const auto a = actual.to_vector<double>();
  const auto e = expected.to_vector<double>();
  std::int64_t bad = 0;
  std::int64_t worst = -1;
  double worst_ratio = -1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (close(a[i], e[i], atol, rtol)) continue;
    ++bad;
    const double allowed = atol + rtol * std::abs(e[i]);
    const double diff = std::abs(a[i] - e[i]);
    const double ratio =
        std::isfinite(diff) ? diff / allowed : std::numeric_limits<double>::infinity();
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = static_cast<std::int64_t>(i);
    }
  }
  if (bad == 0) return {};
  const auto w = static_cast<std::size_t>(worst);
  return {false,
          fmt::format("{} of {} elements differ; worst at {} (flat {}): actual {:.17g}, expected "
                      "{:.17g}, |diff| {:.3g} > allowed {:.3g} (atol {:g} + rtol {:g}·|expected|)"
                      "\n  actual:   {}\n  expected: {}",
                      bad, a.size(), index_string(actual.shape(), worst), worst, a[w], e[w],
                      std::abs(a[w] - e[w]), atol + rtol * std::abs(e[w]), atol, rtol,
                      describe(actual), describe(expected))};
}

/// Catch matcher: CHECK_THAT(actual, AllClose(expected, atol, rtol)).
class AllCloseMatcher : public Catch::MatcherBase<Tensor> {
 public:
  AllCloseMatcher(Tensor expected, double atol, double rtol)
      : expected_(std::move(expected)), atol_(atol), rtol_(rtol) {}
  bool match(const Tensor& actual) const override {
    const Comparison c = compare(actual, expected_, atol_, rtol_);
    report_ = c.report;
    return c.ok;
  }
  std::string describe() const override {
    return fmt::format("is close to {} (atol {:g}, rtol {:g}){}", testing::describe(expected_),
                       atol_, rtol_, report_.empty() ? "" : "\n  " + report_);
  }

 private:
  Tensor expected_;
  double atol_;
  double rtol_;
  mutable std::string report_;
};

/// Default tolerances suit f64 values computed two ways (summation order, libm).
inline AllCloseMatcher AllClose(const Tensor& expected, double atol = 1e-12, double rtol = 1e-12) {
  return {expected, atol, rtol};
}
/// Expected values given as a list, with their shape and dtype.
inline AllCloseMatcher AllClose(const std::vector<double>& expected, const Shape& shape,
                                DType dtype = DType::f64, double atol = 1e-12,
                                double rtol = 1e-12) {
  return {from_vector(expected, shape, dtype), atol, rtol};
}

// ---- VJP against finite differences ----------------------------------------------------------

struct VjpOptions {
  double eps = 1e-6;  ///< central-difference step
  double atol = 1e-7;
  double rtol = 1e-5;
  /// Also run out.backward(c) with every checked input's grad() pre-set to random values
  /// and check that backward added exactly the analytic gradient to them (dlib's poisoning).
  bool check_accumulation = true;
};

struct VjpInputResult {
  std::size_t input = 0;
  Comparison comparison;
};

struct VjpReport {
  bool ok = true;
  std::string setup_error;             ///< a misuse of check_vjp itself
  std::vector<VjpInputResult> inputs;  ///< one per checked input
  std::vector<VjpInputResult> accumulation;
};

/// <t, c> in double.
inline double project(const Tensor& t, const std::vector<double>& c) {
  const auto v = t.to_vector<double>();
  double acc = 0;
  for (std::size_t i = 0; i < v.size(); ++i) acc += v[i] * c[i];
  return acc;
}

/// The computation behind check_vjp, without assertions (so it can itself be tested).
/// Checks every input that requires grad; those must be f64. Other inputs (i64 targets,
/// constants) are passed through unchanged.
inline VjpReport vjp_report(const TensorFn& fn, const std::vector<Tensor>& inputs,
                            std::uint64_t seed, const VjpOptions& opts = {}) {
  VjpReport report;
  std::vector<std::size_t> checked;
  std::vector<Tensor> checked_inputs;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    if (inputs[i].dtype() != DType::f64) {
      report.ok = false;
      report.setup_error =
          fmt::format("input {} is {}; check_vjp differentiates f64 inputs", i, inputs[i].dtype());
      return report;
    }
    checked.push_back(i);
    checked_inputs.push_back(inputs[i]);
  }
  if (checked.empty()) {
    report.ok = false;
    report.setup_error = "no input requires grad: nothing to check";
    return report;
  }

  // Analytic: one reverse pass seeded with c.
  const Tensor out = fn(inputs);
  const Tensor c = random_cotangent(out.shape(), out.dtype(), seed);
  const auto c_values = c.to_vector<double>();
  std::vector<Tensor> analytic;
  if (out.requires_grad()) {
    analytic = grad({out}, checked_inputs, {c});
  } else {  // the output does not depend on any input that requires grad
    for (const Tensor& t : checked_inputs) analytic.push_back(zeros(t.shape(), t.dtype()));
  }

  // Numeric: central differences of <fn(x), c>, on private copies of the inputs.
  std::vector<Tensor> work;
  for (const Tensor& t : inputs)
    work.push_back(t.defined() && is_floating(t.dtype()) ? copy_values(t) : t);
  {
    NoGradGuard no_grad;
    for (std::size_t k = 0; k < checked.size(); ++k) {
      Tensor& x = work[checked[k]];
      double* p = x.data<double>();
      std::vector<double> numeric(static_cast<std::size_t>(x.numel()));
      for (std::int64_t e = 0; e < x.numel(); ++e) {
        const double v = p[e];
        const double up = v + opts.eps;
        const double down = v - opts.eps;
        p[e] = up;
        const double f_up = project(fn(work), c_values);
        p[e] = down;
        const double f_down = project(fn(work), c_values);
        p[e] = v;
        numeric[static_cast<std::size_t>(e)] = (f_up - f_down) / (up - down);
      }
      const Tensor expected = from_vector(numeric, x.shape(), DType::f64);
      VjpInputResult r{checked[k], compare(analytic[k], expected, opts.atol, opts.rtol)};
      if (!r.comparison.ok) {
        report.ok = false;
        r.comparison.report =
            fmt::format("gradient of input {} ({}), analytic vs numeric: {}", checked[k],
                        inputs[checked[k]].shape(), r.comparison.report);
      }
      report.inputs.push_back(std::move(r));
    }
  }

  // Accumulation: backward must add to gradients already present on leaves.
  const bool all_leaves = std::all_of(checked_inputs.begin(), checked_inputs.end(),
                                      [](const Tensor& t) { return t.is_leaf(); });
  if (opts.check_accumulation && all_leaves && out.requires_grad()) {
    std::vector<Tensor> previous, expected;
    for (std::size_t k = 0; k < checked_inputs.size(); ++k) {
      Tensor& t = checked_inputs[k];
      previous.push_back(t.grad());
      const Tensor poison = random_tensor(t.shape(), seed + 1000 + k, -1.0, 1.0, t.dtype());
      expected.push_back(from_vector(poison.to_vector<double>(), t.shape(), t.dtype()));
      {
        NoGradGuard no_grad;
        expected.back().add_(analytic[k]);
      }
      t.set_grad(poison);
    }
    fn(inputs).backward(c);
    for (std::size_t k = 0; k < checked_inputs.size(); ++k) {
      VjpInputResult r{checked[k], compare(checked_inputs[k].grad(), expected[k], 1e-12, 1e-12)};
      if (!r.comparison.ok) {
        report.ok = false;
        r.comparison.report = fmt::format(
            "grad() of input {} after backward onto a pre-set gradient G is not G + the "
            "gradient grad() returned: {}",
            checked[k], r.comparison.report);
      }
      report.accumulation.push_back(std::move(r));
      checked_inputs[k].set_grad(previous[k]);
    }
  }
  return report;
}

/// Asserts (with Catch) that fn's VJP matches finite differences for every input that
/// requires grad; the failure message names the worst element. Returns whether all passed.
inline bool check_vjp(const TensorFn& fn, const std::vector<Tensor>& inputs, std::uint64_t seed,
                      const VjpOptions& opts = {}) {
  const VjpReport report = vjp_report(fn, inputs, seed, opts);
  if (!report.setup_error.empty()) {
    FAIL_CHECK("check_vjp: " << report.setup_error);
    return false;
  }
  for (const auto* list : {&report.inputs, &report.accumulation}) {
    for (const VjpInputResult& r : *list) {
      INFO("check_vjp (seed " << seed << ", eps " << opts.eps << "): " << r.comparison.report);
      CHECK(r.comparison.ok);
    }
  }
  return report.ok;
}

/// The floating inputs converted to `dtype` (i64 inputs unchanged), as fresh leaves.
inline std::vector<Tensor> converted(const std::vector<Tensor>& inputs, DType dtype) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) {
    if (!t.defined() || !is_floating(t.dtype())) {
      out.push_back(t);
    } else {
      out.push_back(from_vector(t.to_vector<double>(), t.shape(), dtype));
    }
  }
  return out;
}

/// The floating inputs converted to `dtype` as fresh leaves that require grad exactly
/// where the originals did.
inline std::vector<Tensor> converted_leaves(const std::vector<Tensor>& inputs, DType dtype) {
  std::vector<Tensor> out = converted(inputs, dtype);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].defined() && inputs[i].requires_grad()) out[i].set_requires_grad(true);
  }
  return out;
}

/// The result of fn on f32 copies of the inputs has dtype f32 and matches fn on f64 copies
/// within f32 accuracy.
inline void check_f32_matches_f64(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                  double atol = 1e-5, double rtol = 1e-5) {
  NoGradGuard no_grad;
  const Tensor out64 = fn(converted(inputs, DType::f64));
  const Tensor out32 = fn(converted(inputs, DType::f32));
  CHECK(out64.dtype() == DType::f64);
  CHECK(out32.dtype() == DType::f32);
  CHECK_THAT(out32.to(DType::f64), AllClose(out64, atol, rtol));
}

/// The gradients computed in f32 (where f32 kernels such as the f32 GEMM run) match the
/// f64 gradients for one random upstream gradient, within f32 accuracy.
inline void check_f32_grads_match_f64(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                      std::uint64_t seed, double atol = 1e-4, double rtol = 1e-4) {
  const std::vector<Tensor> in64 = converted_leaves(inputs, DType::f64);
  const std::vector<Tensor> in32 = converted_leaves(inputs, DType::f32);
  std::vector<Tensor> x64, x32;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (in64[i].defined() && in64[i].requires_grad()) {
      x64.push_back(in64[i]);
      x32.push_back(in32[i]);
    }
  }
  REQUIRE_FALSE(x64.empty());
  const Tensor out64 = fn(in64);
  const Tensor out32 = fn(in32);
  const Tensor c = random_cotangent(out64.shape(), DType::f64, seed);
  const auto g64 = grad({out64}, x64, {c});
  const auto g32 = grad({out32}, x32, {c.to(DType::f32)});
  for (std::size_t k = 0; k < g64.size(); ++k) {
    INFO("gradient of checked input " << k);
    CHECK(g32[k].dtype() == DType::f32);
    CHECK_THAT(g32[k].to(DType::f64), AllClose(g64[k], atol, rtol));
  }
}

}  // namespace tapegrad::testing

namespace Catch {
template <>
struct StringMaker<tapegrad::Tensor> {
  static std::string convert(const tapegrad::Tensor& t) { return tapegrad::testing::describe(t); }
};
template <>
struct StringMaker<tapegrad::Shape> {
  static std::string convert(const tapegrad::Shape& s) { return tapegrad::to_string(s); }
};
template <>
struct StringMaker<tapegrad::DType> {
  static std::string convert(tapegrad::DType d) { return std::string(tapegrad::dtype_name(d)); }
};
}  // namespace Catch
