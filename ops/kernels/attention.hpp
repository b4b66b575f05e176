#pragma once
// The kernels of scaled_dot_product_attention (ops/attention.cpp): a forward over blocks of
// keys with an online softmax, and a backward that recomputes the probabilities block by
// block from the row log-sum-exp, so that no [L, S] matrix of a batch entry is ever stored.
// Matrices are row-major and contiguous per batch entry: q [L, E], k [S, E], v [S, Ev],
// out [L, Ev], lse [L].
#include <cstdint>
#include <vector>

namespace tapegrad::detail {

/// How the mask reads: per batch entry b, element (i, j) of the [L, S] scores takes
/// data[offsets[b] + i·row_stride + j·col_stride] (strides 0 along broadcast dims).
struct AttentionMask {
  enum class Kind { none, boolean, additive } kind = Kind::none;
  const void* data = nullptr;  ///< bool (true = attend) or T (added to the scores)
  std::vector<std::int64_t> offsets;
  std::int64_t row_stride = 0, col_stride = 0;
};

struct AttentionGeometry {
  std::int64_t batch = 0, L = 0, S = 0, E = 0, Ev = 0;
  double scale = 1;     ///< 1/sqrt(E)
  bool causal = false;  ///< key j is masked for query i when j > i
};

/// out = softmax(q·kᵀ·scale + mask)·v per batch entry; lse = the rows' log Σ exp of the
/// scores. A row with every key masked gets NaN in out and lse (the composite's 0/0).
template <class T>
void attention_forward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                       const T* k, const T* v, T* out, T* lse);

/// The gradients for grad_out; each output pointer may be null (not wanted). grad_mask, when
/// wanted, receives dS = P∘(dP - rowsum(dO∘O)) as a full [batch, L, S] array.
template <class T>
void attention_backward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                        const T* k, const T* v, const T* out, const T* lse, const T* grad_out,
                        T* grad_q, T* grad_k, T* grad_v, T* grad_mask);

}  // namespace tapegrad::detail
