// Direct convolution with the output channels in the vector lanes (AVX-512, f32), for
// groups of at most 16 outputs (LeNet's conv2: 6 -> 16 channels, 5×5): no unfolded input.
// - Forward: a block of up to 16 pixels along an output row keeps one accumulator per
//   pixel, whose lanes are the output channels; each tap adds weight vector × broadcast input.
// - Weight gradient, transposed [(c, ki, kj), o]: one accumulator per tap for a few kernel
//   rows at a time while it walks the output pixels, each adding grad_y vector × broadcast
//   input.
// Both read the input with its padding written out as zeros, so no tap needs a bounds test.
#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "ops/kernels/avx512.hpp"
#include "ops/kernels/conv.hpp"
#include "tapegrad/error.hpp"

namespace tapegrad::detail {

#ifdef TAPEGRAD_HAVE_AVX512
namespace {

/// An image's input with its padding written out (or the input itself when it has none):
/// rows `width` apart, channels `plane` apart.
struct Padded {
  const float* data;
  std::int64_t width, plane;
};

Padded pad_image(const float* x, const ConvGeometry& g, std::vector<float>& buffer) {
  const Axis &h = g.h, &w = g.w;
  if (h.pad_begin == 0 && h.pad_end == 0 && w.pad_begin == 0 && w.pad_end == 0) return {x, w.in, g.plane_in()};
  const std::int64_t width = w.in + w.pad_begin + w.pad_end, plane = (h.in + h.pad_begin + h.pad_end) * width;
  buffer.assign(static_cast<std::size_t>(g.channels * plane), 0.0f);
  for (std::int64_t c = 0; c < g.channels; ++c) {
    for (std::int64_t ih = 0; ih < h.in; ++ih) {
      std::copy_n(x + c * g.plane_in() + ih * w.in, w.in, buffer.data() + c * plane + (ih + h.pad_begin) * width + w.pad_begin);
    }
  }
  return {buffer.data(), width, plane};
}

/// tile[t][o] = init[o] + Σ_{c, i, j} wt[(c, i, j)][o] · x[c, i·dh, t + j] for T pixels of
/// one output row (x points at the row's first input element in the padded group input).
template <int T>
TAPEGRAD_AVX512 void output_tile(const float* x, const Padded& p, const ConvGeometry& g, const float* wt,
                                 const float* init, float* tile) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_loadu_ps(init);
  const std::int64_t kh = g.h.kernel, kw = g.w.kernel;
  for (std::int64_t c = 0; c < g.group_in(); ++c) {
    for (std::int64_t i = 0; i < kh; ++i) {
      const float* row = x + c * p.plane + i * g.h.dilation * p.width;
      const float* w = wt + (c * kh + i) * kw * 16;
      for (std::int64_t j = 0; j < kw; ++j) {
        const __m512 wv = _mm512_loadu_ps(w + j * 16);
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(wv, _mm512_set1_ps(row[t + j]), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(tile + t * 16, acc[t]);
}

using TileFn = void (*)(const float*, const Padded&, const ConvGeometry&, const float*, const float*, float*);

template <std::size_t... T>
constexpr std::array<TileFn, sizeof...(T) + 1> tile_table(std::index_sequence<T...>) {
  return {nullptr, &output_tile<static_cast<int>(T) + 1>...};
}
constexpr auto kTiles = tile_table(std::make_index_sequence<16>());

/// grad_wt[(c, i, j)][o] += Σ_{oh, ow} gt[oh, ow][o] · x[c, oh·sh + i·dh, ow + j] for the
/// kernel rows q = c·kh + i in [q0, q0 + n), n ≤ R (R·KW accumulators); gt is grad_y
/// transposed to [pixel][16].
template <int KW, int R>
TAPEGRAD_AVX512 void weight_grad_rows(const float* x, const Padded& p, const ConvGeometry& g, const float* gt,
                                      std::int64_t q0, int n, float* grad_wt, __mmask16 out_lanes) {
  __m512 acc[R * KW];
  for (auto& a : acc) a = _mm512_setzero_ps();
  std::int64_t offset[R];
  for (int r = 0; r < R; ++r) {
    const std::int64_t q = q0 + std::min(r, n - 1);
    offset[r] = (q / g.h.kernel) * p.plane + (q % g.h.kernel) * g.h.dilation * p.width;
  }
  const std::int64_t ow_n = g.w.out;
  for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
    const float* base = x + oh * g.h.stride * p.width;
    const float* gp = gt + oh * ow_n * 16;
    for (std::int64_t ow = 0; ow < ow_n; ++ow) {
      const __m512 gv = _mm512_loadu_ps(gp + ow * 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        if (r >= n) break;
        const float* s = base + offset[r] + ow;
#pragma GCC unroll 5
        for (int j = 0; j < KW; ++j) acc[r * KW + j] = _mm512_fmadd_ps(gv, _mm512_set1_ps(s[j]), acc[r * KW + j]);
      }
    }
  }
  const std::int64_t go = g.group_out();
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < KW; ++j) {
      float* dst = grad_wt + ((q0 + r) * KW + j) * go;
      _mm512_mask_storeu_ps(dst, out_lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(out_lanes, dst), acc[r * KW + j]));
    }
  }
}

/// Rows of weight_grad_rows per pass: R·KW accumulators of the 32 vector registers.
template <int KW, int R>
TAPEGRAD_AVX512 void weight_grad_group(const float* x, const Padded& p, const ConvGeometry& g, const float* gt,
                                       float* grad_wt, __mmask16 out_lanes) {
  const std::int64_t kernel_rows = g.group_in() * g.h.kernel;
  for (std::int64_t q0 = 0; q0 < kernel_rows; q0 += R) {
    weight_grad_rows<KW, R>(x, p, g, gt, q0, static_cast<int>(std::min<std::int64_t>(R, kernel_rows - q0)), grad_wt,
                            out_lanes);
  }
}

}  // namespace

namespace {
/// What the direct kernels take: AVX-512, 8 or more outputs over 4 or more inputs per group,
/// a 3- or 5-wide kernel of width stride and dilation 1.
bool direct_kernels_apply(const ConvGeometry& g) {
  return avx512::available() && g.group_out() >= 8 && g.group_in() >= 4 && g.w.stride == 1 && g.w.dilation == 1 &&
         (g.w.kernel == 3 || g.w.kernel == 5);
}
}  // namespace

/// Measured fwd+bwd against im2col + GEMM (batch 32, 1 thread): 8 to 16 outputs over 4 or
/// more input channels gain 15-40 % (16 outputs over 64 channels at 28²: 22 vs 36 ms); fewer
/// outputs waste most lanes (4 over 6 channels: 1.3 vs 0.56 ms), and fewer input channels
/// leave the weight gradient short of kernel rows (16 over 3 channels: 8.5 vs 7.8 ms).
bool direct_conv_fits(const ConvGeometry& g) { return direct_kernels_apply(g) && g.group_out() <= 16; }

/// The weight gradient keeps every output's 16 lanes in registers over one image's pixels, so
/// it needs many pixels per output block. Measured fwd+bwd on a Zen 5 (batch 32, 3×3, median
/// of two runs, direct vs GEMM): 64 outputs at 56² 158 vs 172 ms (1 thread), 80-94 vs
/// 100-102 (2); 64 at 32² 27-30 vs 32 (2 threads); but 128 at 16² 30 vs 27, 256 at 8² 42 vs
/// 32, 512 at 4² 110 vs 30 (2 threads): a ResNet-18 step took 1.5x longer with them.
bool direct_weight_grad_fits(const ConvGeometry& g) {
  return direct_kernels_apply(g) && (g.group_out() <= 16 || (g.group_out() <= 64 && g.plane_out() >= 1024));
}

TAPEGRAD_AVX512 void direct_conv_forward(const float* x, const float* wt, const float* bias, const ConvGeometry& g,
                                         float* out) {
  thread_local std::vector<float> padded_buffer;
  const Padded p = pad_image(x, g, padded_buffer);
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out(), ow_n = g.w.out;
  const __mmask16 out_lanes = avx512::lanes(0, go);
  alignas(64) float tile[16 * 16];
  alignas(64) float init[16];
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    const float* xg = p.data + gi * g.group_in() * p.plane;
    const float* wg = wt + gi * rows * 16;
    _mm512_store_ps(init, bias != nullptr ? _mm512_maskz_loadu_ps(out_lanes, bias + gi * go) : _mm512_setzero_ps());
    float* yg = out + gi * go * plane;
    for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
      const float* xrow = xg + oh * g.h.stride * p.width;
      for (std::int64_t ow0 = 0; ow0 < ow_n; ow0 += 16) {
        const std::int64_t n = std::min<std::int64_t>(16, ow_n - ow0);
        kTiles[static_cast<std::size_t>(n)](xrow + ow0, p, g, wg, init, tile);
        float* dst = yg + oh * ow_n + ow0;
        for (std::int64_t o = 0; o < go; ++o) {
          for (std::int64_t t = 0; t < n; ++t) dst[o * plane + t] = tile[t * 16 + o];
        }
      }
    }
  }
}

TAPEGRAD_AVX512 void direct_conv_weight_grad(const float* x, const float* grad_out, const ConvGeometry& g,
                                             float* grad_wt) {
  thread_local std::vector<float> padded_buffer, transposed_buffer;
  const Padded p = pad_image(x, g, padded_buffer);
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
  transposed_buffer.resize(static_cast<std::size_t>(plane * 16));
  float* gt = transposed_buffer.data();
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    const float* xg = p.data + gi * g.group_in() * p.plane;
    for (std::int64_t o0 = 0; o0 < go; o0 += 16) {  // 16 output channels at a time
      const std::int64_t lanes = std::min<std::int64_t>(16, go - o0);
      const float* gy = grad_out + (gi * go + o0) * plane;
      for (std::int64_t q = 0; q < plane; ++q) {  // [lanes, plane] -> [plane, 16]
        for (std::int64_t o = 0; o < 16; ++o) gt[q * 16 + o] = o < lanes ? gy[o * plane + q] : 0.0f;
      }
      float* gw = grad_wt + gi * rows * go + o0;
      if (g.w.kernel == 3) {
        weight_grad_group<3, 8>(xg, p, g, gt, gw, avx512::lanes(0, lanes));
      } else {
        weight_grad_group<5, 5>(xg, p, g, gt, gw, avx512::lanes(0, lanes));
      }
    }
  }
}

#else

// Without AVX-512 nothing fits, and conv2d never calls the two kernels.
bool direct_conv_fits(const ConvGeometry&) { return false; }
bool direct_weight_grad_fits(const ConvGeometry&) { return false; }
void direct_conv_forward(const float*, const float*, const float*, const ConvGeometry&, float*) {
  throw Error("direct_conv_forward: built without AVX-512 (direct_conv_fits is false)");
}
void direct_conv_weight_grad(const float*, const float*, const ConvGeometry&, float*) {
  throw Error("direct_conv_weight_grad: built without AVX-512 (direct_conv_fits is false)");
}

#endif

}  // namespace tapegrad::detail
