// Winograd F(2×2, 3×3) (Lavin & Gray, 2015): each 2×2 output tile of a 3×3 stride-1
// convolution is Y = Aᵀ [Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B)] A, with d_c the tile's 4×4 input patch
// of channel c and
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 -1 -1].
// For each of the 16 positions ξ of the 4×4 transformed tile, the sum over c is a GEMM:
// M[ξ] (O × tiles) = U[ξ] (O × C) · V[ξ] (C × tiles). The tiles (over the whole batch) are
// taken in blocks whose V and M stay in L2 while the 16 GEMMs read and write them; blocks
// are split across threads, each GEMM running on its calling thread (oneDNN runs single-
// threaded inside a parallel region). Partial tiles at odd sizes read zeros past the input
// and drop the outputs past its end.
//
// f32 rounding: U has entries up to 2.25·max|w| and V up to 4·max|x| (Bᵀ d B adds four
// inputs), and each output adds nine M entries, so the error is a few times that of the
// direct sum; tests/ops/test_conv_kernels.cpp checks it against an f64 reference.
#include "ops/kernels/winograd.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <vector>

#include <omp.h>

#include "autograd/block_cache.hpp"
#include "autograd/simd.hpp"
#include "ops/kernels/gemm.hpp"

namespace tapegrad::detail {
namespace {

/// A block's V [16][C][tiles] and M [16][O][tiles] stay within about this many bytes.
constexpr std::int64_t kBlockBytes = std::int64_t{1} << 20;
/// ... but a block has at least this many tiles: the GEMMs' column count, below which they
/// run far from their peak, and U (16·O·C floats) is read again for every block. (ResNet-18's
/// layers, one thread: 64 tiles 15-30 % slower than 128 at 128 to 512 channels, 256 no faster.)
constexpr std::int64_t kMinBlockTiles = 128;

/// One 3×3 stride-1 convolution as the kernels see it: C inputs, O outputs, the input
/// [N, C, H, W] read from row -pad_top and column -pad_left (zeros outside).
struct Problem {
  std::int64_t batch, in_channels, out_channels, h, w, h_out, w_out, pad_top, pad_left;
  std::int64_t tiles_h() const { return (h_out + 1) / 2; }
  std::int64_t tiles_w() const { return (w_out + 1) / 2; }
  std::int64_t tiles() const { return batch * tiles_h() * tiles_w(); }
};

/// U[ξ][o][c] = (G g Gᵀ)[ξ] for the 3×3 kernel g = tap(o, c, ·, ·). Each output's 16 rows
/// are built in a buffer and copied out whole: U's 16 planes are 4·O·C bytes apart, and
/// stores that far apart fall into the same cache sets.
template <class Tap>
void transform_weight(std::int64_t out_channels, std::int64_t in_channels, Tap tap, float* u, bool parallel) {
  const std::int64_t stride = out_channels * in_channels;
#pragma omp parallel for schedule(static) if (parallel && stride > 4096)
  for (std::int64_t o = 0; o < out_channels; ++o) {
    thread_local std::vector<float> rows;
    rows.resize(static_cast<std::size_t>(16 * in_channels));
    for (std::int64_t c = 0; c < in_channels; ++c) {
      float gg[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        const float g0 = tap(o, c, 0, j), g1 = tap(o, c, 1, j), g2 = tap(o, c, 2, j);
        gg[0][j] = g0;
        gg[1][j] = 0.5f * (g0 + g1 + g2);
        gg[2][j] = 0.5f * (g0 - g1 + g2);
        gg[3][j] = g2;
      }
      float* dst = rows.data() + c;
      for (int i = 0; i < 4; ++i) {  // (G g) Gᵀ
        const float g0 = gg[i][0], g1 = gg[i][1], g2 = gg[i][2];
        dst[(i * 4 + 0) * in_channels] = g0;
        dst[(i * 4 + 1) * in_channels] = 0.5f * (g0 + g1 + g2);
        dst[(i * 4 + 2) * in_channels] = 0.5f * (g0 - g1 + g2);
        dst[(i * 4 + 3) * in_channels] = g2;
      }
    }
    for (std::int64_t xi = 0; xi < 16; ++xi) {
      std::copy_n(rows.data() + xi * in_channels, in_channels, u + xi * stride + o * in_channels);
    }
  }
}

/// A run of a block's tiles along one tile row of one image: tiles [first, first + count)
/// of the row, at columns k0 .. k0 + count of the block's V and M.
struct Run {
  std::int64_t image, tile_row, first, count, k0;
};

void block_runs(const Problem& p, std::int64_t t0, std::int64_t count, std::vector<Run>& runs) {
  runs.clear();
  const std::int64_t tw = p.tiles_w(), per_row = tw;
  for (std::int64_t t = t0; t < t0 + count;) {
    const std::int64_t row = t / per_row, first = t % per_row, n = std::min(tw - first, t0 + count - t);
    runs.push_back({row / p.tiles_h(), row % p.tiles_h(), first, n, t - t0});
    t += n;
  }
}

/// V[ξ][c][k] = (Bᵀ d B)[ξ] for each tile k of a run and each input channel c: Bᵀ on four
/// whole input rows (zeros in the padding), then B on each tile's four columns of them.
TAPEGRAD_MULTIVERSION void transform_input(const Problem& p, const float* x, const Run& run, float* v,
                                           std::int64_t ld, float* rows) {
  const std::int64_t plane = p.h * p.w, stride = p.in_channels * ld, width = 2 * run.count + 2;
  const std::int64_t row0 = 2 * run.tile_row - p.pad_top, col0 = 2 * run.first - p.pad_left;
  const std::int64_t lo = std::max<std::int64_t>(-col0, 0), hi = std::clamp<std::int64_t>(p.w - col0, lo, width);
  float* r[4] = {rows, rows + width, rows + 2 * width, rows + 3 * width};
  for (std::int64_t c = 0; c < p.in_channels; ++c) {
    const float* src = x + (run.image * p.in_channels + c) * plane;
    float d[4][66];  // up to 32 tiles' input rows at a time
    for (std::int64_t i = 0; i < 4; ++i) {
      const std::int64_t ih = row0 + i;
      float* dst = r[i];
      if (ih < 0 || ih >= p.h) {
        std::fill_n(dst, width, 0.0f);
        continue;
      }
      std::fill_n(dst, lo, 0.0f);
      std::copy(src + ih * p.w + col0 + lo, src + ih * p.w + col0 + hi, dst + lo);
      std::fill(dst + hi, dst + width, 0.0f);
    }
    for (std::int64_t k0 = 0; k0 < run.count; k0 += 32) {
      const std::int64_t n = std::min<std::int64_t>(32, run.count - k0), cols = 2 * n + 2;
      for (std::int64_t j = 0; j < cols; ++j) {  // Bᵀ d
        const float a = r[0][2 * k0 + j], b = r[1][2 * k0 + j], e = r[2][2 * k0 + j], f = r[3][2 * k0 + j];
        d[0][j] = a - e;
        d[1][j] = b + e;
        d[2][j] = e - b;
        d[3][j] = b - f;
      }
      float* dst = v + c * ld + run.k0 + k0;
      for (int i = 0; i < 4; ++i) {  // (Bᵀ d) B
        float* out = dst + i * 4 * stride;
        for (std::int64_t k = 0; k < n; ++k) {
          const float a = d[i][2 * k], b = d[i][2 * k + 1], e = d[i][2 * k + 2], f = d[i][2 * k + 3];
          out[k] = a - e;
          out[stride + k] = b + e;
          out[2 * stride + k] = e - b;
          out[3 * stride + k] = b - f;
        }
      }
    }
  }
}

/// y's 2×2 tiles = Aᵀ M A (+ bias[o]) for each tile k of a run and each output o; the parts
/// of a tile past the output's end are dropped.
TAPEGRAD_MULTIVERSION void transform_output(const Problem& p, const float* m, std::int64_t ld, const Run& run,
                                            const float* bias, float* y) {
  const std::int64_t plane = p.h_out * p.w_out, stride = p.out_channels * ld;
  const std::int64_t row = 2 * run.tile_row, col = 2 * run.first, width = std::min(2 * run.count, p.w_out - col);
  const bool second_row = row + 1 < p.h_out;
  for (std::int64_t o = 0; o < p.out_channels; ++o) {
    const float shift = bias != nullptr ? bias[o] : 0.0f;
    float* dst = y + (run.image * p.out_channels + o) * plane + row * p.w_out + col;
    for (std::int64_t k0 = 0; k0 < run.count; k0 += 32) {
      const std::int64_t n = std::min<std::int64_t>(32, run.count - k0);
      const float* src = m + o * ld + run.k0 + k0;
      float out[2][64];
      for (std::int64_t k = 0; k < n; ++k) {
        float am[2][4];  // Aᵀ M
        for (int j = 0; j < 4; ++j) {
          const float m0 = src[j * stride + k], m1 = src[(4 + j) * stride + k], m2 = src[(8 + j) * stride + k],
                      m3 = src[(12 + j) * stride + k];
          am[0][j] = m0 + m1 + m2;
          am[1][j] = m1 - m2 - m3;
        }
        for (int i = 0; i < 2; ++i) {  // (Aᵀ M) A
          out[i][2 * k] = am[i][0] + am[i][1] + am[i][2] + shift;
          out[i][2 * k + 1] = am[i][1] - am[i][2] - am[i][3] + shift;
        }
      }
      const std::int64_t cols = std::min(2 * n, width - 2 * k0);
      std::copy_n(out[0], cols, dst + 2 * k0);
      if (second_row) std::copy_n(out[1], cols, dst + p.w_out + 2 * k0);
    }
  }
}

/// Y = the convolution of x with the transformed weight u ([16][O][C]), + bias.
void run(const Problem& p, const float* u, const float* x, const float* bias, float* y, bool parallel) {
  const std::int64_t tiles = p.tiles(), channels = p.in_channels + p.out_channels;
  if (tiles == 0) return;
  std::int64_t block = std::clamp<std::int64_t>(kBlockBytes / (16 * channels * std::int64_t{sizeof(float)}),
                                                kMinBlockTiles, tiles);
  std::int64_t blocks = (tiles + block - 1) / block;
  if (parallel) {  // a multiple of the thread count, as even as the tiles allow
    const std::int64_t threads = omp_get_max_threads();
    blocks = std::min((blocks + threads - 1) / threads * threads, tiles);
  }
  block = (tiles + blocks - 1) / blocks;
  blocks = (tiles + block - 1) / block;
  const std::int64_t ld = (block + 15) / 16 * 16;
  std::exception_ptr error;
#pragma omp parallel if (parallel && blocks > 1)
  {
    Scratch<float> v, m;  // this thread's, for all its blocks
    std::vector<float> rows;
    std::vector<Run> runs;
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      try {
        v.get(16 * p.in_channels * ld);
        m.get(16 * p.out_channels * ld);
        rows.resize(static_cast<std::size_t>(4 * (2 * p.tiles_w() + 2)));
        const std::int64_t t0 = b * block, count = std::min(block, tiles - t0);
        block_runs(p, t0, count, runs);
        for (const Run& run : runs) transform_input(p, x, run, v.data(), ld, rows.data());
        for (std::int64_t xi = 0; xi < 16; ++xi) {
          gemm(false, false, p.out_channels, count, p.in_channels, 1.0f, u + xi * p.out_channels * p.in_channels,
               p.in_channels, v.data() + xi * p.in_channels * ld, ld, 0.0f, m.data() + xi * p.out_channels * ld, ld);
        }
        for (const Run& run : runs) transform_output(p, m.data(), ld, run, bias, y);
      } catch (...) {
#pragma omp critical(tapegrad_winograd_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace

bool winograd_fits(const ConvGeometry& g) {
  const auto fits = [](const Axis& a) {
    return a.kernel == 3 && a.stride == 1 && a.dilation == 1 && a.pad_begin <= 1 && a.pad_end <= 1 && a.out > 0;
  };
  return g.groups == 1 && fits(g.h) && fits(g.w);
}

void winograd_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                      bool parallel) {
  const Problem p{g.batch, g.channels, g.out_channels, g.h.in, g.w.in, g.h.out, g.w.out, g.h.pad_begin, g.w.pad_begin};
  Scratch<float> u(16 * p.out_channels * p.in_channels);  // ResNet's 512 × 512 weight: 16 MiB
  transform_weight(p.out_channels, p.in_channels,
                   [&](std::int64_t o, std::int64_t c, int i, int j) { return w[((o * g.channels + c) * 3 + i) * 3 + j]; },
                   u.data(), parallel);
  run(p, u.data(), x, b, y, parallel);
}

void winograd_input_grad(const ConvGeometry& g, const float* grad_y, const float* w, const float* grad_x_bias,
                         float* grad_x, bool parallel) {
  // grad_x[c, r, q] = Σ_{o, i, j} grad_y[o, r + p - i, q + p - j] · w[o, c, i, j]: with i' = 2 - i,
  // a 3×3 correlation of grad_y at padding 2 - p with w'[c, o, i', j'] = w[o, c, 2 - i', 2 - j'].
  const Problem p{g.batch, g.out_channels, g.channels, g.h.out, g.w.out, g.h.in, g.w.in, 2 - g.h.pad_begin,
                  2 - g.w.pad_begin};
  Scratch<float> u(16 * p.out_channels * p.in_channels);
  transform_weight(p.out_channels, p.in_channels,
                   [&](std::int64_t c, std::int64_t o, int i, int j) {
                     return w[((o * g.channels + c) * 3 + (2 - i)) * 3 + (2 - j)];
                   },
                   u.data(), parallel);
  run(p, u.data(), grad_y, grad_x_bias, grad_x, parallel);
}

}  // namespace tapegrad::detail
