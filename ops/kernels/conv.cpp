// The loops behind conv2d, compiled for several instruction-set levels (see simd.hpp):
// short contiguous rows vectorise with AVX-512 or AVX2 where the CPU has them.
#include <algorithm>
#include <vector>

#include "ops/kernels/conv.hpp"
#include "ops/kernels/simd.hpp"

namespace tapegrad::detail {
namespace {

/// col[(c, ki, kj), (oh, ow)] = x[c, ih, iw] (0 in the padding), for `channels` channels.
/// Row r of col starts at col + r * ld (ld >= plane_out: several images can sit side by side).
template <class T>
void im2col_impl(const T* x, const ConvGeometry& g, std::int64_t channels, T* col, std::int64_t ld) {
  const std::int64_t ow_n = g.w.out, sw = g.w.stride;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* plane = x + c * g.plane_in();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        T* row = col + ((c * g.h.kernel + ki) * g.w.kernel + kj) * ld;
        std::fill_n(row, rh.lo * ow_n, T(0));
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          T* dst = row + oh * ow_n;
          const T* src = plane + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          std::fill_n(dst, rw.lo, T(0));
          // Rows are short (often < 32 values): a plain loop beats a memmove call.
          if (sw == 1) {
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow] = src[ow];
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
void col2im_impl(const T* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, T* x) {
  const std::int64_t ow_n = g.w.out, sw = g.w.stride;
  for (std::int64_t c = 0; c < channels; ++c) {
    T* plane = x + c * g.plane_in();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        const T* row = col + ((c * g.h.kernel + ki) * g.w.kernel + kj) * ld;
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* src = row + oh * ow_n;
          T* dst = plane + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          if (sw == 1) {
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow] += src[ow];
          } else {
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow * sw] += src[ow];
          }
        }
      }
    }
  }
}

/// Depthwise (one input channel per group): out[o] = Σ_taps x[o / mult] * w[o] directly,
/// for one image. `mult` = output channels per input channel.
template <class T>
void depthwise_forward_impl(const T* x, const T* w, const ConvGeometry& g, T* out) {
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
          if (sw == 1) {  // contiguous: vectorised
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) row[ow] += kv * src[ow];
          } else {
            for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) row[ow] += kv * src[ow * sw];
          }
        }
      }
    }
  }
}

/// Depthwise VJP for one image: grad_x (if non-null) += Σ grad_out * w, and grad_w
/// (if non-null) += Σ grad_out * x.
template <class T>
void depthwise_backward_impl(const T* x, const T* w, const T* grad_out, const ConvGeometry& g,
                             T* grad_x, T* grad_w) {
  const std::int64_t mult = g.group_out(), sw = g.w.stride;
  // grad_w's sums are kept per output column and added up at the end: a running scalar sum
  // would not vectorise (float addition is not reassociated).
  thread_local std::vector<T> partial;
  partial.assign(static_cast<std::size_t>(g.w.out), T(0));
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    const std::int64_t c = o / mult;
    const T* gplane = grad_out + o * g.plane_out();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange rw = tap_range(g.w, kj);
        const std::int64_t tap = (o * g.h.kernel + ki) * g.w.kernel + kj;
        for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* grow = gplane + oh * g.w.out;
          const std::int64_t base = c * g.plane_in() + (oh * g.h.stride + rh.offset) * g.w.in + rw.offset;
          if (grad_x != nullptr) {
            const T kv = w[tap];
            T* dst = grad_x + base;
            if (sw == 1) {
              for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow] += grow[ow] * kv;
            } else {
              for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) dst[ow * sw] += grow[ow] * kv;
            }
          }
          if (grad_w != nullptr) {
            const T* src = x + base;
            T* part = partial.data();
            if (sw == 1) {
              for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) part[ow] += grow[ow] * src[ow];
            } else {
              for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) part[ow] += grow[ow] * src[ow * sw];
            }
          }
        }
        if (grad_w != nullptr) {
          T acc = 0;
          for (T& p : partial) {
            acc += p;
            p = T(0);
          }
          grad_w[tap] += acc;
        }
      }
    }
  }
}

}  // namespace

#define TAPEGRAD_CONV_KERNELS(T)                                                                     \
  TAPEGRAD_MULTIVERSION void im2col(const T* x, const ConvGeometry& g, std::int64_t channels, T* col, \
                                    std::int64_t ld) {                                               \
    im2col_impl(x, g, channels, col, ld);                                                            \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void col2im(const T* col, std::int64_t ld, const ConvGeometry& g,            \
                                    std::int64_t channels, T* x) {                                   \
    col2im_impl(col, ld, g, channels, x);                                                            \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void depthwise_forward(const T* x, const T* w, const ConvGeometry& g, T* out) { \
    depthwise_forward_impl(x, w, g, out);                                                            \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void depthwise_backward(const T* x, const T* w, const T* grad_out,           \
                                                const ConvGeometry& g, T* grad_x, T* grad_w) {       \
    depthwise_backward_impl(x, w, grad_out, g, grad_x, grad_w);                                      \
  }

TAPEGRAD_CONV_KERNELS(float)
TAPEGRAD_CONV_KERNELS(double)

}  // namespace tapegrad::detail
