// conv1d, max_pool1d, avg_pool1d: the 2-D ops on a height of 1. x [N, C, L] (or [C, L]) is
// read as [N, C, 1, L] (or [C, 1, L]); the kernel, stride, padding and dilation act on the
// width only. The arguments are checked here first, so that an error names the 1-D op the
// user called and the 1-D shapes; the 2-D op then cannot fail.
#include "ops/detail/elementwise.hpp"
#include "ops/kernels/window.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

void check_input(std::string_view op, const Tensor& x, const char* expected) {
  detail::check_floating(op, x, "input");
  if (x.dim() != 2 && x.dim() != 3) {
    throw ShapeError(fmt::format("{}: expects input {} or its unbatched form without N, got {} (rank {})", op,
                                 expected, x.shape(), x.dim()));
  }
}

/// Checks one window axis of length L (the input's last dim) and returns its output length.
std::int64_t window_length(std::string_view op, const Tensor& x, detail::Axis a, bool ceil_mode) {
  detail::check_window_params(op, "length", a);
  const std::int64_t out = detail::window_count(a, ceil_mode);
  if (out <= 0) {
    throw ShapeError(fmt::format("{}: output length would be {}: (L={} + 2*pad={} - dilation={}*(kernel={}-1) - 1)"
                                 "/stride={} + 1, for input {}", op, out, a.in, a.pad_begin, a.dilation, a.kernel,
                                 a.stride, x.shape()));
  }
  return out;
}

/// x with a height of 1 inserted before L, and the way back.
Tensor to_2d(const Tensor& x) { return unsqueeze(x, -2); }
Tensor to_1d(const Tensor& y) { return squeeze(y, -2); }

void check_pool(std::string_view op, const Tensor& x, std::int64_t kernel, std::int64_t stride,
                std::int64_t padding, std::int64_t dilation, bool ceil_mode) {
  check_input(op, x, "[N, C, L]");
  const detail::Axis a{x.shape()[x.dim() - 1], kernel, stride == 0 ? kernel : stride, padding, padding, dilation, 0};
  detail::check_window_params(op, "length", a);
  if (padding > kernel / 2) {
    throw ValueError(fmt::format("{}: padding must be at most half the kernel size, got padding={} for "
                                 "kernel_size={}", op, padding, kernel));
  }
  window_length(op, x, a, ceil_mode);
}

MaxPool2dOptions max_options(const MaxPool1dOptions& o) {
  return {.kernel_size = {1, o.kernel_size}, .stride = {1, o.stride == 0 ? o.kernel_size : o.stride},
          .padding = {0, o.padding}, .dilation = {1, o.dilation}, .ceil_mode = o.ceil_mode};
}

}  // namespace

Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv1dOptions& options) {
  constexpr std::string_view op = "conv1d";
  check_input(op, x, "[N, C, L]");
  detail::check_floating(op, weight, "weight");
  if (weight.dim() != 3) {
    throw ShapeError(fmt::format("conv1d: expects weight [O, C/groups, k], got weight {} for input {}",
                                 weight.shape(), x.shape()));
  }
  if (x.dtype() != weight.dtype() || (bias.defined() && bias.dtype() != x.dtype())) {
    throw DTypeError(fmt::format("conv1d: input, weight and bias must share one dtype, got {}, {} and {}",
                                 x.dtype(), weight.dtype(), bias.defined() ? dtype_name(bias.dtype()) : "no bias"));
  }
  if (!options.bias && bias.defined()) {
    throw ValueError(fmt::format("conv1d: options.bias is false but a bias {} is given", bias.shape()));
  }
  const std::int64_t groups = options.groups, channels = x.shape()[x.dim() - 2], out_channels = weight.shape()[0];
  if (groups <= 0) throw ValueError(fmt::format("conv1d: groups must be positive, got {}", groups));
  if (channels % groups != 0 || out_channels % groups != 0 || weight.shape()[1] * groups != channels) {
    throw ShapeError(fmt::format("conv1d: input {} has {} channels; weight {} expects {} (= {} per group x "
                                 "groups={}), and groups must divide both channel counts", x.shape(), channels,
                                 weight.shape(), weight.shape()[1] * groups, weight.shape()[1], groups));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != out_channels)) {
    throw ShapeError(fmt::format("conv1d: bias must be [{}], got {}", out_channels, bias.shape()));
  }
  detail::Axis a{x.shape()[x.dim() - 1], weight.shape()[2], options.stride, options.padding, options.padding,
                 options.dilation, 0};
  if (options.padding_mode != ConvPadding::explicit_sizes) {
    a.pad_begin = a.pad_end = 0;
    if (options.padding_mode == ConvPadding::same && options.stride != 1) {
      throw ValueError(fmt::format("conv1d: padding='same' needs stride 1, got stride {}", options.stride));
    }
  }
  if (options.padding_mode != ConvPadding::same) window_length(op, x, a, false);
  else detail::check_window_params(op, "length", a);
  const Conv2dOptions o2{.stride = {1, options.stride}, .padding = {0, options.padding},
                         .dilation = {1, options.dilation}, .groups = groups,
                         .padding_mode = options.padding_mode, .bias = options.bias};
  return to_1d(conv2d(to_2d(x), unsqueeze(weight, 2), bias, o2));
}

Tensor max_pool1d(const Tensor& x, const MaxPool1dOptions& options) {
  check_pool("max_pool1d", x, options.kernel_size, options.stride, options.padding, options.dilation,
             options.ceil_mode);
  return to_1d(max_pool2d(to_2d(x), max_options(options)));
}

MaxPoolResult max_pool1d_with_indices(const Tensor& x, const MaxPool1dOptions& options) {
  check_pool("max_pool1d", x, options.kernel_size, options.stride, options.padding, options.dilation,
             options.ceil_mode);
  // With a height of 1 the 2-D flat index h*L + l is l, PyTorch's 1-D index.
  const MaxPoolResult r = max_pool2d_with_indices(to_2d(x), max_options(options));
  return {to_1d(r.values), to_1d(r.indices)};
}

Tensor avg_pool1d(const Tensor& x, const AvgPool1dOptions& options) {
  check_pool("avg_pool1d", x, options.kernel_size, options.stride, options.padding, 1, options.ceil_mode);
  const AvgPool2dOptions o2{.kernel_size = {1, options.kernel_size},
                            .stride = {1, options.stride == 0 ? options.kernel_size : options.stride},
                            .padding = {0, options.padding}, .ceil_mode = options.ceil_mode,
                            .count_include_pad = options.count_include_pad};
  return to_1d(avg_pool2d(to_2d(x), o2));
}

}  // namespace tapegrad
