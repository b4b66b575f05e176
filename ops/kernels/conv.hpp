#pragma once
// Loops behind conv2d: im2col / col2im, and the direct depthwise kernel. Each works on
// one image (one n) and one group; conv2d.cpp parallelises over the batch.
#include <algorithm>
#include <cstdint>

#include "ops/kernels/window.hpp"

namespace tapegrad::detail {

struct ConvGeometry {
  std::int64_t batch = 0, channels = 0, out_channels = 0, groups = 1;
  Axis h, w;
  std::int64_t group_in() const { return channels / groups; }
  std::int64_t group_out() const { return out_channels / groups; }
  std::int64_t plane_in() const { return h.in * w.in; }
  std::int64_t plane_out() const { return h.out * w.out; }
  /// Rows of the unfolded input of one group: (c, ki, kj) triples.
  std::int64_t col_rows() const { return group_in() * h.kernel * w.kernel; }
  /// 1×1 kernel, stride 1, no padding: the input already is its own im2col.
  bool pointwise() const {
    return h.kernel == 1 && w.kernel == 1 && h.stride == 1 && w.stride == 1 &&
           h.pad_begin == 0 && h.pad_end == 0 && w.pad_begin == 0 && w.pad_end == 0;
  }
};

/// col[(c, ki, kj), (oh, ow)] = x[c, ih, iw] (0 in the padding), for `channels` channels.
template <class T>
void im2col(const T* x, const ConvGeometry& g, std::int64_t channels, T* col) {
  const std::int64_t ow_n = g.w.out, sw = g.w.stride;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* plane = x + c * g.plane_in();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        T* row = col + ((c * g.h.kernel + ki) * g.w.kernel + kj) * g.plane_out();
        std::fill_n(row, rh.lo * ow_n, T(0));
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          T* dst = row + oh * ow_n;
          const T* src = plane + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          std::fill_n(dst, rw.lo, T(0));
          if (sw == 1) {
            std::copy(src + rw.lo, src + rw.hi, dst + rw.lo);
          } else {
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow] = src[ow * sw];
          }
          std::fill(dst + rw.hi, dst + ow_n, T(0));
        }
        std::fill(row + rh.hi * ow_n, row + g.plane_out(), T(0));
      }
    }
  }
}

/// The adjoint of im2col: x[c, ih, iw] += col[(c, ki, kj), (oh, ow)] over every window
/// reading (ih, iw). Elements no window reads are left untouched.
template <class T>
void col2im(const T* col, const ConvGeometry& g, std::int64_t channels, T* x) {
  const std::int64_t ow_n = g.w.out, sw = g.w.stride;
  for (std::int64_t c = 0; c < channels; ++c) {
    T* plane = x + c * g.plane_in();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        const T* row = col + ((c * g.h.kernel + ki) * g.w.kernel + kj) * g.plane_out();
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* src = row + oh * ow_n;
          T* dst = plane + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow * sw] += src[ow];
        }
      }
    }
  }
}

/// Depthwise (one input channel per group): out[o] = Σ_taps x[o / mult] * w[o] directly,
/// for one image. `mult` = output channels per input channel.
template <class T>
void depthwise_forward(const T* x, const T* w, const ConvGeometry& g, T* out) {
  const std::int64_t mult = g.group_out(), sw = g.w.stride;
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    const T* plane = x + (o / mult) * g.plane_in();
    const T* k = w + o * g.h.kernel * g.w.kernel;
    T* dst = out + o * g.plane_out();
    std::fill_n(dst, g.plane_out(), T(0));
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        const T kv = k[ki * g.w.kernel + kj];
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* src = plane + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          T* row = dst + oh * g.w.out;
          for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) row[ow] += kv * src[ow * sw];
        }
      }
    }
  }
}

/// Depthwise VJP for one image: grad_x (if non-null) += Σ grad_out * w, and grad_w
/// (if non-null) += Σ grad_out * x.
template <class T>
void depthwise_backward(const T* x, const T* w, const T* grad_out, const ConvGeometry& g,
                        T* grad_x, T* grad_w) {
  const std::int64_t mult = g.group_out(), sw = g.w.stride;
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    const std::int64_t c = o / mult;
    const T* gplane = grad_out + o * g.plane_out();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        const std::int64_t tap = (o * g.h.kernel + ki) * g.w.kernel + kj;
        T acc = 0;
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* grow = gplane + oh * g.w.out;
          const std::int64_t base = c * g.plane_in() + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          if (grad_x != nullptr) {
            const T kv = w[tap];
            T* dst = grad_x + base;
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow * sw] += grow[ow] * kv;
          }
          if (grad_w != nullptr) {
            const T* src = x + base;
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) acc += grow[ow] * src[ow * sw];
          }
        }
        if (grad_w != nullptr) grad_w[tap] += acc;
      }
    }
  }
}

}  // namespace tapegrad::detail
