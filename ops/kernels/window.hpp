#pragma once
// Window geometry shared by conv2d and the pools: output sizes exactly as PyTorch computes
// them, and checks that print the arithmetic when a size is impossible.
#include <array>
#include <cstdint>
#include <string_view>
#include <algorithm>

#include <fmt/format.h>

#include "tapegrad/error.hpp"
#include "tapegrad/shape.hpp"

namespace tapegrad::detail {

/// One spatial axis of a sliding window.
struct Axis {
  std::int64_t in = 0;         ///< input size
  std::int64_t kernel = 1;
  std::int64_t stride = 1;
  std::int64_t pad_begin = 0;  ///< padding before (top/left)
  std::int64_t pad_end = 0;    ///< padding after (bottom/right)
  std::int64_t dilation = 1;
  std::int64_t out = 0;

  std::int64_t span() const { return dilation * (kernel - 1) + 1; }
  /// First input coordinate read by output o (may be negative: padding).
  std::int64_t start(std::int64_t o) const { return o * stride - pad_begin; }
};

/// The outputs [lo, hi) along an axis whose kernel tap `tap` reads inside the input, and
/// the input index read by output o: o * stride + offset.
struct TapRange {
  std::int64_t lo, hi, offset;
};

inline TapRange tap_range(const Axis& a, std::int64_t tap) {
  const std::int64_t off = tap * a.dilation - a.pad_begin;
  std::int64_t lo = off >= 0 ? 0 : (-off + a.stride - 1) / a.stride;
  std::int64_t hi = a.in - 1 - off < 0 ? 0 : (a.in - 1 - off) / a.stride + 1;
  lo = std::min(lo, a.out);
  hi = std::max(lo, std::min(hi, a.out));
  return {lo, hi, off};
}

/// floor((in + pads - span) / stride) + 1, or with ceil_mode the ceiling, dropping a last
/// window that would start in the right padding (PyTorch's pooling_output_shape).
inline std::int64_t window_count(const Axis& a, bool ceil_mode) {
  const std::int64_t numerator = a.in + a.pad_begin + a.pad_end - a.span();
  if (numerator < 0) return 0;
  std::int64_t out = (numerator + (ceil_mode ? a.stride - 1 : 0)) / a.stride + 1;
  if (ceil_mode && (out - 1) * a.stride >= a.in + a.pad_begin) --out;
  return out;
}

/// Validates kernel, stride, dilation and padding of one axis ("height"/"width") and
/// fills a.out; throws with the arithmetic when no window fits.
/// The largest kernel, stride, dilation or padding accepted: with it every window
/// computation stays far inside int64 (no overflow for any input size a tensor can have).
inline constexpr std::int64_t kMaxWindowParam = (std::int64_t{1} << 31) - 1;

/// Checks that kernel, stride and dilation are positive and padding non-negative, all
/// at most kMaxWindowParam.
inline void check_window_params(std::string_view op, std::string_view name, const Axis& a) {
  if (a.kernel <= 0 || a.stride <= 0 || a.dilation <= 0) {
    throw ValueError(fmt::format("{}: kernel, stride and dilation must be positive, got {}: "
                                 "kernel={} stride={} dilation={}", op, name, a.kernel, a.stride,
                                 a.dilation));
  }
  if (a.pad_begin < 0 || a.pad_end < 0) {
    throw ValueError(fmt::format("{}: padding must be non-negative, got {} padding {}", op, name,
                                 a.pad_begin < 0 ? a.pad_begin : a.pad_end));
  }
  if (std::max({a.kernel, a.stride, a.dilation, a.pad_begin, a.pad_end}) > kMaxWindowParam) {
    throw ValueError(fmt::format("{}: {} kernel={} stride={} dilation={} padding={}+{}: each must "
                                 "be at most {}", op, name, a.kernel, a.stride, a.dilation,
                                 a.pad_begin, a.pad_end, kMaxWindowParam));
  }
}

inline void resolve_axis(std::string_view op, std::string_view name, Axis& a, bool ceil_mode) {
  check_window_params(op, name, a);
  a.out = window_count(a, ceil_mode);
  if (a.out <= 0) {
    throw ShapeError(fmt::format(
        "{}: output {} would be {}: ({}={} + pad={}+{} - dilation={}*(kernel={}-1) - 1)/stride={} + 1",
        op, name, a.out, name == "height" ? "H" : "W", a.in, a.pad_begin, a.pad_end, a.dilation,
        a.kernel, a.stride));
  }
}

}  // namespace tapegrad::detail

namespace tapegrad::detail {

/// A pool's stride: an empty one ({0, 0}) means "= kernel", as PyTorch's default.
inline std::array<std::int64_t, 2> stride_or_kernel(std::array<std::int64_t, 2> stride,
                                                    std::array<std::int64_t, 2> kernel) {
  return stride[0] == 0 && stride[1] == 0 ? kernel : stride;
}

/// A pooling problem: `planes` independent (n, c) planes of H×W.
struct PoolGeometry {
  std::int64_t planes = 0;
  Axis h, w;
};

/// Checks a pool's input (rank 3 or 4) and options, as PyTorch 1.13's pool2d_shape_check:
/// positive kernel/stride/dilation, 0 <= padding <= kernel/2, and at least one window.
inline PoolGeometry pool_geometry(std::string_view op, const Shape& x,
                                  std::array<std::int64_t, 2> kernel,
                                  std::array<std::int64_t, 2> stride,
                                  std::array<std::int64_t, 2> padding,
                                  std::array<std::int64_t, 2> dilation, bool ceil_mode) {
  if (x.size() != 3 && x.size() != 4) {
    throw ShapeError(fmt::format("{}: expects input [N, C, H, W] or [C, H, W], got {}", op, x));
  }
  const std::size_t r = x.size();
  PoolGeometry g;
  g.planes = x[0] * (r == 4 ? x[1] : 1);
  g.h = {x[r - 2], kernel[0], stride[0], padding[0], padding[0], dilation[0], 0};
  g.w = {x[r - 1], kernel[1], stride[1], padding[1], padding[1], dilation[1], 0};
  for (const Axis* a : {&g.h, &g.w}) {
    if (a->kernel > 0 && a->pad_begin > a->kernel / 2) {
      throw ValueError(fmt::format("{}: padding must be at most half the kernel size, got "
                                   "padding=[{}, {}] for kernel_size=[{}, {}]", op, padding[0],
                                   padding[1], kernel[0], kernel[1]));
    }
  }
  resolve_axis(op, "height", g.h, ceil_mode);
  resolve_axis(op, "width", g.w, ceil_mode);
  return g;
}

/// The pool's output shape: x's leading dims with H, W replaced by the window counts.
inline Shape pool_output_shape(const Shape& x, const PoolGeometry& g) {
  Shape out = x;
  out[x.size() - 2] = g.h.out;
  out[x.size() - 1] = g.w.out;
  return out;
}

/// An adaptive pool's windows along one axis (PyTorch's rule): output o reads the input range
/// [floor(o·in/out), ceil((o+1)·in/out)). When out does not divide in, neighbouring windows
/// overlap by one element; when out > in, several outputs read the same element.
struct AdaptiveAxis {
  std::int64_t in = 0;
  std::int64_t out = 0;
  std::int64_t begin(std::int64_t o) const { return o * in / out; }
  std::int64_t end(std::int64_t o) const { return ((o + 1) * in + out - 1) / out; }
};

/// An adaptive pooling problem: `planes` independent (n, c) planes of H×W, pooled to OH×OW.
struct AdaptiveGeometry {
  std::int64_t planes = 0;
  AdaptiveAxis h, w;
  /// The same planes as a PoolGeometry (only planes, in and out are meaningful), for the
  /// winners' scatter that adaptive_max_pool2d shares with max_pool2d.
  PoolGeometry as_pool() const {
    PoolGeometry g;
    g.planes = planes;
    g.h.in = h.in;
    g.h.out = h.out;
    g.w.in = w.in;
    g.w.out = w.out;
    return g;
  }
};

/// Checks an adaptive pool's input (rank 3 or 4, floating checked by the caller, no empty
/// channel or spatial dim) and output_size (positive, at most kMaxWindowParam), as PyTorch
/// 1.13's adaptive pools do; `op` is the function the user called.
inline AdaptiveGeometry adaptive_geometry(std::string_view op, const Shape& x,
                                          std::array<std::int64_t, 2> output_size) {
  if (x.size() != 3 && x.size() != 4) {
    throw ShapeError(fmt::format("{}: expects input [N, C, H, W] or [C, H, W], got {} (rank {})", op, x,
                                 x.size()));
  }
  const std::size_t r = x.size();
  if (x[r - 3] == 0 || x[r - 2] == 0 || x[r - 1] == 0) {
    throw ShapeError(fmt::format("{}: input {} has an empty channel, height or width dimension; only "
                                 "the batch dimension may be 0", op, x));
  }
  for (const std::int64_t o : output_size) {
    if (o <= 0 || o > kMaxWindowParam) {
      throw ValueError(fmt::format("{}: output_size must be positive and at most {}, got "
                                   "output_size=[{}, {}] for input {}", op, kMaxWindowParam,
                                   output_size[0], output_size[1], x));
    }
  }
  AdaptiveGeometry g;
  g.planes = x[0] * (r == 4 ? x[1] : 1);
  g.h = {x[r - 2], output_size[0]};
  g.w = {x[r - 1], output_size[1]};
  return g;
}

/// The adaptive pool's output shape: x's leading dims with H, W replaced by OH, OW.
inline Shape adaptive_output_shape(const Shape& x, const AdaptiveGeometry& g) {
  Shape out = x;
  out[x.size() - 2] = g.h.out;
  out[x.size() - 1] = g.w.out;
  return out;
}

}  // namespace tapegrad::detail
