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
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "autograd/simd.hpp"
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

// The kernels over one contiguous run of n values. They are inlined into each op's loops over
// rows or channels, which are compiled for each x86-64 level (TAPEGRAD_MULTIVERSION,
// simd.hpp): at the library's baseline (SSE2) a double sum takes two lanes at a time. Sums
// accumulate in double, also for f32, in kSumLanes independent partial sums added up in a
// fixed order: the vector adds then overlap instead of waiting on one another, and every
// level adds up alike. A run's mean and variance take one pass (run_mean_var), from the
// deviations from its first value.

/// Partial sums per reduction: four AVX2 registers of doubles.
inline constexpr std::int64_t kSumLanes = 16;

/// {Σ f(i)[0], ..., Σ f(i)[K-1]} over i < n, f returning std::array<double, K>.
template <std::size_t K, class F>
[[gnu::always_inline]] inline std::array<double, K> lane_sums(std::int64_t n, F f) {
  double acc[K][kSumLanes] = {};
  std::int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    // Not unrolled: inside the kernels GCC unrolled the 16 lanes and its SLP cost model
    // then left them scalar (group_norm's backward sums); as a loop they are vectorised.
    // group_norm fwd+bwd [32, 64, 56, 56]: 7.9-8.2 -> 5.4-5.7 ms (1t), 3.8-4.0 -> 2.4-2.7 (2t).
#pragma GCC unroll 1
    for (std::int64_t j = 0; j < kSumLanes; ++j) {
      const std::array<double, K> t = f(i + j);
      for (std::size_t k = 0; k < K; ++k) acc[k][j] += t[k];
    }
  }
  for (std::int64_t j = 0; i < n; ++i, ++j) {
    const std::array<double, K> t = f(i);
    for (std::size_t k = 0; k < K; ++k) acc[k][j] += t[k];
  }
  std::array<double, K> total{};
  for (std::size_t k = 0; k < K; ++k) {
    for (std::int64_t j = 0; j < kSumLanes; ++j) total[k] += acc[k][j];
  }
  return total;
}

/// {mean, biased variance} of x[0..n), n ≥ 1, in one pass: d = x - x[0], Σ d and Σ d² in
/// double, var = E[d²] - E[d]². The one-pass E[x²] - E[x]² cancels without bound when |mean|
/// is large against the spread; here x[0] is one of the values, so (mean - x[0])² ≤ n·var,
/// E[d²] ≤ (n + 1)·var, and the subtraction loses at most log2(n + 1) of double's 53 bits.
/// (Two passes, the mean's and then the squared deviations', took 10-25 % longer for
/// layer_norm's rows of 512.)
template <class T>
inline std::array<double, 2> run_mean_var(const T* x, std::int64_t n) {
  const double x0 = static_cast<double>(x[0]);
  const auto [s, q] = lane_sums<2>(n, [x, x0](std::int64_t i) {
    const double d = static_cast<double>(x[i]) - x0;
    return std::array{d, d * d};
  });
  const double mean_d = s / static_cast<double>(n);
  return {x0 + mean_d, std::max(q / static_cast<double>(n) - mean_d * mean_d, 0.0)};
}

/// {Σ g[i], Σ g[i]·(x[i] - mean)}.
template <class T>
inline std::array<double, 2> run_sum_and_centered_dot(const T* g, const T* x, std::int64_t n, double mean) {
  return lane_sums<2>(n, [g, x, mean](std::int64_t i) {
    const double gi = static_cast<double>(g[i]);
    return std::array{gi, gi * (static_cast<double>(x[i]) - mean)};
  });
}

/// How a kernel writes its output: plain stores, streaming stores (an output of kStreamBytes
/// or more, simd.hpp), or added to what is there (a gradient being summed, OpContext::grad_sum).
enum class Store { plain, stream, add };
inline Store store_for(bool stream) { return stream ? Store::stream : Store::plain; }

/// out[i] = f(i) for i < n, or out[i] += f(i) (Store::add).
template <class T, class F>
[[gnu::always_inline]] inline void write_run(T* __restrict out, std::int64_t n, Store how, F f) {
  if (how == Store::stream) return stream_map(out, n, f);
  if (how == Store::add) {
    for (std::int64_t i = 0; i < n; ++i) out[i] += f(i);
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(i);
}

/// y[i] = (x[i] - mean)·scale + shift: a run with one weight and bias (a channel).
template <class T>
inline void run_normalize(const T* x, T* __restrict y, std::int64_t n, T mean, T scale, T shift, Store how) {
  write_run(y, n, how, [=](std::int64_t i) { return (x[i] - mean) * scale + shift; });
}

/// grad_x[i] = a·g[i] + k1·(x[i] - mean) + k0: a run of grad_x with one weight (a = rstd·w).
template <class T>
inline void run_grad_input(const T* g, const T* x, T* __restrict grad_x, std::int64_t n, T a, T mean,
                           T k1, T k0, Store how) {
  write_run(grad_x, n, how, [=](std::int64_t i) { return a * g[i] + k1 * (x[i] - mean) + k0; });
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
