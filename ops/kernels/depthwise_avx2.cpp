// The depthwise conv kernels (one input channel per group) for f32 on CPUs with AVX2 and
// FMA but no AVX-512: what depthwise_forward / depthwise_backward run there (conv.cpp).
//
// Layout: each plane a kernel reads is first copied into a zero-padded buffer, split by
// column phase: phase p, row r, column j holds input (r - pad_top, j * stride + p - pad_left),
// 0 outside the input. The tap kj (kj * dilation = q * stride + p) of the outputs
// [o0, o0 + 8) then reads 8 consecutive floats of phase p from column o0 + q, whatever the
// stride and padding, and the buffer is wide and tall enough for whole vectors and whole
// blocks of rows: the loops below have no bounds tests and no masks (only the outputs of a
// row's last block are stored, and reloaded when accumulating, through masks).
//   forward:  out[m] = bias[m] + Σ_taps k[m] * x; R rows × V vectors of 8 outputs per
//             channel in registers over all taps, each input vector loaded once for the
//             M channels of a channel multiplier (M ≤ 3: M·R·V ≤ 12 of the 16 registers).
//   grad_x:   stride 1: the same window sum over grad_out, kernel reversed (the transposed
//             axes); other strides: the portable loop.
//   grad_w:   per kernel row, the K taps' sums over the plane in K accumulators (× rows ×
//             channels), added up lane by lane at the end.
#include <algorithm>
#include <array>
#include <vector>

#include "ops/kernels/conv.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TAPEGRAD_AVX2 __attribute__((target("avx2,fma")))

namespace tapegrad::detail {
namespace {

constexpr std::int64_t kLanes = 8;
constexpr std::int64_t kRowBlock = 4;    // output rows a buffer is padded for (window sums: R)
constexpr std::int64_t kColBlock = 16;   // output columns a buffer is padded for (V · 8)

std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }
std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/// A zero-padded, phase-split copy of one plane read through axes h, w (see the top).
struct Padded {
  std::int64_t phases = 1, rows = 0, cols = 0;
  std::int64_t size() const { return phases * rows * cols; }
  std::int64_t tap(const Axis& w, std::int64_t kj) const {  // offset of tap kj's first column
    const std::int64_t at = kj * w.dilation;
    return (at % w.stride) * rows * cols + at / w.stride;
  }
};

Padded padded_layout(const Axis& h, const Axis& w) {
  Padded p;
  p.phases = std::min(w.stride, w.span());
  p.rows = (round_up(h.out, kRowBlock) - 1) * h.stride + h.span();
  p.cols = round_up(w.out, kColBlock) + (w.span() - 1) / w.stride;
  return p;
}

/// Fills buf (resized to p.size()) with the plane `in` (h.in × w.in) as laid out by p.
/// pad_begin may be negative (the transposed axes of a large padding): rows are cropped.
/// Each element is written once (zeros around the copy).
void pad_plane(const float* in, const Axis& h, const Axis& w, const Padded& p, std::vector<float>& buf) {
  buf.resize(static_cast<std::size_t>(p.size()));
  for (std::int64_t ph = 0; ph < p.phases; ++ph) {
    // columns j whose input column j * stride + ph - pad_begin lies in [0, w.in)
    const std::int64_t shift = ph - w.pad_begin;
    const std::int64_t lo = std::min(p.cols, std::max<std::int64_t>(0, floor_div(-shift + w.stride - 1, w.stride)));
    const std::int64_t hi = std::max(lo, std::min(p.cols, floor_div(w.in - 1 - shift, w.stride) + 1));
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* dst = buf.data() + (ph * p.rows + r) * p.cols;
      if (r < h.pad_begin || r >= h.in + h.pad_begin) {
        std::fill_n(dst, p.cols, 0.0f);
        continue;
      }
      const float* src = in + (r - h.pad_begin) * w.in;
      std::fill_n(dst, lo, 0.0f);
      if (w.stride == 1) {
        std::copy(src + lo + shift, src + hi + shift, dst + lo);
      } else {
        for (std::int64_t j = lo; j < hi; ++j) dst[j] = src[j * w.stride + shift];
      }
      std::fill(dst + hi, dst + p.cols, 0.0f);
    }
  }
}

/// grad_out planes copied with rows and columns rounded up (zeros beyond), so that whole
/// vectors and blocks of rows read zeros past the plane.
std::int64_t padded_cols(const Axis& w) { return round_up(w.out, kLanes); }
void pad_grad(const float* gy, std::int64_t planes, const Axis& h, const Axis& w, std::vector<float>& buf) {
  const std::int64_t rows = round_up(h.out, kRowBlock), cols = padded_cols(w);
  buf.resize(static_cast<std::size_t>(planes * rows * cols));
  for (std::int64_t m = 0; m < planes; ++m) {
    for (std::int64_t r = 0; r < rows; ++r) {
      float* dst = buf.data() + (m * rows + r) * cols;
      const std::int64_t n = r < h.out ? w.out : 0;
      if (n > 0) std::copy_n(gy + (m * h.out + r) * w.out, n, dst);
      std::fill(dst + n, dst + cols, 0.0f);
    }
  }
}

TAPEGRAD_AVX2 inline __m256i first_lanes(std::int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TAPEGRAD_AVX2 inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// out[m, oh, ow] = init[m] (0 if null; out's own value when accumulating) + Σ_taps
/// k[m, ki, kj] * buf(ki, kj) for the M channels whose kernels are kh·kw apart and whose
/// planes are one output plane apart. K > 0: a K×K kernel (unrolled), 0: any size.
template <int K, int M, int R, int V>
TAPEGRAD_AVX2 void window_sum(const float* buf, const Padded& p, const Axis& h, const Axis& w,
                              const float* k, const float* init, float* out, bool accumulate) {
  const std::int64_t kh = K > 0 ? K : h.kernel, kw = K > 0 ? K : w.kernel, plane = h.out * w.out;
  std::array<std::int64_t, (K > 0 ? K : 1)> fixed{};
  thread_local std::vector<std::int64_t> any;
  if constexpr (K == 0) any.resize(static_cast<std::size_t>(kw));
  std::int64_t* taps = K > 0 ? fixed.data() : any.data();
  for (std::int64_t kj = 0; kj < kw; ++kj) taps[kj] = p.tap(w, kj);
  for (std::int64_t oh0 = 0; oh0 < h.out; oh0 += R) {
    const std::int64_t rows = std::min<std::int64_t>(R, h.out - oh0);
    for (std::int64_t o0 = 0; o0 < w.out; o0 += V * kLanes) {
      __m256 acc[M][R][V];
      for (int m = 0; m < M; ++m) {
        for (int r = 0; r < R; ++r) {
          for (int v = 0; v < V; ++v) {
            const std::int64_t at = o0 + v * kLanes;
            float* dst = out + m * plane + (oh0 + r) * w.out + at;
            acc[m][r][v] = accumulate && r < rows && at < w.out
                               ? _mm256_maskload_ps(dst, first_lanes(w.out - at))
                               : _mm256_set1_ps(init != nullptr ? init[m] : 0.0f);
          }
        }
      }
      for (std::int64_t ki = 0; ki < kh; ++ki) {
        const float* row = buf + ((oh0 * h.stride) + ki * h.dilation) * p.cols + o0;
        for (std::int64_t kj = 0; kj < kw; ++kj) {
          const float* src = row + taps[kj];
          for (int r = 0; r < R; ++r) {
            for (int v = 0; v < V; ++v) {
              const __m256 xv = _mm256_loadu_ps(src + r * h.stride * p.cols + v * kLanes);  // shared by the M channels
              for (int m = 0; m < M; ++m) {
                acc[m][r][v] = _mm256_fmadd_ps(_mm256_set1_ps(k[(m * kh + ki) * kw + kj]), xv, acc[m][r][v]);
              }
            }
          }
        }
      }
      for (int m = 0; m < M; ++m) {
        for (int r = 0; r < R; ++r) {  // (a constant trip count keeps acc in registers)
          for (int v = 0; v < V; ++v) {
            const std::int64_t at = o0 + v * kLanes;
            if (r >= rows || at >= w.out) continue;
            float* dst = out + m * plane + (oh0 + r) * w.out + at;
            if (w.out - at >= kLanes) {
              _mm256_storeu_ps(dst, acc[m][r][v]);
            } else {
              _mm256_maskstore_ps(dst, first_lanes(w.out - at), acc[m][r][v]);
            }
          }
        }
      }
    }
  }
}

/// window_sum for `m` channels in passes of 3, 2 or 1 (M·R·V accumulators ≤ 12).
template <int K>
void window_sum_channels(const float* buf, const Padded& p, const Axis& h, const Axis& w, const float* k,
                         const float* init, float* out, bool accumulate, std::int64_t m) {
  const std::int64_t kk = h.kernel * w.kernel, plane = h.out * w.out;
  const int pass = m % 3 == 0 ? 3 : m % 2 == 0 ? 2 : 1;
  for (std::int64_t m0 = 0; m0 < m; m0 += pass) {
    const float* i0 = init != nullptr ? init + m0 : nullptr;
    switch (pass) {
      case 3: window_sum<K, 3, 4, 1>(buf, p, h, w, k + m0 * kk, i0, out + m0 * plane, accumulate); break;
      case 2: window_sum<K, 2, 4, 1>(buf, p, h, w, k + m0 * kk, i0, out + m0 * plane, accumulate); break;
      default: window_sum<K, 1, 4, 2>(buf, p, h, w, k + m0 * kk, i0, out + m0 * plane, accumulate); break;
    }
  }
}

void window_sum_any(const float* buf, const Padded& p, const Axis& h, const Axis& w, const float* k,
                    const float* init, float* out, bool accumulate, std::int64_t m) {
  if (h.kernel == 3 && w.kernel == 3) return window_sum_channels<3>(buf, p, h, w, k, init, out, accumulate, m);
  if (h.kernel == 5 && w.kernel == 5) return window_sum_channels<5>(buf, p, h, w, k, init, out, accumulate, m);
  window_sum_channels<0>(buf, p, h, w, k, init, out, accumulate, m);
}

/// grad_k[m, ki, kj] += Σ gy[m, oh, ow] * buf(ki, kj) for M channels (gy as pad_grad lays
/// it out), K×K: per kernel row, M·R·K accumulators (R rows at a time), the K input
/// vectors of a row loaded once for the M channels.
template <int K, int M, int R>
TAPEGRAD_AVX2 void window_dot(const float* buf, const Padded& p, const Axis& h, const Axis& w, const float* gy,
                              float* grad_k) {
  const std::int64_t gcols = padded_cols(w), gplane = round_up(h.out, kRowBlock) * gcols;
  std::array<std::int64_t, K> taps{};
  for (std::int64_t kj = 0; kj < K; ++kj) taps[static_cast<std::size_t>(kj)] = p.tap(w, kj);
  for (std::int64_t ki = 0; ki < K; ++ki) {
    __m256 acc[M][R][K];
    for (int m = 0; m < M; ++m) {
      for (int r = 0; r < R; ++r) {
        for (int kj = 0; kj < K; ++kj) acc[m][r][kj] = _mm256_setzero_ps();
      }
    }
    for (std::int64_t oh = 0; oh < h.out; oh += R) {  // rows past h.out: gy is 0 there
      for (std::int64_t o0 = 0; o0 < w.out; o0 += kLanes) {
        for (int r = 0; r < R; ++r) {
          const float* row = buf + ((oh + r) * h.stride + ki * h.dilation) * p.cols + o0;
          __m256 xv[K];
          for (int kj = 0; kj < K; ++kj) xv[kj] = _mm256_loadu_ps(row + taps[static_cast<std::size_t>(kj)]);
          for (int m = 0; m < M; ++m) {
            const __m256 gv = _mm256_loadu_ps(gy + m * gplane + (oh + r) * gcols + o0);
            for (int kj = 0; kj < K; ++kj) acc[m][r][kj] = _mm256_fmadd_ps(gv, xv[kj], acc[m][r][kj]);
          }
        }
      }
    }
    for (int m = 0; m < M; ++m) {
      for (int kj = 0; kj < K; ++kj) {
        __m256 sum = acc[m][0][kj];
        for (int r = 1; r < R; ++r) sum = _mm256_add_ps(sum, acc[m][r][kj]);
        grad_k[(m * K + ki) * K + kj] += lane_sum(sum);
      }
    }
  }
}

/// window_dot for any kernel size, one channel: one tap at a time, four rows in four
/// accumulators.
TAPEGRAD_AVX2 void window_dot_any(const float* buf, const Padded& p, const Axis& h, const Axis& w,
                                  const float* gy, float* grad_k) {
  const std::int64_t gcols = padded_cols(w);
  for (std::int64_t ki = 0; ki < h.kernel; ++ki) {
    for (std::int64_t kj = 0; kj < w.kernel; ++kj) {
      const float* tap = buf + ki * h.dilation * p.cols + p.tap(w, kj);
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (std::int64_t oh = 0; oh < h.out; oh += 4) {
        for (std::int64_t o0 = 0; o0 < w.out; o0 += kLanes) {
          for (int r = 0; r < 4; ++r) {
            const __m256 gv = _mm256_loadu_ps(gy + (oh + r) * gcols + o0);
            acc[r] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(tap + (oh + r) * h.stride * p.cols + o0), acc[r]);
          }
        }
      }
      grad_k[ki * w.kernel + kj] += lane_sum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    }
  }
}

/// window_dot for `m` channels: K = 3 in passes of 3 or 2 (one row at a time) or 1 (two
/// rows), K = 5 in passes of 2 (one row) or 1 (two rows): at most 10 accumulators.
void window_dot_channels(const float* buf, const Padded& p, const Axis& h, const Axis& w, const float* gy,
                         float* grad_k, std::int64_t m) {
  const std::int64_t kk = h.kernel * w.kernel, gplane = round_up(h.out, kRowBlock) * padded_cols(w);
  const bool k3 = h.kernel == 3 && w.kernel == 3, k5 = h.kernel == 5 && w.kernel == 5;
  const int pass = k3 && m % 3 == 0 ? 3 : (k3 || k5) && m % 2 == 0 ? 2 : 1;
  for (std::int64_t m0 = 0; m0 < m; m0 += pass) {
    const float* g = gy + m0 * gplane;
    float* dst = grad_k + m0 * kk;
    if (k3) {
      if (pass == 3) window_dot<3, 3, 1>(buf, p, h, w, g, dst);
      else if (pass == 2) window_dot<3, 2, 1>(buf, p, h, w, g, dst);
      else window_dot<3, 1, 2>(buf, p, h, w, g, dst);  // R = 2: the row blocks are padded to 4
    } else if (k5) {
      if (pass == 2) window_dot<5, 2, 1>(buf, p, h, w, g, dst);
      else window_dot<5, 1, 2>(buf, p, h, w, g, dst);
    } else {
      window_dot_any(buf, p, h, w, g, dst);
    }
  }
}

/// The axis of the stride-1 input gradient seen as a window sum over grad_out: input row
/// i reads grad_out rows i - (d (k-1) - p) + ki d with the kernel reversed.
Axis transposed(const Axis& a) {
  return {a.out, a.kernel, 1, a.dilation * (a.kernel - 1) - a.pad_begin,
          a.dilation * (a.kernel - 1) - a.pad_end, a.dilation, a.in};
}

bool unit_stride(const ConvGeometry& g) { return g.h.stride == 1 && g.w.stride == 1; }

}  // namespace

bool depthwise_avx2_fits(const ConvGeometry& g) {
  static const bool cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!cpu || g.plane_out() == 0) return false;
  // The padded copies grow with the padding and the stride: keep them near the planes' size
  // (a huge padding around a tiny plane takes the portable loops).
  const std::int64_t limit = 16 * (g.plane_in() + g.plane_out()) + (std::int64_t{1} << 16);
  const std::int64_t biggest = std::max(padded_layout(g.h, g.w).size(),
                                        unit_stride(g) ? padded_layout(transposed(g.h), transposed(g.w)).size() : 0);
  return biggest <= limit && g.w.out < (std::int64_t{1} << 30);
}

void depthwise_forward_avx2(const float* x, const float* w, const float* bias, const ConvGeometry& g, float* out) {
  thread_local std::vector<float> padded;
  const Padded p = padded_layout(g.h, g.w);
  const std::int64_t mult = g.group_out(), kk = g.h.kernel * g.w.kernel;
  for (std::int64_t c = 0; c < g.channels; ++c) {
    pad_plane(x + c * g.plane_in(), g.h, g.w, p, padded);
    const std::int64_t o = c * mult;
    window_sum_any(padded.data(), p, g.h, g.w, w + o * kk, bias != nullptr ? bias + o : nullptr,
                   out + o * g.plane_out(), false, mult);
  }
}

void depthwise_backward_avx2(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                             float* grad_x, float* grad_w) {
  thread_local std::vector<float> padded, grads, reversed;
  const std::int64_t mult = g.group_out(), kk = g.h.kernel * g.w.kernel;
  const Padded p = padded_layout(g.h, g.w);
  for (std::int64_t c = 0; c < g.channels; ++c) {
    const std::int64_t o = c * mult;
    if (grad_w != nullptr) {
      pad_grad(grad_out + o * g.plane_out(), mult, g.h, g.w, grads);
      pad_plane(x + c * g.plane_in(), g.h, g.w, p, padded);
      window_dot_channels(padded.data(), p, g.h, g.w, grads.data(), grad_w + o * kk, mult);
    }
    if (grad_x == nullptr || !unit_stride(g)) continue;
    const Axis th = transposed(g.h), tw = transposed(g.w);
    const Padded tp = padded_layout(th, tw);
    reversed.resize(static_cast<std::size_t>(kk));
    for (std::int64_t m = 0; m < mult; ++m) {
      std::reverse_copy(w + (o + m) * kk, w + (o + m + 1) * kk, reversed.begin());
      pad_plane(grad_out + (o + m) * g.plane_out(), th, tw, tp, padded);
      // The first output channel of the input channel writes its gradient, the others add.
      window_sum_any(padded.data(), tp, th, tw, reversed.data(), nullptr, grad_x + c * g.plane_in(), m != 0, 1);
    }
  }
  // At stride > 1 a tap-by-tap scatter into a padded buffer took more instructions than
  // the portable loop (callgrind, 32×28×28 3×3 stride 2): grad_x stays with it.
  if (grad_x != nullptr && !unit_stride(g)) depthwise_backward_portable(x, w, grad_out, g, grad_x, nullptr);
}

}  // namespace tapegrad::detail

#else

namespace tapegrad::detail {

bool depthwise_avx2_fits(const ConvGeometry&) { return false; }
void depthwise_forward_avx2(const float* x, const float* w, const float* bias, const ConvGeometry& g, float* out) {
  depthwise_forward_portable(x, w, bias, g, out);
}
void depthwise_backward_avx2(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                             float* grad_x, float* grad_w) {
  depthwise_backward_portable(x, w, grad_out, g, grad_x, grad_w);
}

}  // namespace tapegrad::detail

#endif
