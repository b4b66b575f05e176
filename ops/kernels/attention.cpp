// Blocked attention (see attention.hpp). Per batch entry, queries go in blocks of
// kQueryBlock rows and keys in blocks of kKeyBlock; a block's scores s = q·kᵀ·scale (one GEMM)
// get the mask and the causal rule, then:
//   forward (online softmax): per row, m = running max, l = running Σ exp(s - m), and the
//     output accumulates exp(s - m)·v; a new block with a larger max rescales l and the
//     accumulator by exp(m_old - m_new). At the end out = acc/l and lse = m + log l.
//   backward: P = exp(s - lse) recomputed per block, D = rowsum(dO∘O), then
//     dV += Pᵀ·dO, dP = dO·vᵀ, dS = P∘(dP - D), dQ += dS·k·scale, dK += dSᵀ·q·scale,
//     with dS = 0 where a bool mask or the causal rule masked the score (as the composite's
//     masked_fill: a fully masked row, all NaN in P, then gives NaN only to out and dV).
// Only q, k, v, out and lse are read: the memory beyond the inputs' gradients is a few
// blocks per thread. Blocks whose keys all lie after their queries (causal) are skipped.
#include "ops/kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/detail/math.hpp"
#include "ops/kernels/gemm.hpp"
#include "ops/kernels/simd.hpp"

namespace tapegrad::detail {
namespace {

constexpr std::int64_t kQueryBlock = 64;
constexpr std::int64_t kKeyBlock = 256;

/// Lanes of the partial sums and maxima below: the loops vectorise (a single running sum or
/// maximum is a serial chain the compiler may not reorder), in a fixed order.
constexpr std::int64_t kLanes = 8;

/// s[j] = exp(s[j] - shift) for j < n; returns their sum (exp(-inf) = 0 for masked keys).
template <class T>
TAPEGRAD_MULTIVERSION T exp_shifted(T* s, std::int64_t n, T shift) {
  for (std::int64_t j = 0; j < n; ++j) s[j] = num::exp(s[j] - shift);
  T sums[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (std::int64_t l = 0; l < kLanes; ++l) sums[l] += s[j + l];
  }
  for (; j < n; ++j) sums[0] += s[j];
  T total = 0;
  for (T v : sums) total += v;
  return total;
}

/// max(init, s[0], ..., s[n-1]), NaN scores skipped (exp carries them into the row's sum).
template <class T>
TAPEGRAD_MULTIVERSION T row_max(const T* s, std::int64_t n, T init) {
  T maxima[kLanes];
  for (T& m : maxima) m = init;
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (std::int64_t l = 0; l < kLanes; ++l) maxima[l] = maxima[l] < s[j + l] ? s[j + l] : maxima[l];
  }
  for (; j < n; ++j) maxima[0] = maxima[0] < s[j] ? s[j] : maxima[0];
  T m = init;
  for (T v : maxima) m = m < v ? v : m;
  return m;
}

/// ds[j] = p[j]·(ds[j] - d) for j < n.
template <class T>
TAPEGRAD_MULTIVERSION void softmax_grad_row(const T* p, T* ds, std::int64_t n, T d) {
  for (std::int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - d);
}

/// t [cols, rows] = mᵀ for m [rows, cols] (contiguous). The blocks of k and v go through it
/// so that every product with them is a plain (N, N) GEMM: the GEMM library takes far longer
/// over a transposed 64 × 32 operand in this loop (21 against 62 GFLOP/s measured in
/// MultiheadAttention at L = 64) than the copy costs.
template <class T>
void transpose_block(const T* m, std::int64_t rows, std::int64_t cols, T* t) {
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) t[c * rows + r] = m[r * cols + c];
  }
}

/// The scores of queries [i0, i0 + bq) against keys [j0, j0 + bk) of batch entry b, masked,
/// into s [bq, bk]; k_t = those keys transposed, [E, bk].
template <class T>
void score_block(const AttentionGeometry& g, const AttentionMask& mask, std::int64_t b,
                 const T* q, const T* k_t, std::int64_t i0, std::int64_t bq, std::int64_t j0,
                 std::int64_t bk, T* s) {
  gemm(false, false, bq, bk, g.E, static_cast<T>(g.scale), q + i0 * g.E, g.E, k_t, bk, T(0), s, bk);
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  if (mask.kind == AttentionMask::Kind::boolean) {
    const bool* m = static_cast<const bool*>(mask.data) + mask.offsets[static_cast<std::size_t>(b)];
    for (std::int64_t i = 0; i < bq; ++i) {
      const bool* row = m + (i0 + i) * mask.row_stride + j0 * mask.col_stride;
      for (std::int64_t j = 0; j < bk; ++j) {
        if (!row[j * mask.col_stride]) s[i * bk + j] = minus_inf;
      }
    }
  } else if (mask.kind == AttentionMask::Kind::additive) {
    const T* m = static_cast<const T*>(mask.data) + mask.offsets[static_cast<std::size_t>(b)];
    for (std::int64_t i = 0; i < bq; ++i) {
      const T* row = m + (i0 + i) * mask.row_stride + j0 * mask.col_stride;
      for (std::int64_t j = 0; j < bk; ++j) s[i * bk + j] += row[j * mask.col_stride];
    }
  }
  if (g.causal) {
    for (std::int64_t i = 0; i < bq; ++i) {
      for (std::int64_t j = std::max<std::int64_t>(0, i0 + i + 1 - j0); j < bk; ++j) {
        s[i * bk + j] = minus_inf;
      }
    }
  }
}

/// ds = 0 where the bool mask or the causal rule masked the score: there the composite's
/// masked_fill passes no gradient back, not even a fully masked row's NaN.
template <class T>
void zero_masked(const AttentionGeometry& g, const AttentionMask& mask, std::int64_t b,
                 std::int64_t i0, std::int64_t bq, std::int64_t j0, std::int64_t bk, T* ds) {
  if (mask.kind == AttentionMask::Kind::boolean) {
    const bool* m = static_cast<const bool*>(mask.data) + mask.offsets[static_cast<std::size_t>(b)];
    for (std::int64_t i = 0; i < bq; ++i) {
      const bool* row = m + (i0 + i) * mask.row_stride + j0 * mask.col_stride;
      for (std::int64_t j = 0; j < bk; ++j) {
        if (!row[j * mask.col_stride]) ds[i * bk + j] = T(0);
      }
    }
  }
  if (g.causal) {
    for (std::int64_t i = 0; i < bq; ++i) {
      for (std::int64_t j = std::max<std::int64_t>(0, i0 + i + 1 - j0); j < bk; ++j) ds[i * bk + j] = T(0);
    }
  }
}

/// Whether every key of the block lies after every query of it (causal: all masked).
bool skipped(const AttentionGeometry& g, std::int64_t i0, std::int64_t bq, std::int64_t j0) {
  return g.causal && j0 > i0 + bq - 1;
}

}  // namespace

template <class T>
void attention_forward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                       const T* k, const T* v, T* out, T* lse) {
  const std::int64_t q_blocks = (g.L + kQueryBlock - 1) / kQueryBlock;
  const std::int64_t tasks = g.batch * q_blocks;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel if (tasks > 1 && g.batch * g.L * g.S >= (std::int64_t{1} << 14))
  {
    std::vector<T> s(static_cast<std::size_t>(kQueryBlock * std::min(kKeyBlock, g.S)));
    std::vector<T> k_t(static_cast<std::size_t>(g.E * std::min(kKeyBlock, g.S)));
    std::vector<T> m(kQueryBlock), l(kQueryBlock);
#pragma omp for schedule(static)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t b = task / q_blocks, i0 = (task % q_blocks) * kQueryBlock;
      const std::int64_t bq = std::min(kQueryBlock, g.L - i0);
      const T* qb = q + b * g.L * g.E;
      const T* kb = k + b * g.S * g.E;
      const T* vb = v + b * g.S * g.Ev;
      T* acc = out + (b * g.L + i0) * g.Ev;
      std::fill(acc, acc + bq * g.Ev, T(0));
      std::fill(m.begin(), m.end(), minus_inf);
      std::fill(l.begin(), l.end(), T(0));
      for (std::int64_t j0 = 0; j0 < g.S && !skipped(g, i0, bq, j0); j0 += kKeyBlock) {
        const std::int64_t bk = std::min(kKeyBlock, g.S - j0);
        transpose_block(kb + j0 * g.E, bk, g.E, k_t.data());
        score_block(g, mask, b, qb, k_t.data(), i0, bq, j0, bk, s.data());
        for (std::int64_t i = 0; i < bq; ++i) {
          T* row = s.data() + i * bk;
          const T new_m = row_max(row, bk, m[static_cast<std::size_t>(i)]);
          if (new_m == minus_inf) {  // every key so far masked: nothing to add
            std::fill(row, row + bk, T(0));
            continue;
          }
          const T correction = num::exp(m[static_cast<std::size_t>(i)] - new_m);
          const T total = exp_shifted(row, bk, new_m);
          l[static_cast<std::size_t>(i)] = l[static_cast<std::size_t>(i)] * correction + total;
          m[static_cast<std::size_t>(i)] = new_m;
          if (correction != T(1)) {
            for (std::int64_t c = 0; c < g.Ev; ++c) acc[i * g.Ev + c] *= correction;
          }
        }
        gemm(false, false, bq, g.Ev, bk, T(1), s.data(), bk, vb + j0 * g.Ev, g.Ev, T(1), acc, g.Ev);
      }
      for (std::int64_t i = 0; i < bq; ++i) {
        const T total = l[static_cast<std::size_t>(i)];
        // A fully masked row: the composite's softmax divides 0 by 0. No keys at all (S = 0):
        // an empty sum, 0.
        const T nan = std::numeric_limits<T>::quiet_NaN();
        const T inv = total > T(0) ? T(1) / total : g.S == 0 ? T(0) : nan;
        for (std::int64_t c = 0; c < g.Ev; ++c) acc[i * g.Ev + c] *= inv;
        lse[b * g.L + i0 + i] = total > T(0) ? m[static_cast<std::size_t>(i)] + std::log(total)
                                : g.S == 0   ? minus_inf
                                             : nan;
      }
    }
  }
}

template <class T>
void attention_backward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                        const T* k, const T* v, const T* out, const T* lse, const T* grad_out,
                        T* grad_q, T* grad_k, T* grad_v, T* grad_mask) {
  const bool need_ds = grad_q != nullptr || grad_k != nullptr || grad_mask != nullptr;
  const T scale = static_cast<T>(g.scale);
#pragma omp parallel if (g.batch > 1 && g.batch * g.L * g.S >= (std::int64_t{1} << 14))
  {
    const std::size_t block = static_cast<std::size_t>(std::min(kQueryBlock, g.L) * std::min(kKeyBlock, g.S));
    std::vector<T> p(block), ds(block), d(static_cast<std::size_t>(g.L));
    std::vector<T> k_t(static_cast<std::size_t>(g.E * std::min(kKeyBlock, g.S)));
    std::vector<T> v_t(static_cast<std::size_t>(g.Ev * std::min(kKeyBlock, g.S)));
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < g.batch; ++b) {
      const T* qb = q + b * g.L * g.E;
      const T* kb = k + b * g.S * g.E;
      const T* vb = v + b * g.S * g.Ev;
      const T* gb = grad_out + b * g.L * g.Ev;
      const T* lb = lse + b * g.L;
      T* gq = grad_q != nullptr ? grad_q + b * g.L * g.E : nullptr;
      T* gk = grad_k != nullptr ? grad_k + b * g.S * g.E : nullptr;
      T* gv = grad_v != nullptr ? grad_v + b * g.S * g.Ev : nullptr;
      if (gq != nullptr) std::fill(gq, gq + g.L * g.E, T(0));
      if (gk != nullptr) std::fill(gk, gk + g.S * g.E, T(0));
      if (gv != nullptr) std::fill(gv, gv + g.S * g.Ev, T(0));
      if (grad_mask != nullptr) {
        // Causally skipped blocks are never written: their dS is 0.
        std::fill(grad_mask + b * g.L * g.S, grad_mask + (b + 1) * g.L * g.S, T(0));
      }
      for (std::int64_t i = 0; i < g.L; ++i) {
        const T* o = out + (b * g.L + i) * g.Ev;
        T dot = 0;
        for (std::int64_t c = 0; c < g.Ev; ++c) dot += o[c] * gb[i * g.Ev + c];
        d[static_cast<std::size_t>(i)] = dot;
      }
      for (std::int64_t j0 = 0; j0 < g.S; j0 += kKeyBlock) {
        const std::int64_t bk = std::min(kKeyBlock, g.S - j0);
        transpose_block(kb + j0 * g.E, bk, g.E, k_t.data());
        if (need_ds) transpose_block(vb + j0 * g.Ev, bk, g.Ev, v_t.data());
        for (std::int64_t i0 = 0; i0 < g.L; i0 += kQueryBlock) {
          const std::int64_t bq = std::min(kQueryBlock, g.L - i0);
          if (skipped(g, i0, bq, j0)) continue;
          score_block(g, mask, b, qb, k_t.data(), i0, bq, j0, bk, p.data());
          for (std::int64_t i = 0; i < bq; ++i) exp_shifted(p.data() + i * bk, bk, lb[i0 + i]);
          if (gv != nullptr) {
            gemm(true, false, bk, g.Ev, bq, T(1), p.data(), bk, gb + i0 * g.Ev, g.Ev, T(1),
                 gv + j0 * g.Ev, g.Ev);
          }
          if (!need_ds) continue;
          gemm(false, false, bq, bk, g.Ev, T(1), gb + i0 * g.Ev, g.Ev, v_t.data(), bk, T(0), ds.data(), bk);
          for (std::int64_t i = 0; i < bq; ++i) {
            softmax_grad_row(p.data() + i * bk, ds.data() + i * bk, bk, d[static_cast<std::size_t>(i0 + i)]);
          }
          zero_masked(g, mask, b, i0, bq, j0, bk, ds.data());
          if (grad_mask != nullptr) {
            for (std::int64_t i = 0; i < bq; ++i) {
              std::copy(ds.data() + i * bk, ds.data() + (i + 1) * bk,
                        grad_mask + (b * g.L + i0 + i) * g.S + j0);
            }
          }
          if (gq != nullptr) {
            gemm(false, false, bq, g.E, bk, scale, ds.data(), bk, kb + j0 * g.E, g.E, T(1),
                 gq + i0 * g.E, g.E);
          }
          if (gk != nullptr) {
            gemm(true, false, bk, g.E, bq, scale, ds.data(), bk, qb + i0 * g.E, g.E, T(1),
                 gk + j0 * g.E, g.E);
          }
        }
      }
    }
  }
}

template void attention_forward<float>(const AttentionGeometry&, const AttentionMask&, const float*,
                                       const float*, const float*, float*, float*);
template void attention_forward<double>(const AttentionGeometry&, const AttentionMask&,
                                        const double*, const double*, const double*, double*,
                                        double*);
template void attention_backward<float>(const AttentionGeometry&, const AttentionMask&,
                                        const float*, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*, float*);
template void attention_backward<double>(const AttentionGeometry&, const AttentionMask&,
                                         const double*, const double*, const double*,
                                         const double*, const double*, const double*, double*,
                                         double*, double*, double*);

}  // namespace tapegrad::detail
