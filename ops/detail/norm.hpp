#pragma once
// What the normalisation ops (ops/batch_norm.cpp, ops/layer_norm.cpp, ops/group_norm.cpp)
// share: the argument check of their affine parameters, the kernels over one contiguous run
// of a normalised row (sums in double, element-wise loops), and the recorded (create_graph)
// form of their VJP.
//
// Each op normalises rows of M values: xhat = (x - mean)·rstd, rstd = 1/sqrt(var + eps) with
// the biased variance, then y = xhat·w + b. With gw = grad_out·w, S1 = Σ gw and
// S2 = Σ gw·(x - mean) over the row, the chain rule through x, mean and var gives
//   grad_x = rstd·(gw - S1/M - xhat·rstd·S2/M) = rstd·gw + k1·(x - mean) + k0,
//   k1 = -rstd³·S2/M,  k0 = -rstd·S1/M,
// and with the statistics held constant (batch_norm in eval) grad_x = rstd·gw.
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ops/detail/elementwise.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad::detail {

/// Throws unless an affine parameter (or running statistic) `t`, when defined, has shape
/// `expected` and x's dtype; `meaning` says where `expected` comes from.
inline void check_norm_parameter(std::string_view op, std::string_view what, const Tensor& t,
                                 const Tensor& x, const Shape& expected, std::string_view meaning) {
  if (!t.defined()) return;
  if (t.shape() != expected) {
    throw ShapeError(fmt::format("{}: {} must be {} ({}), got {}", op, what, expected, meaning,
                                 t.shape()));
  }
  if (t.dtype() != x.dtype()) {
    throw DTypeError(fmt::format("{}: {} is {} {} but input is {} {}; convert with .to()", op,
                                 what, t.dtype(), t.shape(), x.dtype(), x.shape()));
  }
}

/// Throws ValueError unless eps is finite and >= 0.
inline void check_norm_eps(std::string_view op, double eps) {
  if (!(eps >= 0.0 && std::isfinite(eps))) {
    throw ValueError(fmt::format("{}: eps must be finite and >= 0, got {}", op, eps));
  }
}

// The sums accumulate in double, also for f32; `omp simd reduction` allows the compiler to
// reorder the additions, which is what lets them vectorise. The mean and the squared
// deviations take two passes over a run that is still in cache: the one-pass
// E[x²] - E[x]² cancels badly when |mean| is large against the spread.

/// Σ x[i], i < n.
template <class T>
double run_sum(const T* x, std::int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

/// Σ (x[i] - mean)².
template <class T>
double run_squared_deviation(const T* x, std::int64_t n, double mean) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    s += d * d;
  }
  return s;
}

/// Σ g[i]·(x[i] - mean).
template <class T>
double run_centered_dot(const T* g, const T* x, std::int64_t n, double mean) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) {
    s += static_cast<double>(g[i]) * (static_cast<double>(x[i]) - mean);
  }
  return s;
}

/// y[i] = (x[i] - mean)·scale + shift: a run with one weight and bias (a channel).
template <class T>
void run_normalize(const T* x, T* y, std::int64_t n, T mean, T scale, T shift) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * scale + shift;
}

/// grad_x[i] = a·g[i] + k1·(x[i] - mean) + k0: a run of grad_x with one weight (a = rstd·w).
template <class T>
void run_grad_input(const T* g, const T* x, T* grad_x, std::int64_t n, T a, T mean, T k1, T k0) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) grad_x[i] = a * g[i] + k1 * (x[i] - mean) + k0;
}

/// The statistics of a normalisation over `dims` (keepdim shapes), recomputed from x as
/// recorded ops for a VJP recorded under create_graph: how mean and var depend on x is part
/// of the second derivative.
struct RecordedNormStats {
  Tensor xhat, rstd;
};

inline RecordedNormStats recorded_norm_stats(const Tensor& x, const std::vector<std::int64_t>& dims,
                                             double eps) {
  const Tensor centered = x - mean(x, dims, true);
  const Tensor rstd = pow(mean(centered * centered, dims, true) + eps, -0.5);
  return {centered * rstd, rstd};
}

/// grad_x as recorded ops, for gw = grad_out·w: rstd·(gw - mean(gw) - xhat·mean(gw·xhat)).
inline Tensor recorded_norm_grad_input(const RecordedNormStats& s, const Tensor& gw,
                                       const std::vector<std::int64_t>& dims) {
  return s.rstd * (gw - mean(gw, dims, true) - s.xhat * mean(gw * s.xhat, dims, true));
}

}  // namespace tapegrad::detail
