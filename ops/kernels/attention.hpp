#pragma once
// The kernels of scaled_dot_product_attention (ops/attention.cpp): a forward over blocks of
// keys with an online softmax, and a backward that recomputes the probabilities block by
// block from the row log-sum-exp, so that no [L, S] matrix of a batch entry is ever stored
// (except for short rows, where the probabilities take no more memory than q, k and v:
// attention_keeps_probs).
// Each batch entry's matrices are row-major, q [L, E], k [S, E], v [S, Ev], out [L, Ev], with
// their rows where an AttentionLayout puts them (contiguous, or one head's columns of
// MultiheadAttention's [L, N, H·E]); lse [batch, L] is contiguous. The gradients share the
// layouts of q, k, v and out.
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

/// Where the rows of a batch entry lie. The entries come in groups of `heads` (entry
/// b = n·heads + h) whose rows sit side by side: row i of group n starts at n·outer + i·row
/// and holds the group's heads one after the other (cols values each). Contiguous
/// [batch, rows, cols]: heads 1, outer rows·cols, row cols. MultiheadAttention's [L, N, H·E]
/// (sequence first): heads H, outer H·E, row N·H·E; batch first [N, L, H·E]: outer L·H·E,
/// row H·E.
struct AttentionLayout {
  std::int64_t heads = 1, outer = 0, row = 0;
  static AttentionLayout contiguous(std::int64_t rows, std::int64_t cols) { return {1, rows * cols, cols}; }
};

struct AttentionGeometry {
  std::int64_t batch = 0, L = 0, S = 0, E = 0, Ev = 0;
  double scale = 1;     ///< 1/sqrt(E)
  bool causal = false;  ///< key j is masked for query i when j > i
  AttentionLayout q, k, v, out;  ///< of q, k, v and out (and of their gradients)
};

/// Whether the forward should keep the probabilities P = softmax(q·kᵀ·scale + mask)
/// ([batch, L, S]) for the backward, which then skips recomputing them (a GEMM and an exp per
/// score): when one block of keys holds all of a row's and P takes no more memory than q, k
/// and v together. Short sequences (MultiheadAttention at L = 64: P is 2/3 of q, k and v);
/// never at the lengths where P would dominate the memory.
bool attention_keeps_probs(const AttentionGeometry& g);

/// out = softmax(q·kᵀ·scale + mask)·v per batch entry; lse = the rows' log Σ exp of the
/// scores. A row with every key masked gets NaN in out and lse (the composite's 0/0). probs,
/// when not null (allowed only where attention_keeps_probs), receives P as [batch, L, S].
template <class T>
void attention_forward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                       const T* k, const T* v, T* out, T* lse, T* probs);

/// The gradients for grad_out; each output pointer may be null (not wanted). grad_mask, when
/// wanted, receives dS = P∘(dP - rowsum(dO∘O)) as a full [batch, L, S] array. probs: the
/// forward's P, or null to recompute it from lse.
template <class T>
void attention_backward(const AttentionGeometry& g, const AttentionMask& mask, const T* q,
                        const T* k, const T* v, const T* out, const T* lse, const T* probs,
                        const T* grad_out, T* grad_q, T* grad_k, T* grad_v, T* grad_mask);

}  // namespace tapegrad::detail
