// scaled_dot_product_attention, torch 2.x's functional semantics (torch 1.13 has no public
// one; its MultiheadAttention computes the same composite):
//   q [..., L, E], k [..., S, E], v [..., S, Ev] (batch dims broadcast), mask broadcastable
//   to [..., L, S]: bool (true = attend, false = -inf) or floating (added); is_causal masks
//   key j for query i when j > i (top-left aligned when L != S).
//   scores = q·kᵀ/√E + mask,  P = softmax(scores, -1),  out = P·v  [..., L, Ev]
// The primitive's forward runs over blocks of keys with an online softmax and saves q, k, v,
// out and the row log-sum-exp lse [..., L]; P [..., L, S] only where it takes no more memory
// than q, k and v (short rows: detail::attention_keeps_probs). Its VJP reads that P or
// recomputes it block by block (ops/kernels/attention.cpp), with D = rowsum(dO∘out):
//   dV = Pᵀ·dO,  dS = P∘(dO·vᵀ - D),  dQ = dS·k/√E,  dK = dSᵀ·q/√E,  dmask = dS (summed to
//   the mask's shape).
// Under create_graph the same formulas run as recorded ops on P recomputed by the composite,
// so the second derivative is the composite's.
// A row whose keys are all masked gives NaN, as the composite's softmax of -inf's does in
// PyTorch, and so do v's gradient and, through a float mask of -inf's, q's, k's and the mask's;
// a bool mask or the causal rule passes no gradient to the scores it masked (the composite's
// masked_fill), so there q and k get 0 from that row.
// dropout_p > 0 takes the composite (softmax, dropout, matmul as recorded ops, the mask drawn
// from the global generator): the primitive itself has no dropout.
#include <array>
#include <cmath>
#include <limits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/attention.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

constexpr std::string_view kOp = "scaled_dot_product_attention";

/// The batch dims of t ([..., rows, cols]) as a shape.
Shape batch_dims(const Tensor& t) {
  Shape s;
  for (std::size_t d = 0; d + 2 < t.dim(); ++d) s.push_back(t.shape()[d]);
  return s;
}

/// [L, S] bool, true where key j may be seen by query i (j <= i).
Tensor causal_mask(std::int64_t L, std::int64_t S) {
  Tensor m = detail::make_tensor(Shape{L, S}, DType::boolean);
  bool* p = m.data<bool>();
  for (std::int64_t i = 0; i < L; ++i) {
    for (std::int64_t j = 0; j < S; ++j) p[i * S + j] = j <= i;
  }
  return m;
}

/// softmax(q·kᵀ/√E + mask) as recorded ops: the composite the primitive equals.
Tensor composite_probabilities(const Tensor& q, const Tensor& k, const Tensor& mask, bool causal) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.shape()[q.dim() - 1]));
  Tensor scores = matmul(q, transpose(k, -2, -1)) * scale;
  const double minus_inf = -std::numeric_limits<double>::infinity();
  if (mask.defined()) {
    scores = mask.dtype() == DType::boolean ? masked_fill(scores, logical_not(mask), minus_inf)
                                            : scores + mask;
  }
  if (causal) {
    const std::int64_t L = q.shape()[q.dim() - 2], S = k.shape()[k.dim() - 2];
    scores = masked_fill(scores, logical_not(causal_mask(L, S)), minus_inf);
  }
  return softmax(scores, -1);
}

/// Which of the op's four inputs (q, k, v, mask) need a gradient.
std::array<bool, 4> needs(const OpContext& ctx) {
  return {ctx.needs_input_grad(0), ctx.needs_input_grad(1), ctx.needs_input_grad(2), ctx.needs_input_grad(3)};
}

/// The VJP recorded for create_graph: the kernels' formulas as ops on the composite's P
/// (q [..., L, E], k [..., S, E], v [..., S, Ev], grad_out [..., L, Ev]); the mask's gradient
/// summed to mask_shape.
std::vector<Tensor> recorded_grads(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                                   const Tensor& grad_out, std::array<bool, 4> need, const Shape& mask_shape) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.shape()[q.dim() - 1]));
  const Tensor p = composite_probabilities(q, k, mask, causal);
  std::vector<Tensor> grads(4);
  if (need[2]) grads[2] = matmul(transpose(p, -2, -1), grad_out);
  if (!need[0] && !need[1] && !need[3]) return grads;
  const Tensor dp = matmul(grad_out, transpose(v, -2, -1));
  Tensor ds = p * (dp - sum(p * dp, {-1}, true));
  // No gradient where masked_fill masked the score (a fully masked row's NaN included).
  if (mask.defined() && mask.dtype() == DType::boolean) ds = masked_fill(ds, logical_not(mask), 0.0);
  if (causal) {
    ds = masked_fill(ds, logical_not(causal_mask(q.shape()[q.dim() - 2], k.shape()[k.dim() - 2])), 0.0);
  }
  if (need[0]) grads[0] = matmul(ds, k) * scale;
  if (need[1]) grads[1] = matmul(transpose(ds, -2, -1), q) * scale;
  if (need[3]) grads[3] = detail::sum_to(ds, mask_shape);
  return grads;
}

/// The heads of scaled_dot_product_attention_heads: [L, N, H·E] (or batch first [N, L, H·E])
/// read as [N, H, L, E] (split) and back (merge), as recorded ops.
struct Heads {
  std::int64_t count = 1;
  bool batch_first = false;
  std::int64_t batch(const Tensor& t) const { return t.shape()[batch_first ? 0 : 1]; }
  std::int64_t length(const Tensor& t) const { return t.shape()[batch_first ? 1 : 0]; }
  std::int64_t width(const Tensor& t) const { return t.shape()[2] / count; }
  Tensor split(const Tensor& t) const {
    const Tensor r = reshape(t, {t.shape()[0], t.shape()[1], count, width(t)});
    return permute(r, batch_first ? std::vector<std::int64_t>{0, 2, 1, 3} : std::vector<std::int64_t>{1, 2, 0, 3});
  }
  Tensor merge(const Tensor& t) const {  // [N, H, len, e]
    const std::int64_t n = t.shape()[0], len = t.shape()[2], e = t.shape()[1] * t.shape()[3];
    return batch_first ? reshape(permute(t, {0, 2, 1, 3}), {n, len, e}) : reshape(permute(t, {2, 0, 1, 3}), {len, n, e});
  }
  /// Where the kernels find the heads of a tensor laid out as `like` with e values per head.
  detail::AttentionLayout layout(const Tensor& like, std::int64_t e) const {
    const std::int64_t row = batch_first ? count * e : batch(like) * count * e;
    return {count, batch_first ? length(like) * count * e : count * e, row};
  }
};

/// scaled_dot_product_attention (Packed = false: q [..., L, E] with the batch dims in front) and
/// scaled_dot_product_attention_heads (Packed: the heads packed in the embedding, see Heads):
/// one forward and VJP over the kernels, which read either layout in place.
template <bool Packed>
struct AttentionOp {
  static constexpr std::string_view name = Packed ? "scaled_dot_product_attention_heads" : kOp;
  bool causal = false;
  Heads heads{};  ///< (Packed only)

  std::string attributes() const {
    if constexpr (Packed) {
      return fmt::format("num_heads={}, batch_first={}, is_causal={}", heads.count, heads.batch_first, causal);
    } else {
      return fmt::format("is_causal={}", causal);
    }
  }

  // q, k, v share their batch dims here (the public functions expand or check them).
  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor &q = in[0], &v = in[2];
    Shape out = q.shape();
    out[out.size() - 1] = v.shape()[v.dim() - 1];
    return {out, q.dtype()};
  }

  /// The scores' shape [batch..., L, S] ([N, H, L, S] for packed heads): what the mask
  /// broadcasts to.
  Shape scores_shape(std::span<const Tensor> in) const {
    if constexpr (Packed) {
      return {heads.batch(in[0]), heads.count, heads.length(in[0]), heads.length(in[1])};
    } else {
      Shape full = in[0].shape();
      full[full.size() - 1] = in[1].shape()[in[1].dim() - 2];
      return full;
    }
  }

  detail::AttentionGeometry geometry(std::span<const Tensor> in) const {
    detail::AttentionGeometry g;
    const Shape scores = scores_shape(in);
    g.L = scores[scores.size() - 2];
    g.S = scores[scores.size() - 1];
    g.batch = 1;
    for (std::size_t d = 0; d + 2 < scores.size(); ++d) g.batch *= scores[d];
    if constexpr (Packed) {
      g.E = heads.width(in[0]);
      g.Ev = heads.width(in[2]);
      g.q = heads.layout(in[0], g.E);
      g.k = heads.layout(in[1], g.E);
      g.v = heads.layout(in[2], g.Ev);
      g.out = heads.layout(in[0], g.Ev);
    } else {
      g.E = in[0].shape()[in[0].dim() - 1];
      g.Ev = in[2].shape()[in[2].dim() - 1];
      g.q = detail::AttentionLayout::contiguous(g.L, g.E);
      g.k = detail::AttentionLayout::contiguous(g.S, g.E);
      g.v = detail::AttentionLayout::contiguous(g.S, g.Ev);
      g.out = detail::AttentionLayout::contiguous(g.L, g.Ev);
    }
    g.scale = 1.0 / std::sqrt(static_cast<double>(g.E));
    g.causal = causal;
    return g;
  }

  /// How the kernels read `mask` (broadcast to the scores' shape `full`).
  static detail::AttentionMask mask_view(const Tensor& mask, const Shape& full, const detail::AttentionGeometry& g) {
    detail::AttentionMask view;
    if (!mask.defined()) return view;
    view.kind = mask.dtype() == DType::boolean ? detail::AttentionMask::Kind::boolean
                                               : detail::AttentionMask::Kind::additive;
    view.data = mask.dtype() == DType::boolean ? static_cast<const void*>(mask.data<bool>())
                                               : mask.dtype() == DType::f32
                                                     ? static_cast<const void*>(mask.data<float>())
                                                     : static_cast<const void*>(mask.data<double>());
    const auto strides = detail::broadcast_strides(mask.shape(), full);
    const std::size_t rank = full.size();
    view.row_stride = strides[rank - 2];
    view.col_stride = strides[rank - 1];
    view.offsets.resize(static_cast<std::size_t>(g.batch));
    for (std::int64_t b = 0; b < g.batch; ++b) {
      std::int64_t rest = b, offset = 0;
      for (std::size_t d = rank - 2; d-- > 0;) {
        offset += (rest % full[d]) * strides[d];
        rest /= full[d];
      }
      view.offsets[static_cast<std::size_t>(b)] = offset;
    }
    return view;
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const detail::AttentionGeometry g = geometry(in);
    const Shape scores = scores_shape(in);
    const detail::AttentionMask mask = mask_view(in[3], scores, g);
    Tensor out = detail::make_tensor(infer(in), name);
    Shape lse_shape;  // [batch..., L]
    for (std::size_t d = 0; d + 1 < scores.size(); ++d) lse_shape.push_back(scores[d]);
    Tensor lse = detail::make_tensor(lse_shape, in[0].dtype(), name);
    // P for the backward, when it is small (and the op is recorded for one)
    Tensor probs = ctx.recording() && detail::attention_keeps_probs(g)
                       ? detail::make_tensor(scores, in[0].dtype(), name)
                       : Tensor();
    detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::attention_forward<T>(g, mask, in[0].data<T>(), in[1].data<T>(), in[2].data<T>(),
                                   out.data<T>(), lse.data<T>(), probs.defined() ? probs.data<T>() : nullptr);
    });
    for (std::size_t i = 0; i < 4; ++i) ctx.save(in[i]);
    ctx.save(out);
    ctx.save(lse);
    ctx.save(probs);
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const std::vector<Tensor> in = {ctx.saved(0), ctx.saved(1), ctx.saved(2), ctx.saved(3)};
    const Tensor out = ctx.saved(4), lse = ctx.saved(5), probs = ctx.saved(6);
    const detail::AttentionGeometry g = geometry(in);
    const Shape scores = scores_shape(in);
    const detail::AttentionMask mask = mask_view(in[3], scores, g);
    std::vector<Tensor> grads(4);
    for (std::size_t i = 0; i < 3; ++i) {
      if (ctx.needs_input_grad(i)) grads[i] = detail::make_tensor(ctx.input(i), name);
    }
    // dS over the scores' shape, for a float mask that needs a gradient
    Tensor grad_scores = ctx.needs_input_grad(3) ? detail::make_tensor(scores, in[0].dtype(), name) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const auto ptr = [](Tensor& t) -> T* { return t.defined() ? t.data<T>() : nullptr; };
      detail::attention_backward<T>(g, mask, in[0].data<T>(), in[1].data<T>(), in[2].data<T>(),
                                    out.data<T>(), lse.data<T>(), probs.defined() ? probs.data<T>() : nullptr,
                                    grad_out.data<T>(),
                                    ptr(grads[0]), ptr(grads[1]), ptr(grads[2]), ptr(grad_scores));
    });
    if (grad_scores.defined()) grads[3] = detail::sum_to(grad_scores, ctx.input(3).shape);
    return grads;
  }

  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Tensor mask = ctx.saved(3);
    if constexpr (Packed) {  // on the split heads, the gradients merged back
      std::vector<Tensor> grads = recorded_grads(heads.split(ctx.saved(0)), heads.split(ctx.saved(1)),
                                                 heads.split(ctx.saved(2)), mask, causal, heads.split(grad_out),
                                                 needs(ctx), ctx.input(3).shape);
      for (std::size_t i = 0; i < 3; ++i) {
        if (grads[i].defined()) grads[i] = heads.merge(grads[i]);
      }
      return grads;
    } else {
      return recorded_grads(ctx.saved(0), ctx.saved(1), ctx.saved(2), mask, causal, grad_out, needs(ctx),
                            ctx.input(3).shape);
    }
  }

  static std::vector<Sample> samples();
};

using ScaledDotProductAttentionOp = AttentionOp<false>;
using ScaledDotProductAttentionHeadsOp = AttentionOp<true>;

template <>
std::vector<Sample> ScaledDotProductAttentionOp::samples() {
  using detail::sample_tensor;
  const auto fn = [](bool with_mask, bool is_causal) {
    return [with_mask, is_causal](const std::vector<Tensor>& in) {
      return scaled_dot_product_attention(in[0], in[1], in[2], with_mask ? in[3] : Tensor(), 0.0,
                                          is_causal);
    };
  };
  const auto bool_mask = [] {
    Tensor m = detail::make_tensor(Shape{3, 4}, DType::boolean);
    for (std::int64_t i = 0; i < 12; ++i) m.data<bool>()[i] = (i * 5) % 7 != 3;
    return m;
  };
  return {
      {"[2, 3, 4] q, [2, 5, 4] k, [2, 5, 3] v",
       {sample_tensor({2, 3, 4}, -1, 1, 1501), sample_tensor({2, 5, 4}, -1, 1, 1502),
        sample_tensor({2, 5, 3}, -1, 1, 1503)},
       fn(false, false)},
      {"float mask [3, 4] broadcast over [2, 2]",
       {sample_tensor({2, 2, 3, 2}, -1, 1, 1504), sample_tensor({2, 2, 4, 2}, -1, 1, 1505),
        sample_tensor({2, 2, 4, 3}, -1, 1, 1506), sample_tensor({3, 4}, -1, 1, 1507)},
       fn(true, false)},
      {"bool mask [3, 4], batch dims broadcast",
       {sample_tensor({2, 3, 2}, -1, 1, 1508), sample_tensor({1, 4, 2}, -1, 1, 1509),
        sample_tensor({4, 2}, -1, 1, 1510), bool_mask()},
       fn(true, false)},
      {"causal, L=4 > S=3",
       {sample_tensor({2, 4, 3}, -1, 1, 1511), sample_tensor({2, 3, 3}, -1, 1, 1512),
        sample_tensor({2, 3, 2}, -1, 1, 1513)},
       fn(false, true)},
  };
}

template <>
std::vector<Sample> ScaledDotProductAttentionHeadsOp::samples() {
  using detail::sample_tensor;
  const auto fn = [](std::int64_t num_heads, bool batch_first, bool with_mask, bool is_causal) {
    return [=](const std::vector<Tensor>& in) {
      return scaled_dot_product_attention_heads(in[0], in[1], in[2], num_heads, batch_first,
                                                with_mask ? in[3] : Tensor(), is_causal);
    };
  };
  Tensor padding = detail::make_tensor(Shape{2, 1, 1, 4}, DType::boolean);  // [N, 1, 1, S]
  for (std::int64_t i = 0; i < 8; ++i) padding.data<bool>()[i] = i != 3 && i != 6;
  return {
      {"[3, 2, 4] q, [5, 2, 4] k, [5, 2, 6] v, 2 heads",
       {sample_tensor({3, 2, 4}, -1, 1, 1521), sample_tensor({5, 2, 4}, -1, 1, 1522),
        sample_tensor({5, 2, 6}, -1, 1, 1523)},
       fn(2, false, false, false)},
      {"batch first, float mask [3, 4] over [2, 2, 3, 4]",
       {sample_tensor({2, 3, 4}, -1, 1, 1524), sample_tensor({2, 4, 4}, -1, 1, 1525),
        sample_tensor({2, 4, 2}, -1, 1, 1526), sample_tensor({3, 4}, -1, 1, 1527)},
       fn(2, true, true, false)},
      {"bool padding mask [2, 1, 1, 4], 3 heads",
       {sample_tensor({3, 2, 3}, -1, 1, 1528), sample_tensor({4, 2, 3}, -1, 1, 1529),
        sample_tensor({4, 2, 3}, -1, 1, 1530), padding},
       fn(3, false, true, false)},
      {"causal, L=4 > S=3",
       {sample_tensor({4, 2, 4}, -1, 1, 1531), sample_tensor({3, 2, 4}, -1, 1, 1532),
        sample_tensor({3, 2, 2}, -1, 1, 1533)},
       fn(2, false, false, true)},
  };
}

void check_arguments(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                     double dropout_p, bool is_causal) {
  detail::check_floating(kOp, q, "query");
  detail::check_floating(kOp, k, "key");
  detail::check_floating(kOp, v, "value");
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) {
    throw DTypeError(fmt::format("{}: query, key and value must share a dtype, got {} {}, {} {} "
                                 "and {} {}", kOp, q.dtype(), q.shape(), k.dtype(), k.shape(),
                                 v.dtype(), v.shape()));
  }
  if (q.dim() < 2 || k.dim() < 2 || v.dim() < 2) {
    throw ShapeError(fmt::format("{}: query [..., L, E], key [..., S, E] and value [..., S, Ev] "
                                 "need at least 2 dims, got {}, {} and {}", kOp, q.shape(),
                                 k.shape(), v.shape()));
  }
  const std::int64_t E = q.shape()[q.dim() - 1];
  if (k.shape()[k.dim() - 1] != E) {
    throw ShapeError(fmt::format("{}: key's embedding size {} must equal query's {} (query {} "
                                 "[..., L, E], key {} [..., S, E])", kOp, k.shape()[k.dim() - 1],
                                 E, q.shape(), k.shape()));
  }
  if (v.shape()[v.dim() - 2] != k.shape()[k.dim() - 2]) {
    throw ShapeError(fmt::format("{}: value's length {} must equal key's {} (key {} [..., S, E], "
                                 "value {} [..., S, Ev])", kOp, v.shape()[v.dim() - 2],
                                 k.shape()[k.dim() - 2], k.shape(), v.shape()));
  }
  if (!(dropout_p >= 0.0 && dropout_p <= 1.0)) {
    throw ValueError(fmt::format("{}: dropout_p must be in [0, 1], got {}", kOp, dropout_p));
  }
  if (!mask.defined()) return;
  if (is_causal) {
    throw ValueError(fmt::format("{}: pass either attn_mask ({}) or is_causal=true, not both",
                                 kOp, mask.shape()));
  }
  if (mask.dtype() != DType::boolean && mask.dtype() != q.dtype()) {
    throw DTypeError(fmt::format("{}: attn_mask must be bool (true = attend) or the query's dtype "
                                 "{} (added to the scores), got {} {}", kOp, q.dtype(),
                                 mask.dtype(), mask.shape()));
  }
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& query, const Tensor& key, const Tensor& value,
                                    const Tensor& attn_mask, double dropout_p, bool is_causal) {
  check_arguments(query, key, value, attn_mask, dropout_p, is_causal);
  Shape batch;
  try {
    batch = detail::broadcast_shapes(kOp, detail::broadcast_shapes(kOp, batch_dims(query),
                                                                   batch_dims(key)),
                                     batch_dims(value));
  } catch (const ShapeError&) {
    throw ShapeError(fmt::format("{}: the batch dims of query {}, key {} and value {} do not "
                                 "broadcast", kOp, query.shape(), key.shape(), value.shape()));
  }
  const auto expanded = [&batch](const Tensor& t) {
    Shape s = batch;
    s.push_back(t.shape()[t.dim() - 2]);
    s.push_back(t.shape()[t.dim() - 1]);
    return t.shape() == s ? t : expand(t, s);
  };
  const Tensor q = expanded(query), k = expanded(key), v = expanded(value);
  if (attn_mask.defined()) {
    Shape scores = batch;
    scores.push_back(q.shape()[q.dim() - 2]);
    scores.push_back(k.shape()[k.dim() - 2]);
    bool fits = attn_mask.dim() <= scores.size();
    for (std::size_t d = 0; fits && d < attn_mask.dim(); ++d) {
      const std::int64_t m = attn_mask.shape()[attn_mask.dim() - 1 - d];
      fits = m == 1 || m == scores[scores.size() - 1 - d];
    }
    if (!fits) {
      throw ShapeError(fmt::format("{}: attn_mask {} must broadcast to the scores [..., L, S] = {} "
                                   "(query {}, key {})", kOp, attn_mask.shape(), scores,
                                   query.shape(), key.shape()));
    }
  }
  if (dropout_p > 0.0) {
    return matmul(dropout(composite_probabilities(q, k, attn_mask, is_causal), dropout_p, true), v);
  }
  return apply(ScaledDotProductAttentionOp{is_causal, {}}, {q, k, v, attn_mask});
}

Tensor scaled_dot_product_attention_heads(const Tensor& query, const Tensor& key, const Tensor& value,
                                          std::int64_t num_heads, bool batch_first, const Tensor& attn_mask,
                                          bool is_causal) {
  constexpr std::string_view op = ScaledDotProductAttentionHeadsOp::name;
  detail::check_floating(op, query, "query");
  detail::check_floating(op, key, "key");
  detail::check_floating(op, value, "value");
  if (key.dtype() != query.dtype() || value.dtype() != query.dtype()) {
    throw DTypeError(fmt::format("{}: query, key and value must share a dtype, got {}, {} and {}", op,
                                 query.dtype(), key.dtype(), value.dtype()));
  }
  const char* layout = batch_first ? "[N, L, H·E], [N, S, H·E] and [N, S, H·Ev]" : "[L, N, H·E], [S, N, H·E] and [S, N, H·Ev]";
  if (num_heads <= 0) throw ValueError(fmt::format("{}: num_heads must be positive, got {}", op, num_heads));
  const Heads heads{num_heads, batch_first};
  if (query.dim() != 3 || key.dim() != 3 || value.dim() != 3 || key.shape()[2] != query.shape()[2] ||
      query.shape()[2] % num_heads != 0 || value.shape()[2] % num_heads != 0 || heads.batch(key) != heads.batch(query) ||
      heads.batch(value) != heads.batch(query) || heads.length(value) != heads.length(key)) {
    throw ShapeError(fmt::format("{}: query, key and value must be {} with H = num_heads = {} dividing the "
                                 "embeddings, got {}, {} and {}", op, layout, num_heads, query.shape(), key.shape(),
                                 value.shape()));
  }
  const Shape scores{heads.batch(query), num_heads, heads.length(query), heads.length(key)};
  if (attn_mask.defined()) {
    if (is_causal) {
      throw ValueError(fmt::format("{}: pass either attn_mask ({}) or is_causal=true, not both", op, attn_mask.shape()));
    }
    if (attn_mask.dtype() != DType::boolean && attn_mask.dtype() != query.dtype()) {
      throw DTypeError(fmt::format("{}: attn_mask must be bool (true = attend) or the query's dtype {}, got {} {}", op,
                                   query.dtype(), attn_mask.dtype(), attn_mask.shape()));
    }
    bool fits = attn_mask.dim() <= scores.size();
    for (std::size_t d = 0; fits && d < attn_mask.dim(); ++d) {
      const std::int64_t m = attn_mask.shape()[attn_mask.dim() - 1 - d];
      fits = m == 1 || m == scores[scores.size() - 1 - d];
    }
    if (!fits) {
      throw ShapeError(fmt::format("{}: attn_mask {} must broadcast to the scores [N, H, L, S] = {}", op,
                                   attn_mask.shape(), scores));
    }
  }
  return apply(ScaledDotProductAttentionHeadsOp{is_causal, heads}, {query, key, value, attn_mask});
}

TAPEGRAD_BUILTIN_OPS(attention, ScaledDotProductAttentionOp, ScaledDotProductAttentionHeadsOp)

}  // namespace tapegrad
