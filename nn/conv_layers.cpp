// The layers over conv_transpose2d and the 1-D convolution and pools: ConvTranspose2d,
// Conv1d, MaxPool1d, AvgPool1d, with libtorch's parameter names and layouts and PyTorch's
// default initialisation.
#include <cmath>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"
#include "nn/layer_init.hpp"

namespace tapegrad::nn {
namespace {

/// The channel and kernel checks both conv layers share; `layer` names the class.
void check_conv(const char* layer, std::int64_t in_channels, std::int64_t out_channels, std::int64_t groups,
                std::initializer_list<std::int64_t> kernel) {
  for (const auto& [what, v] : {std::pair{"in_channels", in_channels}, std::pair{"out_channels", out_channels},
                                std::pair{"groups", groups}}) {
    if (v <= 0) throw ValueError(fmt::format("{}: {} must be positive, got {}", layer, what, v));
  }
  for (const std::int64_t k : kernel) {
    if (k <= 0) throw ValueError(fmt::format("{}: kernel_size must be positive, got {}", layer, k));
  }
  if (in_channels % groups != 0 || out_channels % groups != 0) {
    throw ValueError(fmt::format("{}: groups={} must divide in_channels={} and out_channels={}", layer, groups,
                                 in_channels, out_channels));
  }
}

}  // namespace

ConvTranspose2d::ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, Size2 kernel_size,
                                 const ConvTranspose2dOptions& options)
    : options_(options) {
  check_conv("ConvTranspose2d", in_channels, out_channels, options.groups, {kernel_size[0], kernel_size[1]});
  weight_ = &register_parameter("weight", empty({in_channels, out_channels / options.groups, kernel_size[0],
                                                 kernel_size[1]}));
  bias_ = options.bias ? &register_parameter("bias", empty({out_channels})) : &no_bias_;
  detail::default_init(*weight_, bias_);
}

Tensor ConvTranspose2d::forward(const Tensor& x) { return tapegrad::conv_transpose2d(x, *weight_, *bias_, options_); }

Conv1d::Conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
               const Conv1dOptions& options)
    : options_(options) {
  check_conv("Conv1d", in_channels, out_channels, options.groups, {kernel_size});
  weight_ = &register_parameter("weight", empty({out_channels, in_channels / options.groups, kernel_size}));
  bias_ = options.bias ? &register_parameter("bias", empty({out_channels})) : &no_bias_;
  detail::default_init(*weight_, bias_);
}

Tensor Conv1d::forward(const Tensor& x) { return tapegrad::conv1d(x, *weight_, *bias_, options_); }

Tensor MaxPool1d::forward(const Tensor& x) { return tapegrad::max_pool1d(x, options_); }
Tensor AvgPool1d::forward(const Tensor& x) { return tapegrad::avg_pool1d(x, options_); }

std::shared_ptr<ConvTranspose2d> conv_transpose2d(std::int64_t in_channels, std::int64_t out_channels,
                                                  Size2 kernel_size, const ConvTranspose2dOptions& options) {
  return std::make_shared<ConvTranspose2d>(in_channels, out_channels, kernel_size, options);
}
std::shared_ptr<Conv1d> conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
                               const Conv1dOptions& options) {
  return std::make_shared<Conv1d>(in_channels, out_channels, kernel_size, options);
}
std::shared_ptr<MaxPool1d> max_pool1d(const MaxPool1dOptions& options) { return std::make_shared<MaxPool1d>(options); }
std::shared_ptr<AvgPool1d> avg_pool1d(const AvgPool1dOptions& options) { return std::make_shared<AvgPool1d>(options); }

}  // namespace tapegrad::nn
