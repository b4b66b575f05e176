// MultiheadAttention and TransformerEncoderLayer with PyTorch 1.13's parameters, submodule
// names and forward (torch.nn.functional.multi_head_attention_forward without bias_k/bias_v
// and add_zero_attn). The heads run through scaled_dot_product_attention_heads on the
// projections as they are (no copies to split and merge the heads), except when the caller
// asks for the attention weights: then the probabilities are made by the composite (softmax of
// the scores) so that they can be returned; with dropout, scaled_dot_product_attention's.
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"

namespace tapegrad::nn {
namespace {

constexpr const char* kMha = "MultiheadAttention";

/// A mask as scaled_dot_product_attention takes it: bool true = attend, or floating, added.
/// MultiheadAttention's bool masks say true = ignore.
Tensor attend_mask(const Tensor& ignore) {
  return ignore.dtype() == DType::boolean ? logical_not(ignore) : ignore;
}

/// An additive mask: 0 / -inf from a bool "ignore" mask, a floating mask as it is.
Tensor additive_mask(const Tensor& ignore, DType dtype) {
  if (ignore.dtype() != DType::boolean) return ignore;
  return masked_fill(zeros(ignore.shape(), dtype), ignore, -std::numeric_limits<double>::infinity());
}

void check_mask_dtype(const char* what, const Tensor& mask, const Tensor& query) {
  if (mask.dtype() != DType::boolean && mask.dtype() != query.dtype()) {
    throw DTypeError(fmt::format("{}: {} must be bool (true = ignore) or the query's dtype {} "
                                 "(added to the scores), got {} {}", kMha, what, query.dtype(),
                                 mask.dtype(), mask.shape()));
  }
}

}  // namespace

MultiheadAttention::MultiheadAttention(std::int64_t embed_dim, std::int64_t num_heads,
                                       const MultiheadAttentionOptions& options)
    : embed_dim_(embed_dim), num_heads_(num_heads), options_(options) {
  if (embed_dim <= 0 || num_heads <= 0) {
    throw ValueError(fmt::format("{}: embed_dim and num_heads must be positive, got {} and {}",
                                 kMha, embed_dim, num_heads));
  }
  if (embed_dim % num_heads != 0) {
    throw ValueError(fmt::format("{}: embed_dim={} must be divisible by num_heads={}", kMha,
                                 embed_dim, num_heads));
  }
  for (const auto& [what, dim] : {std::pair{"kdim", options.kdim}, std::pair{"vdim", options.vdim}}) {
    if (dim && *dim != embed_dim) {
      throw ValueError(fmt::format("{}: {}={} differs from embed_dim={}; only kdim = vdim = "
                                   "embed_dim is supported", kMha, what, *dim, embed_dim));
    }
  }
  if (!(options.dropout >= 0.0 && options.dropout <= 1.0)) {
    throw ValueError(fmt::format("{}: dropout must be in [0, 1], got {}", kMha, options.dropout));
  }
  in_proj_weight_ = &register_parameter("in_proj_weight", empty({3 * embed_dim, embed_dim}));
  xavier_uniform_(*in_proj_weight_);
  if (options.bias) in_proj_bias_ = &register_parameter("in_proj_bias", zeros({3 * embed_dim}));
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, options.bias));
  if (options.bias) {
    NoGradGuard no_grad;
    out_proj_->bias().zero_();
  }
}

std::tuple<Tensor, Tensor> MultiheadAttention::forward(const Tensor& query, const Tensor& key,
                                                       const Tensor& value,
                                                       const Tensor& key_padding_mask,
                                                       bool need_weights, const Tensor& attn_mask,
                                                       bool average_attn_weights) {
  if (!query.defined() || !key.defined() || !value.defined()) {
    throw ValueError(fmt::format("{}: query, key and value must be defined tensors", kMha));
  }
  const std::int64_t E = embed_dim_, H = num_heads_, head_dim = E / H;
  const bool batched = query.dim() == 3;
  if ((query.dim() != 2 && query.dim() != 3) || key.dim() != query.dim() ||
      value.dim() != query.dim() || query.shape().back() != E || key.shape().back() != E ||
      value.shape().back() != E) {
    throw ShapeError(fmt::format("{}: query, key and value must be {} with embed_dim E={}, got "
                                 "query {}, key {}, value {}", kMha,
                                 options_.batch_first ? "[N, L, E], [N, S, E], [N, S, E]"
                                                      : "[L, N, E], [S, N, E], [S, N, E]",
                                 E, query.shape(), key.shape(), value.shape()));
  }
  // Everything below runs batch first, [N, L, E] (an unbatched [L, E] as [1, L, E]). Sequence-
  // first inputs are transposed once each, and once in all for self-attention (query, key and
  // value one tensor), so that each batch index's rows are contiguous for the heads: reading
  // them strided from [L, N, E] in the forward and again in the backward moved three times as
  // much memory.
  const auto to_nle = [&](const Tensor& t) {
    return !batched ? unsqueeze(t, 0) : options_.batch_first ? t : transpose(t, 0, 1);
  };
  const Tensor q_in = to_nle(query);
  const Tensor k_in = key.impl() == query.impl() ? q_in : to_nle(key);
  const Tensor v_in = value.impl() == key.impl() ? k_in : value.impl() == query.impl() ? q_in : to_nle(value);
  const std::int64_t N = q_in.shape()[0], L = q_in.shape()[1], S = k_in.shape()[1];
  if (k_in.shape() != v_in.shape() || k_in.shape()[0] != N) {
    throw ShapeError(fmt::format("{}: key {} and value {} must have one shape with query's batch "
                                 "size {} (query {})", kMha, key.shape(), value.shape(), N,
                                 query.shape()));
  }
  // The masks, as [N, H, L, S]-broadcastable tensors with MultiheadAttention's meaning.
  Tensor padding, scores_mask;
  if (key_padding_mask.defined()) {
    check_mask_dtype("key_padding_mask", key_padding_mask, query);
    const Shape want = batched ? Shape{N, S} : Shape{S};
    if (key_padding_mask.shape() != want) {
      throw ShapeError(fmt::format("{}: key_padding_mask must be {} ([N, S]), got {}", kMha,
                                   want, key_padding_mask.shape()));
    }
    padding = reshape(key_padding_mask, {N, 1, 1, S});
  }
  if (attn_mask.defined()) {
    check_mask_dtype("attn_mask", attn_mask, query);
    if (attn_mask.shape() == Shape{L, S}) {
      scores_mask = attn_mask;
    } else if (attn_mask.shape() == Shape{N * H, L, S}) {
      scores_mask = reshape(attn_mask, {N, H, L, S});
    } else {
      throw ShapeError(fmt::format("{}: attn_mask must be [L, S] = {} or [N·num_heads, L, S] = {}, "
                                   "got {}", kMha, Shape{L, S}, Shape{N * H, L, S},
                                   attn_mask.shape()));
    }
  }
  Tensor mask;  // scaled_dot_product_attention's: bool true = attend, or added
  if (padding.defined() && scores_mask.defined()) {
    mask = padding.dtype() == DType::boolean && scores_mask.dtype() == DType::boolean
               ? logical_not(logical_or(scores_mask, padding))
               : additive_mask(scores_mask, query.dtype()) + additive_mask(padding, query.dtype());
  } else if (padding.defined() || scores_mask.defined()) {
    mask = attend_mask(padding.defined() ? padding : scores_mask);
  }

  const Tensor& w = *in_proj_weight_;
  const Tensor& b = *in_proj_bias_;
  const auto project = [&](const Tensor& x, std::int64_t part) {  // [N, len, E]
    return linear(x, narrow(w, 0, part * E, E), b.defined() ? narrow(b, 0, part * E, E) : Tensor());
  };
  const Tensor qp = project(q_in, 0), kp = project(k_in, 1), vp = project(v_in, 2);
  const double dropout_p = is_training() ? options_.dropout : 0.0;
  Tensor merged, weights;  // merged: the heads' outputs side by side, in the input's layout
  if (!need_weights && dropout_p == 0.0) {  // the heads read and written in place
    merged = scaled_dot_product_attention_heads(qp, kp, vp, H, true, mask);
  } else {
    const auto split = [&](const Tensor& y) {  // -> [N, H, len, hd]
      return permute(reshape(y, {y.shape()[0], y.shape()[1], H, head_dim}), {0, 2, 1, 3});
    };
    const Tensor q = split(qp), k = split(kp), v = split(vp);
    Tensor attended;
    if (need_weights) {
      Tensor scores = matmul(q, transpose(k, -2, -1)) * (1.0 / std::sqrt(static_cast<double>(head_dim)));
      if (mask.defined()) {
        scores = mask.dtype() == DType::boolean
                     ? masked_fill(scores, logical_not(mask), -std::numeric_limits<double>::infinity())
                     : scores + mask;
      }
      weights = dropout(softmax(scores, -1), dropout_p, true);
      attended = matmul(weights, v);
      if (average_attn_weights) weights = sum(weights, {1}) * (1.0 / static_cast<double>(H));
      if (!batched) weights = squeeze(weights, 0);
    } else {
      attended = scaled_dot_product_attention(q, k, v, mask, dropout_p);
    }
    merged = reshape(permute(attended, {0, 2, 1, 3}), {N, L, E});  // the heads side by side in each row
  }
  Tensor out = out_proj_->forward(merged);
  out = !batched ? squeeze(out, 0) : options_.batch_first ? out : transpose(out, 0, 1);
  return {out, weights};
}

TransformerEncoderLayer::TransformerEncoderLayer(std::int64_t d_model, std::int64_t nhead,
                                                 const TransformerEncoderLayerOptions& options)
    : options_(options) {
  if (options.dim_feedforward <= 0) {
    throw ValueError(fmt::format("TransformerEncoderLayer: dim_feedforward must be positive, got {}",
                                 options.dim_feedforward));
  }
  self_attn_ = register_module(
      "self_attn", std::make_shared<MultiheadAttention>(
                       d_model, nhead, MultiheadAttentionOptions{.dropout = options.dropout,
                                                                 .batch_first = options.batch_first}));
  linear1_ = register_module("linear1", std::make_shared<Linear>(d_model, options.dim_feedforward));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(options.dropout));
  linear2_ = register_module("linear2", std::make_shared<Linear>(options.dim_feedforward, d_model));
  const LayerNormOptions norm{.eps = options.layer_norm_eps};
  norm1_ = register_module("norm1", std::make_shared<LayerNorm>(Shape{d_model}, norm));
  norm2_ = register_module("norm2", std::make_shared<LayerNorm>(Shape{d_model}, norm));
  dropout1_ = register_module("dropout1", std::make_shared<Dropout>(options.dropout));
  dropout2_ = register_module("dropout2", std::make_shared<Dropout>(options.dropout));
}

Tensor TransformerEncoderLayer::forward(const Tensor& src) { return forward(src, Tensor(), Tensor()); }

Tensor TransformerEncoderLayer::forward(const Tensor& src, const Tensor& src_mask,
                                        const Tensor& src_key_padding_mask) {
  const auto self_attention = [&](const Tensor& x) {
    return dropout1_->forward(
        std::get<0>(self_attn_->forward(x, x, x, src_key_padding_mask, false, src_mask)));
  };
  const auto feed_forward = [&](const Tensor& x) {
    const Tensor h = linear1_->forward(x);
    const Tensor a = options_.activation == TransformerActivation::gelu ? gelu(h) : relu(h);
    return dropout2_->forward(linear2_->forward(dropout_->forward(a)));
  };
  Tensor x = src;
  if (options_.norm_first) {
    x = x + self_attention(norm1_->forward(x));
    return x + feed_forward(norm2_->forward(x));
  }
  x = norm1_->forward(x + self_attention(x));
  return norm2_->forward(x + feed_forward(x));
}

std::shared_ptr<MultiheadAttention> multihead_attention(std::int64_t embed_dim,
                                                        std::int64_t num_heads,
                                                        const MultiheadAttentionOptions& options) {
  return std::make_shared<MultiheadAttention>(embed_dim, num_heads, options);
}

std::shared_ptr<TransformerEncoderLayer> transformer_encoder_layer(
    std::int64_t d_model, std::int64_t nhead, const TransformerEncoderLayerOptions& options) {
  return std::make_shared<TransformerEncoderLayer>(d_model, nhead, options);
}

}  // namespace tapegrad::nn
