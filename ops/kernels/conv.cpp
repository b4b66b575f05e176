// The loops behind conv2d. f32 on a CPU with AVX-512 runs the explicit AVX-512 kernels
// (blocks of 16 outputs with masked loads, see avx512.hpp); f32 depthwise on a CPU with
// AVX2 but not AVX-512 runs depthwise_avx2.cpp; every other case runs the portable loops,
// compiled for several instruction-set levels (see simd.hpp).
#include <algorithm>
#include <limits>
#include <vector>

#include "ops/kernels/avx512.hpp"
#include "ops/kernels/conv.hpp"
#include "autograd/simd.hpp"

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

/// im2col of a tiling geometry: row (oh·kh + ki) of each plane splits into the kw rows
/// (ki, kj) of col at oh (for kw = 2 a de-interleave of even and odd elements).
template <class T>
void unfold_tiles_impl(const T* x, const ConvGeometry& g, std::int64_t channels, T* col, std::int64_t ld) {
  const std::int64_t kh = g.h.kernel, kw = g.w.kernel, ow_n = g.w.out;
  for (std::int64_t c = 0; c < channels; ++c) {
    for (std::int64_t ki = 0; ki < kh; ++ki) {
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        const T* src = x + c * g.plane_in() + (oh * kh + ki) * g.w.in;
        T* dst = col + (c * kh + ki) * kw * ld + oh * ow_n;
        if (kw == 2) {
          T* odd = dst + ld;
          for (std::int64_t ow = 0; ow < ow_n; ++ow) {
            dst[ow] = src[2 * ow];
            odd[ow] = src[2 * ow + 1];
          }
          continue;
        }
        for (std::int64_t kj = 0; kj < kw; ++kj) {
          for (std::int64_t ow = 0; ow < ow_n; ++ow) dst[kj * ld + ow] = src[ow * kw + kj];
        }
      }
    }
  }
}

/// The adjoint of unfold_tiles_impl, writing x (each element has exactly one window).
template <class T>
void fold_tiles_impl(const T* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, T* x) {
  const std::int64_t kh = g.h.kernel, kw = g.w.kernel, ow_n = g.w.out;
  for (std::int64_t c = 0; c < channels; ++c) {
    for (std::int64_t ki = 0; ki < kh; ++ki) {
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        T* dst = x + c * g.plane_in() + (oh * kh + ki) * g.w.in;
        const T* src = col + (c * kh + ki) * kw * ld + oh * ow_n;
        if (kw == 2) {
          const T* odd = src + ld;
          for (std::int64_t ow = 0; ow < ow_n; ++ow) {
            dst[2 * ow] = src[ow];
            dst[2 * ow + 1] = odd[ow];
          }
          continue;
        }
        for (std::int64_t kj = 0; kj < kw; ++kj) {
          for (std::int64_t ow = 0; ow < ow_n; ++ow) dst[ow * kw + kj] = src[kj * ld + ow];
        }
      }
    }
  }
}

/// Depthwise (one input channel per group): out[o] = Σ_taps x[o / mult] * w[o] directly,
/// for one image. `mult` = output channels per input channel.
template <class T>
void depthwise_forward_impl(const T* x, const T* w, const T* bias, const ConvGeometry& g, T* out) {
  const std::int64_t mult = g.group_out(), sw = g.w.stride;
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    const T* plane = x + (o / mult) * g.plane_in();
    const T* k = w + o * g.h.kernel * g.w.kernel;
    T* dst = out + o * g.plane_out();
    std::fill_n(dst, g.plane_out(), bias != nullptr ? bias[o] : T(0));
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
  if (grad_x != nullptr) std::fill_n(grad_x, g.channels * g.plane_in(), T(0));
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

/// grad_b[o] += Σ_plane grad_out[o]; 16 running sums so that the loop vectorises.
template <class T>
void bias_grad_impl(const T* grad_out, std::int64_t channels, std::int64_t plane, T* grad_b) {
  constexpr std::int64_t L = 16;
  for (std::int64_t o = 0; o < channels; ++o) {
    const T* src = grad_out + o * plane;
    T sums[L] = {};
    std::int64_t i = 0;
    for (; i + L <= plane; i += L) {
      for (std::int64_t l = 0; l < L; ++l) sums[l] += src[i + l];
    }
    for (; i < plane; ++i) sums[0] += src[i];
    T total = 0;
    for (T v : sums) total += v;
    grad_b[o] += total;
  }
}

#ifdef TAPEGRAD_HAVE_AVX512
/// Rows [oh0, oh0 + rows) of window_sum_plane (rows <= 4) for its M channels. Edge: some
/// of their windows reach above or below the input (those rows are masked to zeros);
/// otherwise none does.
template <int S, int K, bool Edge, int M>
TAPEGRAD_AVX512 inline void window_sum_rows(const float* in, const Axis& h, const Axis& w,
                                            const avx512::LaneTap* taps, const float* k, const float* init,
                                            float* out, bool accumulate, std::int64_t oh0,
                                            std::int64_t rows, __m512i offsets) {
  constexpr std::int64_t R = 4;
  const std::int64_t kh = K > 0 ? K : h.kernel, kw = K > 0 ? K : w.kernel, plane = h.out * w.out;
  for (std::int64_t o0 = 0, blk = 0; o0 < w.out; o0 += 16, ++blk) {
    const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, w.out - o0));
    const avx512::LaneTap* t = taps + blk * kw;
    __m512 acc[M][R];
    for (int m = 0; m < M; ++m) {
      for (std::int64_t r = 0; r < R; ++r) {
        acc[m][r] = accumulate && r < rows ? _mm512_maskz_loadu_ps(valid, out + m * plane + (oh0 + r) * w.out + o0)
                                           : _mm512_set1_ps(init != nullptr ? init[m] : 0.0f);
      }
    }
    for (std::int64_t ki = 0; ki < kh; ++ki) {
      const float* row[R];
      __mmask16 keep[R];
      for (std::int64_t r = 0; r < R; ++r) {
        const std::int64_t ih = h.start(oh0 + r) + ki * h.dilation;
        const bool inside = !Edge || (r < rows && ih >= 0 && ih < h.in);
        keep[r] = inside ? 0xFFFF : 0;
        row[r] = in + (inside ? ih : 0) * w.in;
      }
      for (std::int64_t kj = 0; kj < kw; ++kj) {
        for (std::int64_t r = 0; r < R; ++r) {
          const __m512 xv = avx512::load_tap<S>(row[r], t[kj], offsets, keep[r]);  // shared by the M channels
          for (int m = 0; m < M; ++m) {
            acc[m][r] = _mm512_fmadd_ps(_mm512_set1_ps(k[m * kh * kw + ki * kw + kj]), xv, acc[m][r]);
          }
        }
      }
    }
    for (int m = 0; m < M; ++m) {
      for (std::int64_t r = 0; r < R; ++r) {  // (a constant trip count keeps acc in registers)
        if (r < rows) _mm512_mask_storeu_ps(out + m * plane + (oh0 + r) * w.out + o0, valid, acc[m][r]);
      }
    }
  }
}

/// One plane of a depthwise window sum with AVX-512, for M output channels that read the
/// same input plane (a channel multiplier; their kernels k·k apart, their planes one output
/// plane apart): out[m, oh, ow] = init[m] (0 when init is null; its value when
/// accumulating) + Σ k[m, ki, kj] * in[h.start(oh) + ki d, w.start(ow) + kj d] over the taps
/// inside `in`. Four rows of 16 outputs per channel at a time, each in a register over all
/// taps (4·M independent FMA chains), each input vector loaded once for the M channels;
/// near the top and bottom edges a row outside the input is loaded as zeros. `taps` =
/// avx512::lane_taps(w); S as in avx512::load_tap; K > 0: the kernel is K×K (unrolled),
/// 0: any size.
template <int S, int K, int M>
TAPEGRAD_AVX512 void window_sum_plane(const float* in, const Axis& h, const Axis& w,
                                      const avx512::LaneTap* taps, const float* k, const float* init,
                                      float* out, bool accumulate) {
  constexpr std::int64_t R = 4;
  const __m512i offsets = avx512::lane_offsets(w.stride);
  for (std::int64_t oh0 = 0; oh0 < h.out; oh0 += R) {
    const std::int64_t rows = std::min(R, h.out - oh0);
    const bool interior = rows == R && h.start(oh0) >= 0 && h.start(oh0 + R - 1) + h.span() <= h.in;
    if (interior) {
      window_sum_rows<S, K, false, M>(in, h, w, taps, k, init, out, accumulate, oh0, rows, offsets);
    } else {
      window_sum_rows<S, K, true, M>(in, h, w, taps, k, init, out, accumulate, oh0, rows, offsets);
    }
  }
}

/// The sum of a vector's 16 lanes, by halves (a short dependency chain, so that the sums
/// of several accumulators overlap). Two-source permutes: the reductions and one-source
/// shuffles of GCC 12 pass "undefined" vectors that -Wmaybe-uninitialized reports.
TAPEGRAD_AVX512 inline float lane_sum(__m512 v) {
  const __m512i halves = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i quarters = _mm512_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
  const __m512i pairs = _mm512_setr_epi32(2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
  const __m512i ones = _mm512_setr_epi32(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
  for (const __m512i& order : {halves, quarters, pairs, ones}) v = _mm512_add_ps(v, _mm512_permutex2var_ps(v, order, v));
  return _mm512_cvtss_f32(v);
}

/// One plane of the depthwise weight gradient, for M output channels that read the same
/// input plane (their grad_out planes and kernels as in window_sum_plane): grad_k[m, ki, kj]
/// += Σ gy[m, oh, ow] * in[h.start(oh) + ki d, ...], over the rows whose tap ki reads
/// inside. K > 0 (a K×K kernel): per kernel row, M > 1 loads each block's K input vectors
/// once for the M channels' M·K accumulators; M = 1 loads each block of grad_out once and
/// multiplies it into K accumulators, two rows at a time. K = 0 (M = 1): one tap at a
/// time, four rows in four accumulators.
template <int S, int K, int M>
TAPEGRAD_AVX512 void window_dot_plane(const float* in, const Axis& h, const Axis& w,
                                      const avx512::LaneTap* taps, const float* gy, float* grad_k) {
  static_assert(M == 1 || K > 0);
  constexpr std::int64_t R = K > 0 ? K : 4;
  const __m512i offsets = avx512::lane_offsets(w.stride);
  for (std::int64_t ki = 0; ki < h.kernel; ++ki) {
    const TapRange rows = tap_range(h, ki);  // the outputs whose tap ki reads inside
    if constexpr (M > 1) {
      const std::int64_t plane = h.out * w.out;
      __m512 acc[M][K];
      for (int m = 0; m < M; ++m) {
        for (int kj = 0; kj < K; ++kj) acc[m][kj] = _mm512_setzero_ps();
      }
      for (std::int64_t oh = rows.lo; oh < rows.hi; ++oh) {
        const float* row = in + (oh * h.stride + rows.offset) * w.in;
        for (std::int64_t o0 = 0, blk = 0; o0 < w.out; o0 += 16, ++blk) {
          const avx512::LaneTap* t = taps + blk * K;
          const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, w.out - o0));
          __m512 xv[K];
          for (int kj = 0; kj < K; ++kj) xv[kj] = avx512::load_tap<S>(row, t[kj], offsets);
          for (int m = 0; m < M; ++m) {
            const __m512 gv = _mm512_maskz_loadu_ps(valid, gy + m * plane + oh * w.out + o0);
            for (int kj = 0; kj < K; ++kj) acc[m][kj] = _mm512_fmadd_ps(gv, xv[kj], acc[m][kj]);
          }
        }
      }
      for (int m = 0; m < M; ++m) {
        for (int kj = 0; kj < K; ++kj) grad_k[m * K * K + ki * K + kj] += lane_sum(acc[m][kj]);
      }
    } else if constexpr (K > 0) {
      // Two rows at a time into two sets of accumulators: twice the independent FMA chains.
      __m512 even[K], odd[K];
      for (int kj = 0; kj < K; ++kj) even[kj] = odd[kj] = _mm512_setzero_ps();
      for (std::int64_t oh = rows.lo; oh < rows.hi; oh += 2) {
        const bool pair = oh + 1 < rows.hi;
        const float* row = in + (oh * h.stride + rows.offset) * w.in;
        const float* next = row + (pair ? h.stride * w.in : 0);
        for (std::int64_t o0 = 0, blk = 0; o0 < w.out; o0 += 16, ++blk) {
          const avx512::LaneTap* t = taps + blk * K;
          const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, w.out - o0));
          const __m512 g0 = _mm512_maskz_loadu_ps(valid, gy + oh * w.out + o0);
          const __m512 g1 = _mm512_maskz_loadu_ps(pair ? valid : 0, gy + (oh + (pair ? 1 : 0)) * w.out + o0);
          for (int kj = 0; kj < K; ++kj) {
            even[kj] = _mm512_fmadd_ps(g0, avx512::load_tap<S>(row, t[kj], offsets), even[kj]);
            odd[kj] = _mm512_fmadd_ps(g1, avx512::load_tap<S>(next, t[kj], offsets), odd[kj]);
          }
        }
      }
      for (int kj = 0; kj < K; ++kj) grad_k[ki * K + kj] += lane_sum(_mm512_add_ps(even[kj], odd[kj]));
    } else {
      for (std::int64_t kj = 0; kj < w.kernel; ++kj) {
        __m512 acc[R] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (std::int64_t oh0 = rows.lo; oh0 < rows.hi; oh0 += R) {
          for (std::int64_t o0 = 0, blk = 0; o0 < w.out; o0 += 16, ++blk) {
            const avx512::LaneTap& t = taps[blk * w.kernel + kj];
            for (std::int64_t r = 0; r < R; ++r) {
              const bool inside = oh0 + r < rows.hi;
              const std::int64_t oh = inside ? oh0 + r : oh0;
              const __mmask16 keep = inside ? 0xFFFF : 0;
              const __m512 gv = _mm512_maskz_loadu_ps(t.mask & keep, gy + oh * w.out + o0);
              const float* row = in + (oh * h.stride + rows.offset) * w.in;
              acc[r] = _mm512_fmadd_ps(gv, avx512::load_tap<S>(row, t, offsets, keep), acc[r]);
            }
          }
        }
        grad_k[ki * w.kernel + kj] += lane_sum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
      }
    }
  }
}

/// The axis of the stride-1 depthwise input gradient seen as a window sum over grad_out:
/// input row i reads grad_out rows i - (d (k-1) - p) + ki d with the kernel reversed.
Axis transposed(const Axis& a) {
  return {a.out, a.kernel, 1, a.dilation * (a.kernel - 1) - a.pad_begin,
          a.dilation * (a.kernel - 1) - a.pad_end, a.dilation, a.in};
}

/// im2col with AVX-512: each row of the unfolded input is 16-lane masked loads (zeros in
/// the padding) and stores, a block column at a time so that the lane masks stay in
/// registers. `taps` = avx512::lane_taps(g.w).
template <int S>
TAPEGRAD_AVX512 void im2col_avx512(const float* x, const ConvGeometry& g, std::int64_t channels,
                                   float* col, std::int64_t ld, const avx512::LaneTap* taps) {
  const __m512i offsets = avx512::lane_offsets(g.w.stride);
  const std::int64_t ow_n = g.w.out;
  for (std::int64_t c = 0; c < channels; ++c) {
    const float* plane = x + c * g.plane_in();
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const TapRange rh = tap_range(g.h, ki);  // the output rows whose tap ki reads inside
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        float* row = col + ((c * g.h.kernel + ki) * g.w.kernel + kj) * ld;
        for (std::int64_t o0 = 0, blk = 0; o0 < ow_n; o0 += 16, ++blk) {
          const avx512::LaneTap& t = taps[blk * g.w.kernel + kj];
          const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, ow_n - o0));
          float* dst = row + o0;
          for (std::int64_t oh = 0; oh < rh.lo; ++oh) _mm512_mask_storeu_ps(dst + oh * ow_n, valid, _mm512_setzero_ps());
          for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
            const float* src = plane + (oh * g.h.stride + rh.offset) * g.w.in;
            _mm512_mask_storeu_ps(dst + oh * ow_n, valid, avx512::load_tap<S>(src, t, offsets));
          }
          for (std::int64_t oh = rh.hi; oh < g.h.out; ++oh) {
            _mm512_mask_storeu_ps(dst + oh * ow_n, valid, _mm512_setzero_ps());
          }
        }
      }
    }
  }
}

/// col2im with AVX-512 for stride 1: each block of 16 elements of a row of x sums, in a
/// register, what every (ki, kj) row of col gives it (the window sum of the transposed
/// axes, as for depthwise), then adds that to x once. `taps` = avx512::lane_taps of the
/// transposed width axis.
TAPEGRAD_AVX512 void col2im_avx512(const float* col, std::int64_t ld, const ConvGeometry& g,
                                   std::int64_t channels, float* x, const avx512::LaneTap* taps) {
  const Axis th = transposed(g.h);
  const std::int64_t kh = g.h.kernel, kw = g.w.kernel, ow_n = g.w.out;
  const __m512i offsets = avx512::lane_offsets(1);
  for (std::int64_t c = 0; c < channels; ++c) {
    for (std::int64_t ih = 0; ih < g.h.in; ++ih) {
      float* dst = x + c * g.plane_in() + ih * g.w.in;
      for (std::int64_t i0 = 0, blk = 0; i0 < g.w.in; i0 += 16, ++blk) {
        const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, g.w.in - i0));
        __m512 acc = _mm512_maskz_loadu_ps(valid, dst + i0);
        for (std::int64_t r = 0; r < kh; ++r) {  // r: the transposed (reversed) kernel row
          const std::int64_t oh = th.start(ih) + r * th.dilation;
          if (oh < 0 || oh >= g.h.out) continue;
          const float* rows = col + ((c * kh + (kh - 1 - r)) * kw + (kw - 1)) * ld + oh * ow_n;
          for (std::int64_t q = 0; q < kw; ++q) {  // q: reversed kernel column, kj = kw - 1 - q
            acc = _mm512_add_ps(acc, avx512::load_tap<1>(rows - q * ld, taps[blk * kw + q], offsets));
          }
        }
        _mm512_mask_storeu_ps(dst + i0, valid, acc);
      }
    }
  }
}

/// Output channels of a depthwise conv that read the same input plane and that the
/// kernels below take together: 6, 4 or 2 when they divide the channel multiplier `mult`.
int shared_channels(std::int64_t mult) {
  for (int m : {6, 4, 2}) {
    if (mult % m == 0) return m;
  }
  return 1;
}

/// window_sum_plane for `m` channels at once (m from shared_channels).
template <int S, int K>
struct WindowSum {
  static void run(const Axis& h, const Axis& w, const float* in, const avx512::LaneTap* taps, const float* k,
                  const float* init, float* out, bool accumulate, int m) {
    switch (m) {
      case 6: return window_sum_plane<S, K, 6>(in, h, w, taps, k, init, out, accumulate);
      case 4: return window_sum_plane<S, K, 4>(in, h, w, taps, k, init, out, accumulate);
      case 2: return window_sum_plane<S, K, 2>(in, h, w, taps, k, init, out, accumulate);
      default: return window_sum_plane<S, K, 1>(in, h, w, taps, k, init, out, accumulate);
    }
  }
};

/// window_dot_plane for `m` channels at once (m from shared_channels, in passes of at
/// most 3 for the registers: 3·5 accumulators and 5 input vectors; K = 0 takes one).
template <int S, int K>
struct WindowDot {
  static void run(const Axis& h, const Axis& w, const float* in, const avx512::LaneTap* taps, const float* gy,
                  float* grad_k, int m) {
    const std::int64_t plane = h.out * w.out, k = h.kernel * w.kernel;
    if constexpr (K > 0) {
      if (m % 3 == 0 || m % 2 == 0) {
        const int pass = m % 3 == 0 ? 3 : 2;
        for (int m0 = 0; m0 < m; m0 += pass) {
          if (pass == 3) {
            window_dot_plane<S, K, 3>(in, h, w, taps, gy + m0 * plane, grad_k + m0 * k);
          } else {
            window_dot_plane<S, K, 2>(in, h, w, taps, gy + m0 * plane, grad_k + m0 * k);
          }
        }
        return;
      }
    }
    for (int m0 = 0; m0 < m; ++m0) window_dot_plane<S, K, 1>(in, h, w, taps, gy + m0 * plane, grad_k + m0 * k);
  }
};

/// Kernel<S, K>::run(h, w, args...) for stride S = 1, 2 or any (0).
template <template <int, int> class Kernel, int K, class... Args>
void dispatch_stride(const Axis& h, const Axis& w, Args... args) {
  switch (w.stride) {
    case 1: return Kernel<1, K>::run(h, w, args...);
    case 2: return Kernel<2, K>::run(h, w, args...);
    default: return Kernel<0, K>::run(h, w, args...);
  }
}

/// Kernel<S, K>::run(h, w, args...) instantiated for the geometry: a 3×3 or 5×5 kernel
/// unrolled (K = 3, 5), or any size (K = 0).
template <template <int, int> class Kernel, class... Args>
void dispatch_window(const Axis& h, const Axis& w, Args... args) {
  if (h.kernel == 3 && w.kernel == 3) return dispatch_stride<Kernel, 3>(h, w, args...);
  if (h.kernel == 5 && w.kernel == 5) return dispatch_stride<Kernel, 5>(h, w, args...);
  dispatch_stride<Kernel, 0>(h, w, args...);
}

/// The AVX-512 window kernels index a row with int32 lanes and precompute a small per-row
/// table of lane masks.
bool avx512_windows(const ConvGeometry& g) {
  return avx512::available() && g.w.in <= std::numeric_limits<std::int32_t>::max() &&
         g.w.out <= std::numeric_limits<std::int32_t>::max() && avx512::small_lane_table(g.w) &&
         avx512::small_lane_table(transposed(g.w));
}

void depthwise_forward_avx512(const float* x, const float* w, const float* bias, const ConvGeometry& g,
                              float* out) {
  const avx512::LaneTap* taps = avx512::lane_table(g.w);
  const std::int64_t mult = g.group_out(), k = g.h.kernel * g.w.kernel;
  const int m = shared_channels(mult);
  for (std::int64_t o = 0; o < g.out_channels; o += m) {
    dispatch_window<WindowSum>(g.h, g.w, x + (o / mult) * g.plane_in(), taps, w + o * k,
                               bias != nullptr ? bias + o : nullptr, out + o * g.plane_out(), false, m);
  }
}

/// grad_w always; grad_x for stride 1 (a window sum over grad_out with the kernel
/// reversed). Returns false when grad_x is wanted at another stride.
bool depthwise_backward_avx512(const float* x, const float* w, const float* grad_out,
                               const ConvGeometry& g, float* grad_x, float* grad_w) {
  const bool unit_stride = g.h.stride == 1 && g.w.stride == 1;
  if (grad_x != nullptr && !unit_stride) return false;
  thread_local std::vector<float> reversed;
  const std::int64_t mult = g.group_out(), k = g.h.kernel * g.w.kernel;
  if (grad_w != nullptr) {
    const avx512::LaneTap* taps = avx512::lane_table(g.w);
    const int m = shared_channels(mult);
    for (std::int64_t o = 0; o < g.out_channels; o += m) {
      dispatch_window<WindowDot>(g.h, g.w, x + (o / mult) * g.plane_in(), taps, grad_out + o * g.plane_out(),
                                 grad_w + o * k, m);
    }
  }
  if (grad_x != nullptr) {
    const Axis th = transposed(g.h), tw = transposed(g.w);
    const avx512::LaneTap* taps = avx512::lane_table(tw);
    reversed.resize(static_cast<std::size_t>(k));
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      std::reverse_copy(w + o * k, w + (o + 1) * k, reversed.begin());
      // The first output channel of an input channel writes its gradient, the others add.
      dispatch_window<WindowSum>(th, tw, grad_out + o * g.plane_out(), taps, reversed.data(), nullptr,
                                 grad_x + (o / mult) * g.plane_in(), o % mult != 0, 1);
    }
  }
  return true;
}
#endif

}  // namespace

#define TAPEGRAD_CONV_KERNELS(T)                                                                     \
  TAPEGRAD_MULTIVERSION void im2col_portable(const T* x, const ConvGeometry& g, std::int64_t channels, \
                                             T* col,                                                 \
                                    std::int64_t ld) {                                               \
    im2col_impl(x, g, channels, col, ld);                                                            \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void col2im_portable(const T* col, std::int64_t ld, const ConvGeometry& g,   \
                                    std::int64_t channels, T* x) {                                   \
    col2im_impl(col, ld, g, channels, x);                                                            \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void unfold_tiles(const T* x, const ConvGeometry& g, std::int64_t channels, \
                                          T* col, std::int64_t ld) {                               \
    unfold_tiles_impl(x, g, channels, col, ld);                                                      \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void fold_tiles(const T* col, std::int64_t ld, const ConvGeometry& g,        \
                                        std::int64_t channels, T* x) {                               \
    fold_tiles_impl(col, ld, g, channels, x);                                                        \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void depthwise_forward_portable(const T* x, const T* w, const T* bias,       \
                                                        const ConvGeometry& g, T* out) {             \
    depthwise_forward_impl(x, w, bias, g, out);                                                      \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void depthwise_backward_portable(const T* x, const T* w, const T* grad_out,  \
                                                         const ConvGeometry& g, T* grad_x, T* grad_w) { \
    depthwise_backward_impl(x, w, grad_out, g, grad_x, grad_w);                                      \
  }                                                                                                  \
  TAPEGRAD_MULTIVERSION void bias_grad(const T* grad_out, std::int64_t channels, std::int64_t plane,  \
                                       T* grad_b) {                                                  \
    bias_grad_impl(grad_out, channels, plane, grad_b);                                               \
  }

TAPEGRAD_CONV_KERNELS(float)
TAPEGRAD_CONV_KERNELS(double)

void im2col(const float* x, const ConvGeometry& g, std::int64_t channels, float* col, std::int64_t ld) {
  if (g.tiles()) return unfold_tiles(x, g, channels, col, ld);
#ifdef TAPEGRAD_HAVE_AVX512
  if (avx512_windows(g)) {
    const avx512::LaneTap* taps = avx512::lane_table(g.w);
    switch (g.w.stride) {
      case 1: return im2col_avx512<1>(x, g, channels, col, ld, taps);
      case 2: return im2col_avx512<2>(x, g, channels, col, ld, taps);
      default: return im2col_avx512<0>(x, g, channels, col, ld, taps);
    }
  }
#endif
  im2col_portable(x, g, channels, col, ld);
}

void im2col(const double* x, const ConvGeometry& g, std::int64_t channels, double* col, std::int64_t ld) {
  if (g.tiles()) return unfold_tiles(x, g, channels, col, ld);
  im2col_portable(x, g, channels, col, ld);
}

void col2im(const float* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, float* x) {
#ifdef TAPEGRAD_HAVE_AVX512
  if (avx512_windows(g) && g.h.stride == 1 && g.w.stride == 1) {
    return col2im_avx512(col, ld, g, channels, x, avx512::lane_table(transposed(g.w)));
  }
#endif
  col2im_portable(col, ld, g, channels, x);
}

void col2im(const double* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, double* x) {
  col2im_portable(col, ld, g, channels, x);
}

void depthwise_forward(const float* x, const float* w, const float* bias, const ConvGeometry& g, float* out) {
#ifdef TAPEGRAD_HAVE_AVX512
  if (avx512_windows(g)) return depthwise_forward_avx512(x, w, bias, g, out);
#endif
  if (depthwise_avx2_fits(g)) return depthwise_forward_avx2(x, w, bias, g, out);
  depthwise_forward_portable(x, w, bias, g, out);
}

void depthwise_forward(const double* x, const double* w, const double* bias, const ConvGeometry& g,
                       double* out) {
  depthwise_forward_portable(x, w, bias, g, out);
}

void depthwise_backward(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                        float* grad_x, float* grad_w) {
#ifdef TAPEGRAD_HAVE_AVX512
  if (avx512_windows(g) && depthwise_backward_avx512(x, w, grad_out, g, grad_x, grad_w)) return;
#endif
  if (depthwise_avx2_fits(g)) return depthwise_backward_avx2(x, w, grad_out, g, grad_x, grad_w);
  depthwise_backward_portable(x, w, grad_out, g, grad_x, grad_w);
}

void depthwise_backward(const double* x, const double* w, const double* grad_out, const ConvGeometry& g,
                        double* grad_x, double* grad_w) {
  depthwise_backward_portable(x, w, grad_out, g, grad_x, grad_w);
}

}  // namespace tapegrad::detail
