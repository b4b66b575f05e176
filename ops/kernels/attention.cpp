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
// blocks and a transposed copy of one batch index's keys and values per thread. Short rows
// are the exception (attention_keeps_probs): there the forward also writes P, which the
// backward reads instead of recomputing it. Blocks whose keys all lie after their queries
// (causal) are skipped.
#include "ops/kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstring>
#include <limits>

#include "ops/detail/math.hpp"
#include "ops/kernels/gemm.hpp"
#include "autograd/simd.hpp"

namespace tapegrad::detail {
namespace {

constexpr std::int64_t kQueryBlock = 64;
constexpr std::int64_t kKeyBlock = 256;

/// Lanes of the partial sums and maxima below: vectors of GCC's vector extension (one AVX-512
/// register of f32), so that a row's maximum and sum run as vector operations in a fixed
/// order (a single running sum or maximum is a serial chain the compiler may not reorder).
template <class T>
struct LaneVector;
template <>
struct LaneVector<float> {
  using type = float __attribute__((vector_size(64)));
};
template <>
struct LaneVector<double> {
  using type = double __attribute__((vector_size(64)));
};
template <class T>
using Lanes = typename LaneVector<T>::type;

template <class T>
constexpr std::int64_t kLanes = 64 / sizeof(T);

/// op over the lanes of v, as a tree (its depth, not the lane count, is the latency: rows are
/// short).
template <class T, class Op>
T fold(const Lanes<T>& v, Op op) {
  T a[kLanes<T>];
  std::memcpy(a, &v, sizeof a);
  for (std::int64_t w = kLanes<T> / 2; w >= 1; w /= 2) {
    for (std::int64_t l = 0; l < w; ++l) a[l] = op(a[l], a[l + w]);
  }
  return a[0];
}

/// s[j] = exp(s[j] - shift) for j < n; returns their sum (exp(-inf) = 0 for masked keys).
template <class T>
T exp_shifted(T* s, std::int64_t n, T shift) {
  for (std::int64_t j = 0; j < n; ++j) s[j] = num::exp(s[j] - shift);
  Lanes<T> sums = {};
  std::int64_t j = 0;
  for (; j + kLanes<T> <= n; j += kLanes<T>) {
    Lanes<T> v;
    std::memcpy(&v, s + j, sizeof v);
    sums += v;
  }
  T total = 0;
  for (; j < n; ++j) total += s[j];
  return total + fold<T>(sums, [](T a, T b) { return a + b; });
}

/// max(init, s[0], ..., s[n-1]), NaN scores skipped (exp carries them into the row's sum).
template <class T>
T row_max(const T* s, std::int64_t n, T init) {
  Lanes<T> maxima = Lanes<T>{} + init;  // init in every lane
  std::int64_t j = 0;
  for (; j + kLanes<T> <= n; j += kLanes<T>) {
    Lanes<T> v;
    std::memcpy(&v, s + j, sizeof v);
    maxima = maxima < v ? v : maxima;
  }
  const auto max = [](T a, T b) { return a < b ? b : a; };
  T m = fold<T>(maxima, max);
  for (; j < n; ++j) m = max(m, s[j]);
  return m;
}

/// The forward's online softmax over one block of scores s [bq, bk]: row i's running maximum
/// m[i] and sum l[i] take the block in, s becomes exp(s - m[i]) (0 for a row with every key
/// so far masked), and corr[i] is the factor the row's accumulator needs for the new maximum
/// (1 when nothing was accumulated yet). A block per call, not a row: rows are short (64 keys
/// in MultiheadAttention at L = 64).
template <class T>
TAPEGRAD_MULTIVERSION void online_softmax_block(T* s, std::int64_t bq, std::int64_t bk, T* m, T* l, T* corr) {
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  for (std::int64_t i = 0; i < bq; ++i) {
    T* row = s + i * bk;
    const T new_m = row_max(row, bk, m[i]);
    corr[i] = T(1);
    if (new_m == minus_inf) {  // every key so far masked: nothing to add
      std::fill(row, row + bk, T(0));
      continue;
    }
    const T total = exp_shifted(row, bk, new_m);
    if (m[i] != minus_inf) corr[i] = num::exp(m[i] - new_m);
    l[i] = l[i] * corr[i] + total;
    m[i] = new_m;
  }
}

/// The backward's probabilities: p[i, j] = exp(p[i, j] - lse[i]) over a block [bq, bk].
template <class T>
TAPEGRAD_MULTIVERSION void exp_rows(T* p, std::int64_t bq, std::int64_t bk, const T* lse) {
  for (std::int64_t i = 0; i < bq; ++i) {
    T* row = p + i * bk;
    const T shift = lse[i];
    for (std::int64_t j = 0; j < bk; ++j) row[j] = num::exp(row[j] - shift);
  }
}

/// d[h·rows + i] = Σ_c a[i, h·n + c]·b[i, h·n + c]: each head's row dot products, for rows
/// i < rows ld apart in a and b, each holding `heads` runs of n values. Row by row, all heads
/// at once: reading one head's n values of every row stalled on the loads, as the transposes
/// did.
template <class T>
TAPEGRAD_MULTIVERSION void head_row_dots(const T* a, const T* b, std::int64_t rows, std::int64_t heads,
                                         std::int64_t n, std::int64_t ld, T* d) {
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const T* x = a + i * ld + h * n;
      const T* y = b + i * ld + h * n;
      Lanes<T> sums = {};
      std::int64_t c = 0;
      for (; c + kLanes<T> <= n; c += kLanes<T>) {
        Lanes<T> u, v;
        std::memcpy(&u, x + c, sizeof u);
        std::memcpy(&v, y + c, sizeof v);
        sums += u * v;
      }
      T dot = 0;
      for (; c < n; ++c) dot += x[c] * y[c];
      d[h * rows + i] = dot + fold<T>(sums, [](T p, T q) { return p + q; });
    }
  }
}

/// ds[i, j] = p[i, j]·(ds[i, j] - d[i]) over a block [bq, bk].
template <class T>
TAPEGRAD_MULTIVERSION void softmax_grad_rows(const T* p, T* ds, std::int64_t bq, std::int64_t bk, const T* d) {
  for (std::int64_t i = 0; i < bq; ++i) {
    for (std::int64_t j = 0; j < bk; ++j) ds[i * bk + j] = p[i * bk + j] * (ds[i * bk + j] - d[i]);
  }
}

/// t [cols, rows] = mᵀ for m [rows, cols] (rows ld apart). k and v go through it so that
/// every product with them is a plain (N, N) GEMM: the GEMM library takes far longer over a
/// transposed 64 × 32 operand in this loop (21 against 62 GFLOP/s measured in
/// MultiheadAttention at L = 64) than the copy costs. The kernels transpose a group's rows of
/// all heads at once: whole rows stream in, where a head's 32 columns of each row stalled on
/// every load (15 % of the forward at L = 64). f32 goes in 4 × 4 tiles transposed in
/// registers (9 % faster forward than element by element); the edges and f64 element by
/// element.
template <class T>
void transpose_block(const T* m, std::int64_t rows, std::int64_t cols, std::int64_t ld, T* t) {
  std::int64_t r4 = 0, c4 = 0;  // the part done in tiles: rows [0, r4) by cols [0, c4)
  if constexpr (std::same_as<T, float>) {
    using V = float __attribute__((vector_size(16)));
    const auto load = [](const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; };
    const auto store = [](float* p, V v) { std::memcpy(p, &v, sizeof v); };
    r4 = rows / 4 * 4;
    c4 = cols / 4 * 4;
    for (std::int64_t r = 0; r < r4; r += 4) {
      for (std::int64_t c = 0; c < c4; c += 4) {
        const float* src = m + r * ld + c;
        const V a = load(src), b = load(src + ld), e = load(src + 2 * ld), f = load(src + 3 * ld);
        const V ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5), ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
        const V ef_lo = __builtin_shufflevector(e, f, 0, 4, 1, 5), ef_hi = __builtin_shufflevector(e, f, 2, 6, 3, 7);
        float* dst = t + c * rows + r;
        store(dst, __builtin_shufflevector(ab_lo, ef_lo, 0, 1, 4, 5));
        store(dst + rows, __builtin_shufflevector(ab_lo, ef_lo, 2, 3, 6, 7));
        store(dst + 2 * rows, __builtin_shufflevector(ab_hi, ef_hi, 0, 1, 4, 5));
        store(dst + 3 * rows, __builtin_shufflevector(ab_hi, ef_hi, 2, 3, 6, 7));
      }
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = r < r4 ? c4 : 0; c < cols; ++c) t[c * rows + r] = m[r * ld + c];
  }
}

/// Rows [first, first + count) of group n (the batch entries n·heads to n·heads + heads - 1,
/// side by side: [count, heads·cols]) of a tensor in layout `a`, in contiguous memory: the
/// tensor itself when the group's rows follow each other, else a copy. Head h's block then
/// starts h·cols into each row. The kernels run their GEMMs on these: MultiheadAttention's
/// rows lie N·E values apart (16 KiB for N = 32, E = 128), and GEMMs, and copies per head,
/// over such rows ran at less than half their speed; whole rows of all heads copy at once.
template <class T>
class GatheredRows {
 public:
  const T* rows(const T* base, const AttentionLayout& a, std::int64_t n, std::int64_t first, std::int64_t count,
                std::int64_t cols) {
    const std::int64_t width = a.heads * cols;
    const T* m = base + n * a.outer + first * a.row;
    if (a.row == width) return m;
    buffer_.resize(static_cast<std::size_t>(count * width));
    for (std::int64_t r = 0; r < count; ++r) std::copy_n(m + r * a.row, width, buffer_.data() + r * width);
    return buffer_.data();
  }

 private:
  std::vector<T> buffer_;
};

/// The same for rows the kernels write: rows() hands out the group's rows contiguous and
/// zeroed, and flush() puts them in place (nothing to do when they are the tensor's own).
template <class T>
class ScatteredRows {
 public:
  T* rows(T* base, const AttentionLayout& a, std::int64_t n, std::int64_t first, std::int64_t count, std::int64_t cols) {
    dst_ = base + n * a.outer + first * a.row;
    count_ = count;
    width_ = a.heads * cols;
    ld_ = a.row;
    T* m = ld_ == width_ ? dst_ : (buffer_.resize(static_cast<std::size_t>(count * width_)), buffer_.data());
    std::fill_n(m, count * width_, T(0));
    return m;
  }
  void flush() const {
    if (ld_ == width_) return;
    for (std::int64_t r = 0; r < count_; ++r) std::copy_n(buffer_.data() + r * width_, width_, dst_ + r * ld_);
  }

 private:
  std::vector<T> buffer_;
  T* dst_ = nullptr;
  std::int64_t count_ = 0, width_ = 0, ld_ = 0;
};

/// The scores of queries [i0, i0 + bq) against keys [j0, j0 + bk) of batch entry b, masked,
/// into s [bq, bk]; q = those queries [bq, E] (rows q_ld apart), k_t = those keys transposed,
/// [E, bk] (rows kt_ld apart).
template <class T>
void score_block(const AttentionGeometry& g, const AttentionMask& mask, std::int64_t b,
                 const T* q, std::int64_t q_ld, const T* k_t, std::int64_t kt_ld, std::int64_t i0, std::int64_t bq,
                 std::int64_t j0, std::int64_t bk, T* s) {
  gemm(false, false, bq, bk, g.E, static_cast<T>(g.scale), q, q_ld, k_t, kt_ld, T(0), s, bk);
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

bool attention_keeps_probs(const AttentionGeometry& g) {
  return g.S <= kKeyBlock && g.L * g.S <= g.L * g.E + g.S * (g.E + g.Ev);
}

template <class T>
void attention_forward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                       const T* k, const T* v, T* out, T* lse, T* probs) {
  const std::int64_t heads = g.q.heads, groups = g.batch / heads;  // a task: one group's query block
  const std::int64_t q_blocks = (g.L + kQueryBlock - 1) / kQueryBlock;
  const std::int64_t tasks = groups * q_blocks;
  const std::int64_t q_ld = heads * g.E, o_ld = heads * g.Ev;  // in the gathered rows
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel if (tasks > 1 && g.batch * g.L * g.S >= (std::int64_t{1} << 14))
  {
    std::vector<T> s(static_cast<std::size_t>(kQueryBlock * std::min(kKeyBlock, g.S)));
    std::vector<T> k_t(static_cast<std::size_t>(q_ld * g.S));  // the group's keys transposed, all heads
    std::vector<T> m(kQueryBlock), l(kQueryBlock), corr(kQueryBlock);
    GatheredRows<T> q_rows, k_rows, v_rows;
    ScatteredRows<T> out_rows;
    // The group's keys and values, gathered and transposed once for all its query blocks that
    // this thread takes (consecutive tasks: a static schedule).
    std::int64_t group = -1;
    const T* vn = nullptr;
#pragma omp for schedule(static)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t n = task / q_blocks, i0 = (task % q_blocks) * kQueryBlock;
      const std::int64_t bq = std::min(kQueryBlock, g.L - i0);
      const T* qn = q_rows.rows(q, g.q, n, i0, bq, g.E);  // the block's queries, all heads
      if (n != group) {
        const T* kn = k_rows.rows(k, g.k, n, 0, g.S, g.E);
        transpose_block(kn, g.S, q_ld, q_ld, k_t.data());  // whole rows: the reads stream
        vn = v_rows.rows(v, g.v, n, 0, g.S, g.Ev);
        group = n;
      }
      T* acc_n = out_rows.rows(out, g.out, n, i0, bq, g.Ev);
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t b = n * heads + h;
        const T* qb = qn + h * g.E;
        T* acc = acc_n + h * g.Ev;
        std::fill(m.begin(), m.end(), minus_inf);
        std::fill(l.begin(), l.end(), T(0));
        for (std::int64_t j0 = 0; j0 < g.S && !skipped(g, i0, bq, j0); j0 += kKeyBlock) {
          const std::int64_t bk = std::min(kKeyBlock, g.S - j0);
          score_block(g, mask, b, qb, q_ld, k_t.data() + h * g.E * g.S + j0, g.S, i0, bq, j0, bk, s.data());
          online_softmax_block(s.data(), bq, bk, m.data(), l.data(), corr.data());
          for (std::int64_t i = 0; i < bq; ++i) {
            if (corr[static_cast<std::size_t>(i)] == T(1)) continue;
            for (std::int64_t c = 0; c < g.Ev; ++c) acc[i * o_ld + c] *= corr[static_cast<std::size_t>(i)];
          }
          gemm(false, false, bq, g.Ev, bk, T(1), s.data(), bk, vn + j0 * o_ld + h * g.Ev, o_ld, T(1), acc, o_ld);
        }
        for (std::int64_t i = 0; i < bq; ++i) {
          const T total = l[static_cast<std::size_t>(i)];
          // A fully masked row: the composite's softmax divides 0 by 0. No keys at all (S = 0):
          // an empty sum, 0.
          const T nan = std::numeric_limits<T>::quiet_NaN();
          const T inv = total > T(0) ? T(1) / total : g.S == 0 ? T(0) : nan;
          for (std::int64_t c = 0; c < g.Ev; ++c) acc[i * o_ld + c] *= inv;
          lse[b * g.L + i0 + i] = total > T(0) ? m[static_cast<std::size_t>(i)] + std::log(total)
                                  : g.S == 0   ? minus_inf
                                               : nan;
          if (probs != nullptr) {  // s holds this row's exp(s - m) for all keys (one block)
            T* p = probs + (b * g.L + i0 + i) * g.S;
            for (std::int64_t j = 0; j < g.S; ++j) p[j] = s[static_cast<std::size_t>(i * g.S + j)] * inv;
          }
        }
      }
      out_rows.flush();
    }
  }
}

template <class T>
void attention_backward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                        const T* k, const T* v, const T* out, const T* lse, const T* probs,
                        const T* grad_out, T* grad_q, T* grad_k, T* grad_v, T* grad_mask) {
  const bool need_ds = grad_q != nullptr || grad_k != nullptr || grad_mask != nullptr;
  const T scale = static_cast<T>(g.scale);
  const std::int64_t heads = g.q.heads, groups = g.batch / heads;  // per thread: whole groups
  const std::int64_t q_ld = heads * g.E, v_ld = heads * g.Ev;     // in the gathered rows
#pragma omp parallel if (groups > 1 && g.batch * g.L * g.S >= (std::int64_t{1} << 14))
  {
    const std::size_t block = static_cast<std::size_t>(std::min(kQueryBlock, g.L) * std::min(kKeyBlock, g.S));
    std::vector<T> p(block), ds(block), d(static_cast<std::size_t>(heads * g.L));
    // The group's keys (when P is recomputed) and values transposed, all heads.
    std::vector<T> k_t(static_cast<std::size_t>(probs == nullptr ? q_ld * g.S : 0));
    std::vector<T> v_t(static_cast<std::size_t>(need_ds ? v_ld * g.S : 0));
    GatheredRows<T> q_rows, k_rows, v_rows, out_rows, grad_out_rows;
    ScatteredRows<T> grad_q_rows, grad_k_rows, grad_v_rows;
#pragma omp for schedule(static)
    for (std::int64_t n = 0; n < groups; ++n) {
      const T* qn = q_rows.rows(q, g.q, n, 0, g.L, g.E);
      const T* kn = k_rows.rows(k, g.k, n, 0, g.S, g.E);
      const T* vn = v_rows.rows(v, g.v, n, 0, g.S, g.Ev);
      const T* on = out_rows.rows(out, g.out, n, 0, g.L, g.Ev);
      const T* gn = grad_out_rows.rows(grad_out, g.out, n, 0, g.L, g.Ev);
      T* gqn = grad_q != nullptr ? grad_q_rows.rows(grad_q, g.q, n, 0, g.L, g.E) : nullptr;
      T* gkn = grad_k != nullptr ? grad_k_rows.rows(grad_k, g.k, n, 0, g.S, g.E) : nullptr;
      T* gvn = grad_v != nullptr ? grad_v_rows.rows(grad_v, g.v, n, 0, g.S, g.Ev) : nullptr;
      if (probs == nullptr) transpose_block(kn, g.S, q_ld, q_ld, k_t.data());
      if (need_ds) transpose_block(vn, g.S, v_ld, v_ld, v_t.data());
      if (need_ds) head_row_dots(on, gn, g.L, heads, g.Ev, v_ld, d.data());  // D of every head
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t b = n * heads + h;
        const T* qb = qn + h * g.E;
        const T* kb = kn + h * g.E;
        const T* gb = gn + h * g.Ev;
        const T* lb = lse + b * g.L;
        T* gq = gqn != nullptr ? gqn + h * g.E : nullptr;
        T* gk = gkn != nullptr ? gkn + h * g.E : nullptr;
        T* gv = gvn != nullptr ? gvn + h * g.Ev : nullptr;
        if (grad_mask != nullptr) {
          // Causally skipped blocks are never written: their dS is 0.
          std::fill(grad_mask + b * g.L * g.S, grad_mask + (b + 1) * g.L * g.S, T(0));
        }
        for (std::int64_t j0 = 0; j0 < g.S; j0 += kKeyBlock) {
          const std::int64_t bk = std::min(kKeyBlock, g.S - j0);
          for (std::int64_t i0 = 0; i0 < g.L; i0 += kQueryBlock) {
            const std::int64_t bq = std::min(kQueryBlock, g.L - i0);
            if (skipped(g, i0, bq, j0)) continue;
            // The forward's P (one block of keys: j0 = 0), or P recomputed.
            const T* pb = probs != nullptr ? probs + (b * g.L + i0) * g.S : p.data();
            if (probs == nullptr) {
              score_block(g, mask, b, qb + i0 * q_ld, q_ld, k_t.data() + h * g.E * g.S + j0, g.S, i0, bq, j0, bk,
                          p.data());
              exp_rows(p.data(), bq, bk, lb + i0);
            }
            if (gv != nullptr) {
              gemm(true, false, bk, g.Ev, bq, T(1), pb, bk, gb + i0 * v_ld, v_ld, T(1), gv + j0 * v_ld, v_ld);
            }
            if (!need_ds) continue;
            gemm(false, false, bq, bk, g.Ev, T(1), gb + i0 * v_ld, v_ld, v_t.data() + h * g.Ev * g.S + j0, g.S, T(0),
                 ds.data(), bk);
            softmax_grad_rows(pb, ds.data(), bq, bk, d.data() + h * g.L + i0);
            zero_masked(g, mask, b, i0, bq, j0, bk, ds.data());
            if (grad_mask != nullptr) {
              for (std::int64_t i = 0; i < bq; ++i) {
                std::copy(ds.data() + i * bk, ds.data() + (i + 1) * bk,
                          grad_mask + (b * g.L + i0 + i) * g.S + j0);
              }
            }
            if (gq != nullptr) {
              gemm(false, false, bq, g.E, bk, scale, ds.data(), bk, kb + j0 * q_ld, q_ld, T(1), gq + i0 * q_ld, q_ld);
            }
            if (gk != nullptr) {
              gemm(true, false, bk, g.E, bq, scale, ds.data(), bk, qb + i0 * q_ld, q_ld, T(1), gk + j0 * q_ld, q_ld);
            }
          }
        }
      }
      if (gqn != nullptr) grad_q_rows.flush();
      if (gkn != nullptr) grad_k_rows.flush();
      if (gvn != nullptr) grad_v_rows.flush();
    }
  }
}

template void attention_forward<float>(const AttentionGeometry&, const AttentionMask&, const float*,
                                       const float*, const float*, float*, float*, float*);
template void attention_forward<double>(const AttentionGeometry&, const AttentionMask&,
                                        const double*, const double*, const double*, double*,
                                        double*, double*);
template void attention_backward<float>(const AttentionGeometry&, const AttentionMask&,
                                        const float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*, float*, float*,
                                        float*, float*);
template void attention_backward<double>(const AttentionGeometry&, const AttentionMask&,
                                         const double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, double*, double*, double*, double*);

}  // namespace tapegrad::detail
