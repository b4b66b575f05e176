// The loops behind max_pool2d. The forward sweeps the kernel taps in row-major order,
// keeping each window's best value and index in a branch-free select: f32 on a CPU with
// AVX-512 holds 16 windows in registers over all taps (avx512.hpp); the portable version,
// compiled for several instruction-set levels (simd.hpp), runs one vector loop per tap over
// a row of windows.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/kernels/avx512.hpp"
#include "ops/kernels/pool.hpp"
#include "autograd/simd.hpp"

namespace tapegrad::detail {
namespace {

/// The forward with indices of type I (int32 when the plane allows: the select then works
/// on lanes as wide as float's) and the column stride S known at compile time (0: g.w.stride).
template <class T, class I, std::int64_t S>
void max_pool_forward_impl(const T* x, const PoolGeometry& g, T* out, std::int64_t* indices) {
  const std::int64_t sw = S != 0 ? S : g.w.stride, ow_n = g.w.out;
  thread_local std::vector<I> scratch;
  I* at = nullptr;
  if constexpr (std::is_same_v<I, std::int64_t>) {
    (void)scratch;
  } else {
    scratch.resize(static_cast<std::size_t>(ow_n));
    at = scratch.data();
  }
  for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
    T* best = out + oh * ow_n;
    if constexpr (std::is_same_v<I, std::int64_t>) at = indices + oh * ow_n;
    std::fill_n(best, ow_n, -std::numeric_limits<T>::infinity());
    std::fill_n(at, ow_n, I(-1));
    for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
      const std::int64_t ih = g.h.start(oh) + ki * g.h.dilation;
      if (ih < 0 || ih >= g.h.in) continue;
      for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
        const TapRange r = tap_range(g.w, kj);
        const I base = static_cast<I>(ih * g.w.in + r.offset);
        const T* row = x + base;
        for (std::int64_t ow = r.lo; ow < r.hi; ++ow) {
          const T v = row[ow * sw], b = best[ow];
          const I a = at[ow];
          // A strict > keeps the first maximum; v != v lets NaN take over; a < 0 takes the
          // window's first element even when it is -inf.
          const bool take = (v > b) | (v != v) | (a < 0);
          best[ow] = take ? v : b;
          at[ow] = take ? static_cast<I>(base + ow * sw) : a;
        }
      }
    }
    if constexpr (!std::is_same_v<I, std::int64_t>) std::copy_n(at, ow_n, indices + oh * ow_n);
  }
}

template <class T, class I>
void max_pool_forward_dispatch(const T* x, const PoolGeometry& g, T* out, std::int64_t* indices) {
  switch (g.w.stride) {
    case 1: return max_pool_forward_impl<T, I, 1>(x, g, out, indices);
    case 2: return max_pool_forward_impl<T, I, 2>(x, g, out, indices);
    default: return max_pool_forward_impl<T, I, 0>(x, g, out, indices);
  }
}

template <class T>
void max_pool_forward_plane(const T* x, const PoolGeometry& g, T* out, std::int64_t* indices) {
  if (g.h.in * g.w.in <= std::numeric_limits<std::int32_t>::max()) {
    max_pool_forward_dispatch<T, std::int32_t>(x, g, out, indices);
  } else {
    max_pool_forward_dispatch<T, std::int64_t>(x, g, out, indices);
  }
}

#ifdef TAPEGRAD_HAVE_AVX512
/// The f32 forward with AVX-512: 16 windows of a row at a time, their best value and index
/// kept in registers over all taps. Needs plane_in < 2^31 (int32 lanes); taps =
/// avx512::lane_taps(g.w).
template <int S>
TAPEGRAD_AVX512 void max_pool_forward_avx512(const float* x, const PoolGeometry& g, float* out,
                                             std::int64_t* indices, const avx512::LaneTap* taps) {
  const std::int64_t ow_n = g.w.out, sw = g.w.stride, kw = g.w.kernel;
  const __m512i offsets = avx512::lane_offsets(sw);
  for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
    for (std::int64_t o0 = 0, blk = 0; o0 < ow_n; o0 += 16, ++blk) {
      __m512 best = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      __m512i at = _mm512_set1_epi32(-1);
      for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
        const std::int64_t ih = g.h.start(oh) + ki * g.h.dilation;
        if (ih < 0 || ih >= g.h.in) continue;
        for (std::int64_t kj = 0; kj < kw; ++kj) {
          const avx512::LaneTap& t = taps[blk * kw + kj];
          if (t.mask == 0) continue;
          const __m512 v = avx512::load_tap<S>(x + ih * g.w.in, t, offsets);
          const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<std::int32_t>(ih * g.w.in + t.offset)), offsets);
          // > keeps the first maximum, unordered lets NaN take over, at < 0 takes a window's
          // first element even when it is -inf.
          const __mmask16 take = t.mask & (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                                           _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) |
                                           _mm512_cmplt_epi32_mask(at, _mm512_setzero_si512()));
          best = _mm512_mask_mov_ps(best, take, v);
          at = _mm512_mask_mov_epi32(at, take, idx);
        }
      }
      const __mmask16 valid = avx512::lanes(0, std::min<std::int64_t>(16, ow_n - o0));
      _mm512_mask_storeu_ps(out + oh * ow_n + o0, valid, best);
      std::int64_t* dst = indices + oh * ow_n + o0;
      // (The maskz_ forms: the plain ones start from an "undefined" vector that GCC 12
      // reports as maybe-uninitialized.)
      const __m256i at_lo = _mm512_maskz_extracti64x4_epi64(0xF, at, 0);
      const __m256i at_hi = _mm512_maskz_extracti64x4_epi64(0xF, at, 1);
      _mm512_mask_storeu_epi64(dst, static_cast<__mmask8>(valid), _mm512_maskz_cvtepi32_epi64(0xFF, at_lo));
      _mm512_mask_storeu_epi64(dst + 8, static_cast<__mmask8>(valid >> 8), _mm512_maskz_cvtepi32_epi64(0xFF, at_hi));
    }
  }
}
#endif

template <class T>
void max_pool_backward_plane(const T* grad_out, const std::int64_t* indices, const PoolGeometry& g,
                             T* grad_x) {
  std::fill_n(grad_x, g.h.in * g.w.in, T(0));
  const std::int64_t n = g.h.out * g.w.out;
  for (std::int64_t o = 0; o < n; ++o) {
    if (indices[o] >= 0) grad_x[indices[o]] += grad_out[o];  // -1: a window of padding only
  }
}

}  // namespace

#define TAPEGRAD_POOL_KERNELS(T)                                                                    \
  TAPEGRAD_MULTIVERSION void max_pool_forward_portable(const T* x, const PoolGeometry& g, T* out,  \
                                                       std::int64_t* indices) {                     \
    max_pool_forward_plane(x, g, out, indices);                                                     \
  }                                                                                                 \
  TAPEGRAD_MULTIVERSION void max_pool_backward(const T* grad_out, const std::int64_t* indices,     \
                                               const PoolGeometry& g, T* grad_x) {                  \
    max_pool_backward_plane(grad_out, indices, g, grad_x);                                          \
  }

TAPEGRAD_POOL_KERNELS(float)
TAPEGRAD_POOL_KERNELS(double)

namespace {

/// The portable forward over `planes` consecutive planes (CPUs without AVX-512, and f64).
template <class T>
void max_pool_forward_planes(const T* x, const PoolGeometry& g, T* out, std::int64_t* indices, std::int64_t planes) {
  const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
  for (std::int64_t p = 0; p < planes; ++p) {
    max_pool_forward_portable(x + p * plane_in, g, out + p * plane_out, indices + p * plane_out);
  }
}

}  // namespace

void max_pool_forward(const float* x, const PoolGeometry& g, float* out, std::int64_t* indices,
                      std::int64_t planes) {
#ifdef TAPEGRAD_HAVE_AVX512
  const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
  if (avx512::available() && plane_in <= std::numeric_limits<std::int32_t>::max() && avx512::small_lane_table(g.w)) {
    const avx512::LaneTap* taps = avx512::lane_table(g.w);  // one table for all the planes
    auto kernel = g.w.stride == 1 ? max_pool_forward_avx512<1>
                  : g.w.stride == 2 ? max_pool_forward_avx512<2>
                                    : max_pool_forward_avx512<0>;
    for (std::int64_t p = 0; p < planes; ++p) kernel(x + p * plane_in, g, out + p * plane_out, indices + p * plane_out, taps);
    return;
  }
#endif
  max_pool_forward_planes(x, g, out, indices, planes);
}

void max_pool_forward(const double* x, const PoolGeometry& g, double* out, std::int64_t* indices,
                      std::int64_t planes) {
  max_pool_forward_planes(x, g, out, indices, planes);
}

}  // namespace tapegrad::detail
