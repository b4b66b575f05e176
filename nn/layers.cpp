// The layers and losses: thin modules over the public ops, holding their parameters and
// PyTorch's default initialisation.
#include <cmath>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"
#include "nn/layer_init.hpp"

namespace tapegrad::nn {
namespace {

void check_positive(const char* layer, const char* what, std::int64_t v) {
  if (v <= 0) throw ValueError(fmt::format("{}: {} must be positive, got {}", layer, what, v));
}

void check_eps(const char* layer, double eps) {
  if (!(eps >= 0.0 && std::isfinite(eps))) {
    throw ValueError(fmt::format("{}: eps must be finite and >= 0, got {}", layer, eps));
  }
}

}  // namespace

void detail::default_init(Tensor& weight, Tensor* bias) {
  kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias != nullptr && bias->defined()) {
    const auto fan_in = fan_in_and_fan_out(weight).first;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    uniform_(*bias, -bound, bound);
  }
}

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias) {
  check_positive("Linear", "in_features", in_features);
  check_positive("Linear", "out_features", out_features);
  weight_ = &register_parameter("weight", empty({out_features, in_features}));
  bias_ = bias ? &register_parameter("bias", empty({out_features})) : &no_bias_;
  detail::default_init(*weight_, bias_);
}

Tensor Linear::forward(const Tensor& x) { return tapegrad::linear(x, *weight_, *bias_); }

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
                     std::optional<std::int64_t> padding_idx) {
  check_positive("Embedding", "num_embeddings", num_embeddings);
  check_positive("Embedding", "embedding_dim", embedding_dim);
  if (padding_idx && (*padding_idx < -num_embeddings || *padding_idx >= num_embeddings)) {
    throw ValueError(fmt::format("Embedding: padding_idx {} is out of range for {} embeddings "
                                 "(valid: {} to {})", *padding_idx, num_embeddings,
                                 -num_embeddings, num_embeddings - 1));
  }
  if (padding_idx && *padding_idx < 0) padding_idx = *padding_idx + num_embeddings;
  padding_idx_ = padding_idx;
  weight_ = &register_parameter("weight", empty({num_embeddings, embedding_dim}));
  normal_(*weight_);
  if (padding_idx_) {
    // PyTorch zeroes the padding row at init; it stays zero because it gets no gradient.
    Tensor keep = ones({num_embeddings, 1}, DType::f32);  // parameters start as f32
    keep.data<float>()[*padding_idx_] = 0.0F;
    NoGradGuard no_grad;
    weight_->copy_(*weight_ * keep);
  }
}

Tensor Embedding::forward(const Tensor& ids) { return tapegrad::embedding(ids, *weight_, padding_idx_); }

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, Size2 kernel_size,
               const Conv2dOptions& options)
    : options_(options) {
  check_positive("Conv2d", "in_channels", in_channels);
  check_positive("Conv2d", "out_channels", out_channels);
  check_positive("Conv2d", "groups", options.groups);
  check_positive("Conv2d", "kernel height", kernel_size[0]);
  check_positive("Conv2d", "kernel width", kernel_size[1]);
  if (in_channels % options.groups != 0 || out_channels % options.groups != 0) {
    throw ValueError(fmt::format("Conv2d: groups={} must divide in_channels={} and "
                                 "out_channels={}", options.groups, in_channels, out_channels));
  }
  weight_ = &register_parameter("weight", empty({out_channels, in_channels / options.groups,
                                                 kernel_size[0], kernel_size[1]}));
  bias_ = options.bias ? &register_parameter("bias", empty({out_channels})) : &no_bias_;
  detail::default_init(*weight_, bias_);
}

Tensor Conv2d::forward(const Tensor& x) {
  return tapegrad::conv2d(x, *weight_, *bias_, options_);
}

MaxPool2d::MaxPool2d(Size2 kernel_size) : options_{.kernel_size = kernel_size} {}
MaxPool2d::MaxPool2d(const MaxPool2dOptions& options) : options_(options) {}
Tensor MaxPool2d::forward(const Tensor& x) { return tapegrad::max_pool2d(x, options_); }

AvgPool2d::AvgPool2d(Size2 kernel_size) : options_{.kernel_size = kernel_size} {}
AvgPool2d::AvgPool2d(const AvgPool2dOptions& options) : options_(options) {}
Tensor AvgPool2d::forward(const Tensor& x) { return tapegrad::avg_pool2d(x, options_); }

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) { return tapegrad::adaptive_avg_pool2d(x, output_size_); }
Tensor AdaptiveMaxPool2d::forward(const Tensor& x) { return tapegrad::adaptive_max_pool2d(x, output_size_); }

Tensor ReLU::forward(const Tensor& x) { return tapegrad::relu(x); }
Tensor Sigmoid::forward(const Tensor& x) { return tapegrad::sigmoid(x); }
Tensor Tanh::forward(const Tensor& x) { return tapegrad::tanh(x); }
Tensor GELU::forward(const Tensor& x) { return tapegrad::gelu(x, approximate_); }
Tensor SiLU::forward(const Tensor& x) { return tapegrad::silu(x); }
Tensor LeakyReLU::forward(const Tensor& x) { return tapegrad::leaky_relu(x, negative_slope_); }
Tensor ELU::forward(const Tensor& x) { return tapegrad::elu(x, alpha_); }
Tensor Softplus::forward(const Tensor& x) { return tapegrad::softplus(x, beta_, threshold_); }

Flatten::Flatten(std::int64_t start_dim, std::int64_t end_dim)
    : start_dim_(start_dim), end_dim_(end_dim) {}
Tensor Flatten::forward(const Tensor& x) { return tapegrad::flatten(x, start_dim_, end_dim_); }

Dropout::Dropout(double p) : p_(p) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw ValueError(fmt::format("Dropout: probability p must be in [0, 1], got {}", p));
  }
}
Tensor Dropout::forward(const Tensor& x) { return tapegrad::dropout(x, p_, is_training()); }

BatchNormBase::BatchNormBase(const char* layer, std::int64_t num_features,
                             const BatchNormOptions& options, Functional functional)
    : options_(options), functional_(functional) {
  check_positive(layer, "num_features", num_features);
  if (options.momentum && !(*options.momentum >= 0.0 && *options.momentum <= 1.0)) {
    throw ValueError(fmt::format("{}: momentum must be in [0, 1], got {}", layer,
                                 *options.momentum));
  }
  check_eps(layer, options.eps);
  if (options.affine) {
    weight_ = &register_parameter("weight", ones({num_features}));
    bias_ = &register_parameter("bias", zeros({num_features}));
  }
  if (options.track_running_stats) {
    running_mean_ = &register_buffer("running_mean", zeros({num_features}));
    running_var_ = &register_buffer("running_var", ones({num_features}));
    num_batches_tracked_ = &register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
}

Tensor BatchNormBase::forward(const Tensor& x) {
  const bool use_batch_stats = is_training() || !options_.track_running_stats;
  double momentum = options_.momentum.value_or(0.0);
  if (is_training() && options_.track_running_stats) {
    const auto count = num_batches_tracked_->item<std::int64_t>() + 1;
    num_batches_tracked_->fill_(static_cast<double>(count));
    if (!options_.momentum) momentum = 1.0 / static_cast<double>(count);
  }
  // Running statistics are passed only when they are to be used or updated.
  const bool pass_stats = options_.track_running_stats;
  return functional_(x, pass_stats ? *running_mean_ : Tensor(),
                     pass_stats ? *running_var_ : Tensor(), *weight_, *bias_, use_batch_stats,
                     momentum, options_.eps);
}

BatchNorm1d::BatchNorm1d(std::int64_t num_features, const BatchNormOptions& options)
    : BatchNormBase("BatchNorm1d", num_features, options, &tapegrad::batch_norm) {}
BatchNorm2d::BatchNorm2d(std::int64_t num_features, const BatchNormOptions& options)
    : BatchNormBase("BatchNorm2d", num_features, options, &tapegrad::batch_norm2d) {}

LayerNorm::LayerNorm(const Shape& normalized_shape, const LayerNormOptions& options)
    : normalized_shape_(normalized_shape), options_(options) {
  if (normalized_shape.empty()) {
    throw ValueError("LayerNorm: normalized_shape must have at least one dim, got []");
  }
  for (const std::int64_t d : normalized_shape) {
    if (d <= 0) {
      throw ValueError(fmt::format("LayerNorm: normalized_shape {} must hold positive sizes",
                                   normalized_shape));
    }
  }
  check_eps("LayerNorm", options.eps);
  if (options.elementwise_affine) {
    weight_ = &register_parameter("weight", ones(normalized_shape));
    bias_ = &register_parameter("bias", zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  return tapegrad::layer_norm(x, normalized_shape_, *weight_, *bias_, options_.eps);
}

GroupNorm::GroupNorm(std::int64_t num_groups, std::int64_t num_channels,
                     const GroupNormOptions& options)
    : num_groups_(num_groups), options_(options) {
  check_positive("GroupNorm", "num_groups", num_groups);
  check_positive("GroupNorm", "num_channels", num_channels);
  if (num_channels % num_groups != 0) {
    throw ValueError(fmt::format("GroupNorm: num_channels={} must be divisible by num_groups={}",
                                 num_channels, num_groups));
  }
  check_eps("GroupNorm", options.eps);
  if (options.affine) {
    weight_ = &register_parameter("weight", ones({num_channels}));
    bias_ = &register_parameter("bias", zeros({num_channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  return tapegrad::group_norm(x, num_groups_, *weight_, *bias_, options_.eps);
}

// ---- factories -------------------------------------------------------------------------------

std::shared_ptr<Linear> linear(std::int64_t in_features, std::int64_t out_features, bool bias) {
  return std::make_shared<Linear>(in_features, out_features, bias);
}
std::shared_ptr<Embedding> embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
                                     std::optional<std::int64_t> padding_idx) {
  return std::make_shared<Embedding>(num_embeddings, embedding_dim, padding_idx);
}
std::shared_ptr<Conv2d> conv2d(std::int64_t in_channels, std::int64_t out_channels,
                               Size2 kernel_size, const Conv2dOptions& options) {
  return std::make_shared<Conv2d>(in_channels, out_channels, kernel_size, options);
}
std::shared_ptr<MaxPool2d> max_pool2d(Size2 kernel_size) {
  return std::make_shared<MaxPool2d>(kernel_size);
}
std::shared_ptr<MaxPool2d> max_pool2d(const MaxPool2dOptions& options) {
  return std::make_shared<MaxPool2d>(options);
}
std::shared_ptr<AvgPool2d> avg_pool2d(Size2 kernel_size) {
  return std::make_shared<AvgPool2d>(kernel_size);
}
std::shared_ptr<AvgPool2d> avg_pool2d(const AvgPool2dOptions& options) {
  return std::make_shared<AvgPool2d>(options);
}
std::shared_ptr<AdaptiveAvgPool2d> adaptive_avg_pool2d(Size2 output_size) {
  return std::make_shared<AdaptiveAvgPool2d>(output_size);
}
std::shared_ptr<AdaptiveMaxPool2d> adaptive_max_pool2d(Size2 output_size) {
  return std::make_shared<AdaptiveMaxPool2d>(output_size);
}
std::shared_ptr<ReLU> relu() { return std::make_shared<ReLU>(); }
std::shared_ptr<Sigmoid> sigmoid() { return std::make_shared<Sigmoid>(); }
std::shared_ptr<Tanh> tanh() { return std::make_shared<Tanh>(); }
std::shared_ptr<GELU> gelu(GeluApproximate approximate) { return std::make_shared<GELU>(approximate); }
std::shared_ptr<SiLU> silu() { return std::make_shared<SiLU>(); }
std::shared_ptr<LeakyReLU> leaky_relu(double negative_slope) {
  return std::make_shared<LeakyReLU>(negative_slope);
}
std::shared_ptr<ELU> elu(double alpha) { return std::make_shared<ELU>(alpha); }
std::shared_ptr<Softplus> softplus(double beta, double threshold) {
  return std::make_shared<Softplus>(beta, threshold);
}
std::shared_ptr<Flatten> flatten(std::int64_t start_dim, std::int64_t end_dim) {
  return std::make_shared<Flatten>(start_dim, end_dim);
}
std::shared_ptr<Dropout> dropout(double p) { return std::make_shared<Dropout>(p); }
std::shared_ptr<BatchNorm1d> batch_norm1d(std::int64_t num_features,
                                          const BatchNormOptions& options) {
  return std::make_shared<BatchNorm1d>(num_features, options);
}
std::shared_ptr<BatchNorm2d> batch_norm2d(std::int64_t num_features,
                                          const BatchNormOptions& options) {
  return std::make_shared<BatchNorm2d>(num_features, options);
}
std::shared_ptr<LayerNorm> layer_norm(const Shape& normalized_shape,
                                      const LayerNormOptions& options) {
  return std::make_shared<LayerNorm>(normalized_shape, options);
}
std::shared_ptr<GroupNorm> group_norm(std::int64_t num_groups, std::int64_t num_channels,
                                      const GroupNormOptions& options) {
  return std::make_shared<GroupNorm>(num_groups, num_channels, options);
}

// ---- losses ----------------------------------------------------------------------------------

Tensor CrossEntropyLoss::operator()(const Tensor& logits, const Tensor& target) const {
  return tapegrad::cross_entropy(logits, target, reduction);
}
Tensor NLLLoss::operator()(const Tensor& logp, const Tensor& target) const {
  return tapegrad::nll_loss(logp, target, reduction);
}
Tensor MSELoss::operator()(const Tensor& input, const Tensor& target) const {
  return tapegrad::mse_loss(input, target, reduction);
}

}  // namespace tapegrad::nn
