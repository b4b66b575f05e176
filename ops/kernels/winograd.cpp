// Winograd F(m×m, 3×3) for m = 2 and 4 (Lavin & Gray, 2015): each m×m output tile of a 3×3
// stride-1 convolution is Y = Aᵀ [Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B)] A, with d_c the tile's α×α
// input patch of channel c, α = m + 2, and
//   F(2×2): Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//           Aᵀ = [1 1 1 0; 0 1 -1 -1]: 16 multiplies per tile in place of 36;
//   F(4×4), interpolation points 0, ±1, ±2 and ∞:
//           Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//                 0 4 0 -5 0 1],
//           G = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1],
//           Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]: 36 in place of 144.
// Each transform is the one-dimensional one (struct F2, F4) applied to the columns, then to
// the rows. For each of the α² positions ξ of the transformed tile, the sum over c is a GEMM:
// M[ξ] (O × tiles) = U[ξ] (O × C) · V[ξ] (C × tiles). The tiles (over the whole batch) are
// taken in blocks whose V and M stay in L2 while the GEMMs read and write them; blocks are
// split across threads, each GEMM running on its calling thread (oneDNN runs single-
// threaded inside a parallel region). Partial tiles at odd sizes read zeros past the input
// and drop the outputs past its end.
//
// The weight gradient is the forward's adjoint in g: grad_g = Σ_tiles Gᵀ [(A e Aᵀ) ⊙ (Bᵀ d B)] G
// for each tile's m×m output gradient e (zeros past the output's end), exact as the forward
// is; the sum over the tiles runs in the transformed domain, α² GEMMs with the tiles as
// their inner dimension (weight_grad below).
//
// f32 rounding: F(2×2)'s U has entries up to 2.25·max|w| and V up to 4·max|x| (Bᵀ d B adds
// four inputs), and each output adds nine M entries, so the error is a few times that of the
// direct sum. F(4×4)'s larger coefficients (Bᵀ's rows add up to 10 inputs' worth, Aᵀ's to 19)
// make it some ten to twenty times that (measured): about 1e-5 of the output's scale in
// ResNet-18's layers. tests/ops/test_conv_kernels.cpp checks both against an f64 reference;
// winograd_tile_for says where F(4×4) serves.
#include "ops/kernels/winograd.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <vector>

#include <omp.h>

#include "autograd/block_cache.hpp"
#include "autograd/simd.hpp"
#include "ops/kernels/gemm.hpp"

namespace tapegrad::detail {
namespace {

/// A block's V [α²][C][tiles] and M [α²][O][tiles] stay within about this many bytes.
constexpr std::int64_t kBlockBytes = std::int64_t{1} << 20;
/// ... but a block has at least this many tiles: the GEMMs' column count, below which they
/// run far from their peak, and U (α²·O·C floats) is read again for every block. (ResNet-18's
/// layers, F(2×2), one thread: 64 tiles 15-30 % slower than 128 at 128 to 512 channels, 256
/// no faster.)
constexpr std::int64_t kMinBlockTiles = 128;

/// F(2×2, 3×3)'s one-dimensional transforms of α values (the expressions as in Bᵀ, G, Aᵀ).
struct F2 {
  static constexpr int m = 2, alpha = 4;
  template <class T>
  static void weight(const T* g, T* u) {  // G g (T: float, or a vector of them)
    u[0] = g[0];
    u[1] = 0.5f * (g[0] + g[1] + g[2]);
    u[2] = 0.5f * (g[0] - g[1] + g[2]);
    u[3] = g[2];
  }
  static void input(const float* d, float* v) {  // Bᵀ d
    v[0] = d[0] - d[2];
    v[1] = d[1] + d[2];
    v[2] = d[2] - d[1];
    v[3] = d[1] - d[3];
  }
  static void output(const float* s, float* y) {  // Aᵀ s
    y[0] = s[0] + s[1] + s[2];
    y[1] = s[1] - s[2] - s[3];
  }
  static void grad(const float* e, float* v) {  // A e: the weight gradient's output-gradient transform
    v[0] = e[0];
    v[1] = e[0] + e[1];
    v[2] = e[0] - e[1];
    v[3] = -e[1];
  }
  static void weight_grad(const float* s, float* g) {  // Gᵀ s
    g[0] = s[0] + 0.5f * (s[1] + s[2]);
    g[1] = 0.5f * (s[1] - s[2]);
    g[2] = 0.5f * (s[1] + s[2]) + s[3];
  }
};

/// F(4×4, 3×3)'s.
struct F4 {
  static constexpr int m = 4, alpha = 6;
  template <class T>
  static void weight(const T* g, T* u) {
    u[0] = 0.25f * g[0];
    u[1] = (g[0] + g[1] + g[2]) * (-1.0f / 6);
    u[2] = (g[0] - g[1] + g[2]) * (-1.0f / 6);
    u[3] = g[0] * (1.0f / 24) + g[1] * (1.0f / 12) + g[2] * (1.0f / 6);
    u[4] = g[0] * (1.0f / 24) - g[1] * (1.0f / 12) + g[2] * (1.0f / 6);
    u[5] = g[2];
  }
  static void input(const float* d, float* v) {
    v[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    v[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);
    v[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);
    v[3] = (d[4] - d[2]) + 2.0f * (d[3] - d[1]);
    v[4] = (d[4] - d[2]) - 2.0f * (d[3] - d[1]);
    v[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  static void output(const float* s, float* y) {
    y[0] = s[0] + (s[1] + s[2]) + (s[3] + s[4]);
    y[1] = (s[1] - s[2]) + 2.0f * (s[3] - s[4]);
    y[2] = (s[1] + s[2]) + 4.0f * (s[3] + s[4]);
    y[3] = (s[1] - s[2]) + 8.0f * (s[3] - s[4]) + s[5];
  }
  static void grad(const float* e, float* v) {
    v[0] = e[0];
    v[1] = (e[0] + e[2]) + (e[1] + e[3]);
    v[2] = (e[0] + e[2]) - (e[1] + e[3]);
    v[3] = (e[0] + 4.0f * e[2]) + 2.0f * (e[1] + 4.0f * e[3]);
    v[4] = (e[0] + 4.0f * e[2]) - 2.0f * (e[1] + 4.0f * e[3]);
    v[5] = e[3];
  }
  static void weight_grad(const float* s, float* g) {
    g[0] = 0.25f * s[0] - (s[1] + s[2]) * (1.0f / 6) + (s[3] + s[4]) * (1.0f / 24);
    g[1] = (s[2] - s[1]) * (1.0f / 6) + (s[3] - s[4]) * (1.0f / 12);
    g[2] = ((s[3] + s[4]) - (s[1] + s[2])) * (1.0f / 6) + s[5];
  }
};

/// One 3×3 stride-1 convolution as the kernels see it: C inputs, O outputs, the input
/// [N, C, H, W] read from row -pad_top and column -pad_left (zeros outside), m×m output tiles.
struct Problem {
  std::int64_t batch, in_channels, out_channels, h, w, h_out, w_out, pad_top, pad_left;
  std::int64_t m = 2;  ///< the tile's: set by with_tile from the WinogradTile
  std::int64_t tiles_h() const { return (h_out + m - 1) / m; }
  std::int64_t tiles_w() const { return (w_out + m - 1) / m; }
  std::int64_t tiles() const { return batch * tiles_h() * tiles_w(); }
};

/// g's convolution as a Problem (the forward's and the weight gradient's).
Problem forward_problem(const ConvGeometry& g) {
  return {g.batch, g.channels, g.out_channels, g.h.in, g.w.in, g.h.out, g.w.out, g.h.pad_begin, g.w.pad_begin};
}

/// body(W{}, p) with W the tile's transforms (F2 or F4) and p.m its size.
template <class Body>
void with_tile(WinogradTile tile, Problem p, Body body) {
  p.m = static_cast<std::int64_t>(tile);
  if (tile == WinogradTile::f4) return body(F4{}, p);
  body(F2{}, p);
}

/// Input channels transform_weight takes at a time: its loops run along them (U's rows are
/// contiguous in c), 16 lanes of AVX-512 or two vectors of AVX2. U's rows are padded to a
/// multiple of it, so that every store is a whole vector.
constexpr std::int64_t kWeightLanes = 16;
using Lanes = float __attribute__((vector_size(kWeightLanes * sizeof(float))));
/// ... gathered kWeightGather at a time into a [9][channels] copy first (the vector loads
/// then read memory stored long before: filling the lanes tap by tap right before the loads
/// stalled each of them on the narrower stores it had to wait for).
constexpr std::int64_t kWeightGather = 256;

/// The length of U's rows: c's count rounded up to whole vectors.
std::int64_t weight_row_length(std::int64_t in_channels) {
  return (in_channels + kWeightLanes - 1) / kWeightLanes * kWeightLanes;
}

/// Output o's rows of U: U[o][ξ][c] = (G g Gᵀ)[ξ] for the 3×3 kernels g = tap(o, c, ·, ·),
/// kWeightLanes input channels at a time; zeros past in_channels. Written with streaming
/// stores: U is 4 (F(4×4)) or 16/9 (F(2×2)) times the weight, and at several threads the
/// lines of the last call's U (the same block, from the cache) are in both cores' caches,
/// where every plain store had to invalidate the other core's copy first (8-10 GB/s on a
/// two-CCD host, against 25-35 streamed). ResNet-18 step, steps alternating in one process:
/// 0.954-0.97 (2t), 0.984 (1t).
template <class W, class Tap>
TAPEGRAD_MULTIVERSION void transform_weight_row(std::int64_t o, std::int64_t in_channels, Tap tap, float* u) {
  constexpr int a = W::alpha;
  constexpr std::int64_t lanes = kWeightLanes;
  const std::int64_t row = weight_row_length(in_channels);
  alignas(64) float taps[9][kWeightGather];
  for (std::int64_t s0 = 0; s0 < row; s0 += kWeightGather) {
    const std::int64_t span = std::min(kWeightGather, in_channels - s0), padded = std::min(kWeightGather, row - s0);
    for (std::int64_t c = 0; c < span; ++c) {
      for (int t = 0; t < 9; ++t) taps[t][c] = tap(o, s0 + c, t / 3, t % 3);
    }
    for (int t = 0; t < 9; ++t) std::fill(taps[t] + span, taps[t] + padded, 0.0f);
    for (std::int64_t c0 = 0; c0 < padded; c0 += lanes) {
      Lanes g[9], gg[a][3], t[a];
      for (int k = 0; k < 9; ++k) std::memcpy(&g[k], taps[k] + c0, sizeof(Lanes));
      for (int j = 0; j < 3; ++j) {  // G g
        const Lanes column[3] = {g[j], g[3 + j], g[6 + j]};
        W::weight(column, t);
        for (int i = 0; i < a; ++i) gg[i][j] = t[i];
      }
      float* dst = u + o * a * a * row + s0 + c0;
      for (int i = 0; i < a; ++i) {  // (G g) Gᵀ
        W::weight(gg[i], t);
        for (int j = 0; j < a; ++j) stream_store(dst + (i * a + j) * row, &t[j], sizeof(Lanes));
      }
    }
  }
  stream_fence();
}

/// U[o][ξ][c] = (G g Gᵀ)[ξ] for the 3×3 kernel g = tap(o, c, ·, ·), output by output, each
/// output's α² rows one stream of stores (weight_row_length(C) floats each); the GEMMs read
/// U[ξ] (O × C) with a leading dimension of α² rows. (Kernel by kernel, scalar, U was a
/// fifth of the forward of ResNet's 256- and 512-channel layers at one thread. Laid out
/// [ξ][o][c], its α² streams O·C floats apart and the lanes assembled from scalars, it was
/// still a sixth of the 256-channel layer's forward, and more at two threads.)
template <class W, class Tap>
void transform_weight(std::int64_t out_channels, std::int64_t in_channels, Tap tap, float* u, bool parallel) {
#pragma omp parallel for schedule(static) if (parallel && out_channels * in_channels > 4096)
  for (std::int64_t o = 0; o < out_channels; ++o) transform_weight_row<W>(o, in_channels, tap, u);
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

/// The input's transform: Bᵀ d B of each tile's α×α patch d.
template <class W>
struct InputTransform {
  static constexpr int window = W::alpha;
  static void apply(const float* d, float* v) { W::input(d, v); }
};

/// The weight gradient's output-gradient transform: A e Aᵀ of each m×m tile e.
template <class W>
struct GradTransform {
  static constexpr int window = W::m;
  static void apply(const float* e, float* v) { W::grad(e, v); }
};

/// Floats of the scratch transform_tiles needs for blocks of `ld` tiles.
template <class W>
constexpr std::int64_t tiles_scratch(std::int64_t ld) {
  constexpr std::int64_t a = W::alpha, m = W::m;
  return a * a * ld + a * (m * ld + a) + ld * a * (a - m);
}

/// V[ξ][c][k] = (Tr d Trᵀ)[ξ] for the channels c in [c0, c1) and each tile k of a block
/// (`count` tiles, in `runs`), d the tile's window × window patch of p's input (α×α
/// through Bᵀ for x; m×m through A for grad_y). Three passes, each a loop along the tiles
/// (ResNet's runs are 8, 4 and 2 tiles long: too short to vectorise run by run):
/// - run by run, Tr on the columns of `window` input rows, read in place (`zeros`: at least
///   p.w zeros, for the rows in the padding), into rows[i] ([α][m·ld + α]): each tile's own
///   m columns at m·k; the `halo` columns past a run's last tile, which the next run's
///   columns overwrite, are kept aside in `tails`;
/// - cols[i][l][k] ([α][window][ld]) = row i's column l of tile k's window: column l of
///   every tile at once, rows[i][m·k + l] (the next tile's columns for l >= m), then the
///   runs' last tiles from `tails`;
/// - Tr along the rows, (Tr d) Trᵀ, into V.
/// `scratch` holds tiles_scratch<W>(ld) floats.
template <class W, class Tr>
TAPEGRAD_MULTIVERSION void transform_tiles(const Problem& p, const float* x, std::int64_t c0, std::int64_t c1,
                                           const std::vector<Run>& runs, std::int64_t count, float* v,
                                           std::int64_t ld, const float* zeros, float* scratch) {
  constexpr int m = W::m, a = W::alpha, n_in = Tr::window, halo = n_in - m;
  const std::int64_t plane = p.h * p.w, stride = p.in_channels * ld, row_len = m * ld + a;
  float* const cols = scratch;
  float* const rows = cols + a * a * ld;
  float* const tails = rows + a * row_len;  // [run][α][halo]
  for (std::int64_t c = c0; c < c1; ++c) {
    for (std::size_t r = 0; r < runs.size(); ++r) {
      const Run& run = runs[r];
      const float* src = x + (run.image * p.in_channels + c) * plane;
      const std::int64_t width = m * run.count + halo;
      const std::int64_t row0 = m * run.tile_row - p.pad_top, col0 = m * run.first - p.pad_left;
      // the run's window columns [lo, hi) are inside the input; in_rows[i][j - lo] is column j of row i
      const std::int64_t lo = std::max<std::int64_t>(-col0, 0), hi = std::clamp<std::int64_t>(p.w - col0, lo, width);
      const float* in_rows[n_in];
      for (int i = 0; i < n_in; ++i) {
        const std::int64_t ih = row0 + i;
        in_rows[i] = ih < 0 || ih >= p.h ? zeros : src + ih * p.w + col0 + lo;
      }
      float* d = rows + m * run.k0;  // d[i * row_len + j]: column j of the run's row i
      // The next channel's rows, while this one's are transformed: runs are a few cache lines
      // per row, too short for the hardware's prefetchers (ResNet-18 step 3 % faster).
      for (int i = 0; c + 1 < c1 && i < n_in; ++i) {
        if (in_rows[i] == zeros) continue;
        for (std::int64_t j = lo; j < hi; j += 16) __builtin_prefetch(in_rows[i] + plane + (j - lo));
      }
      for (int i = 0; i < a; ++i) {    // Tr of a zero column: zero
        std::fill_n(d + i * row_len, lo, 0.0f);
        std::fill(d + i * row_len + hi, d + i * row_len + width, 0.0f);
      }
      // ivdep here and below: the rows, cols and the input are distinct buffers, which GCC
      // does not prove for the many streams (and then runs the loops scalar).
#pragma GCC ivdep
      for (std::int64_t j = lo; j < hi; ++j) {  // Tr d
        float column[n_in], t[a];
        for (int i = 0; i < n_in; ++i) column[i] = in_rows[i][j - lo];
        Tr::apply(column, t);
        for (int i = 0; i < a; ++i) d[i * row_len + j] = t[i];
      }
      for (int i = 0; i < a; ++i) {
        for (int h = 0; h < halo; ++h) tails[(std::int64_t(r) * a + i) * halo + h] = d[i * row_len + m * run.count + h];
      }
    }
    for (int i = 0; i < a; ++i) {  // each tile's window columns
      const float* row = rows + i * row_len;
      float* out = cols + i * n_in * ld;
#pragma GCC ivdep
      for (std::int64_t k = 0; k < count; ++k) {
        for (int l = 0; l < n_in; ++l) out[l * ld + k] = row[m * k + l];
      }
    }
    for (std::size_t r = 0; r < runs.size(); ++r) {  // the runs' last tiles: their own halo
      const std::int64_t k = runs[r].k0 + runs[r].count - 1;
      for (int i = 0; i < a; ++i) {
        for (int h = 0; h < halo; ++h) cols[(i * n_in + m + h) * ld + k] = tails[(std::int64_t(r) * a + i) * halo + h];
      }
    }
    float* dst = v + c * ld;
    for (int i = 0; i < a; ++i) {  // (Tr d) Trᵀ
      const float* in = cols + i * n_in * ld;
      float* out = dst + i * a * stride;
#pragma GCC ivdep
      for (std::int64_t k = 0; k < count; ++k) {
        float tile_row[n_in], t[a];
        for (int l = 0; l < n_in; ++l) tile_row[l] = in[l * ld + k];
        Tr::apply(tile_row, t);
        for (int j = 0; j < a; ++j) out[j * stride + k] = t[j];
      }
    }
  }
}

/// y's m×m tiles = Aᵀ M A (+ bias[o]) for each output o in [o0, o1) and each tile of a block
/// (`count` tiles, in `runs`); the parts of a tile past the output's end are dropped. Loops
/// along the block's tiles (ResNet's runs are 8, 4, 2 tiles long: too short to vectorise run
/// by run): Aᵀ M into `am` ([m][α][ld]), then (Aᵀ M) A into out_rows ([m][m·ld]: row i of
/// tile k at m·k), whose runs are then copied into y. `am` holds m·(α + m)·ld floats.
template <class W>
TAPEGRAD_MULTIVERSION void transform_output(const Problem& p, const float* mm, std::int64_t ld,
                                            const std::vector<Run>& runs, std::int64_t count, std::int64_t o0,
                                            std::int64_t o1, const float* bias, float* y, float* am) {
  constexpr int m = W::m, a = W::alpha;
  const std::int64_t plane = p.h_out * p.w_out, stride = p.out_channels * ld;
  float* const out_rows = am + m * a * ld;
  for (std::int64_t o = o0; o < o1; ++o) {
    const float shift = bias != nullptr ? bias[o] : 0.0f;
    const float* src = mm + o * ld;
    // ivdep: mm, am and out_rows are distinct buffers (as in transform_tiles)
    for (int j = 0; j < a; ++j) {  // Aᵀ M
#pragma GCC ivdep
      for (std::int64_t k = 0; k < count; ++k) {
        float column[a], t[m];
        for (int i = 0; i < a; ++i) column[i] = src[(i * a + j) * stride + k];
        W::output(column, t);
        for (int i = 0; i < m; ++i) am[(i * a + j) * ld + k] = t[i];
      }
    }
    for (int i = 0; i < m; ++i) {  // (Aᵀ M) A
      const float* in = am + i * a * ld;
      float* out = out_rows + i * m * ld;
#pragma GCC ivdep
      for (std::int64_t k = 0; k < count; ++k) {
        float am_row[a], t[m];
        for (int j = 0; j < a; ++j) am_row[j] = in[j * ld + k];
        W::output(am_row, t);
        for (int j = 0; j < m; ++j) out[m * k + j] = t[j] + shift;
      }
    }
    for (const Run& run : runs) {
      const std::int64_t row = m * run.tile_row, col = m * run.first;
      const std::int64_t width = std::min(m * run.count, p.w_out - col), rows = std::min<std::int64_t>(m, p.h_out - row);
      float* dst = y + (run.image * p.out_channels + o) * plane + row * p.w_out + col;
      for (std::int64_t i = 0; i < rows; ++i) {
        const float* from = out_rows + i * m * ld + m * run.k0;
        for (std::int64_t j = 0; j < width; ++j) dst[i * p.w_out + j] = from[j];
      }
    }
  }
}

/// A thread's two buffers for its blocks (V and M, or V and E). In a team of several threads,
/// buffers the thread keeps from call to call, grown to the largest size asked (as
/// conv_plan.cpp's workspaces): from the block cache, a thread got whichever of the blocks the
/// team had just freed came first, often one the other thread had written, and the transforms'
/// stores into it ran slower (64@32² forward at two threads, CPU time against one thread's:
/// input transform 1.31x → 1.18x, output transform 1.17x → 0.87x; ResNet-18 step at two
/// threads 212-223 → 205-213 ms in three interleaved runs, peak RSS 338-341 → 348-351 MB).
/// A thread alone takes them from the block cache, whose most recently freed block is the
/// warmest (kept buffers made the one-thread step 1.4 % slower).
class BlockBuffers {
 public:
  float* get(int slot, std::int64_t count) {
    if (omp_get_num_threads() == 1) return local_[slot].get(count);
    thread_local std::array<Scratch<float>, 2> kept;
    return kept[slot].get(count);
  }

 private:
  std::array<Scratch<float>, 2> local_;
};

/// Tiles per block, and the blocks' leading dimension (floats between a row's tiles).
struct Blocks {
  std::int64_t block, ld;
};

/// Blocks of `tiles` tiles at `tile_bytes` each that stay within about `bytes`, but of at
/// least kMinBlockTiles tiles, as even as the count allows.
Blocks blocks_for(std::int64_t tiles, std::int64_t tile_bytes, std::int64_t bytes) {
  std::int64_t block = std::clamp<std::int64_t>(bytes / tile_bytes, kMinBlockTiles, std::max<std::int64_t>(tiles, 1));
  const std::int64_t blocks = (tiles + block - 1) / block;
  if (blocks > 0) block = (tiles + blocks - 1) / blocks;
  return {block, (block + 15) / 16 * 16};
}

/// Y = the convolution of x with the transformed weight u ([O][α²][C]), + bias.
template <class W>
void run(const Problem& p, const float* u, const float* x, const float* bias, float* y, bool parallel) {
  constexpr std::int64_t positions = W::alpha * W::alpha;
  const std::int64_t tiles = p.tiles(), channels = p.in_channels + p.out_channels;
  const std::int64_t u_row = weight_row_length(p.in_channels);
  if (tiles == 0) return;
  std::int64_t block = std::clamp<std::int64_t>(kBlockBytes / (positions * channels * std::int64_t{sizeof(float)}),
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
    BlockBuffers buffers;
    std::vector<float> zeros, tile_scratch, am;
    std::vector<Run> runs;
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < blocks; ++b) {
      try {
        float* const v = buffers.get(0, positions * p.in_channels * ld);
        float* const m = buffers.get(1, positions * p.out_channels * ld);
        zeros.resize(static_cast<std::size_t>(p.w));
        tile_scratch.resize(static_cast<std::size_t>(tiles_scratch<W>(ld)));
        am.resize(static_cast<std::size_t>(W::m * (W::alpha + W::m) * ld));
        const std::int64_t t0 = b * block, count = std::min(block, tiles - t0);
        block_runs(p, t0, count, runs);
        transform_tiles<W, InputTransform<W>>(p, x, 0, p.in_channels, runs, count, v, ld, zeros.data(),
                                              tile_scratch.data());
        for (std::int64_t xi = 0; xi < positions; ++xi) {
          gemm(false, false, p.out_channels, count, p.in_channels, 1.0f, u + xi * u_row, positions * u_row,
               v + xi * p.in_channels * ld, ld, 0.0f, m + xi * p.out_channels * ld, ld);
        }
        transform_output<W>(p, m, ld, runs, count, 0, p.out_channels, bias, y, am.data());
      } catch (...) {
#pragma omp critical(tapegrad_winograd_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

/// Y = the convolution of x with the 3×3 kernels tap(o, c, ·, ·), + bias, each thread taking
/// a share of the outputs: its rows of U, and per block (shared V, each thread transforming
/// a share of the channels) its rows of M and its outputs' planes of y. For a batch of few
/// tiles against the channels (ResNet-18's 256- and 512-channel layers): split by tiles, each
/// thread read all of U, half of it from the other core's cache, and wrote its half over
/// lines the other core had read (the weight transform took 2.6x its one-thread CPU time).
template <class W, class Tap>
void convolve_by_outputs(const Problem& p, Tap tap, const float* x, const float* bias, float* y) {
  constexpr std::int64_t positions = W::alpha * W::alpha;
  const std::int64_t tiles = p.tiles(), in = p.in_channels, out = p.out_channels, u_row = weight_row_length(in);
  const Blocks blocks = blocks_for(tiles, positions * (in + out) * std::int64_t{sizeof(float)}, kBlockBytes);
  const std::int64_t block = blocks.block, ld = blocks.ld, threads = omp_get_max_threads();
  // Allocated here so that no thread can miss the barriers below by throwing.
  Scratch<float> u(positions * out * u_row), v(positions * in * ld), m(positions * out * ld),
      scratch(threads * (tiles_scratch<W>(ld) + W::m * (W::alpha + W::m) * ld));
  std::vector<std::vector<Run>> runs;
  for (std::int64_t b0 = 0; b0 < tiles; b0 += block) {
    block_runs(p, b0, std::min(block, tiles - b0), runs.emplace_back());
  }
  const std::vector<float> zeros(static_cast<std::size_t>(p.w));
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t c0 = in * t / team, c1 = in * (t + 1) / team, o0 = out * t / team, o1 = out * (t + 1) / team;
    float* const tile_scratch = scratch.data() + t * (tiles_scratch<W>(ld) + W::m * (W::alpha + W::m) * ld);
    float* const am = tile_scratch + tiles_scratch<W>(ld);
    for (std::int64_t o = o0; o < o1; ++o) transform_weight_row<W>(o, in, tap, u.data());
    for (std::size_t b = 0; b < runs.size(); ++b) {
      const std::int64_t b0 = static_cast<std::int64_t>(b) * block, count = std::min(block, tiles - b0);
      transform_tiles<W, InputTransform<W>>(p, x, c0, c1, runs[b], count, v.data(), ld, zeros.data(), tile_scratch);
#pragma omp barrier
      try {
        for (std::int64_t xi = 0; o0 < o1 && xi < positions; ++xi) {
          gemm(false, false, o1 - o0, count, in, 1.0f, u.data() + (o0 * positions + xi) * u_row,
               positions * u_row, v.data() + xi * in * ld, ld, 0.0f, m.data() + (xi * out + o0) * ld, ld);
        }
        transform_output<W>(p, m.data(), ld, runs[b], count, o0, o1, bias, y, am);
      } catch (...) {
#pragma omp critical(tapegrad_winograd_error)
        if (!error) error = std::current_exception();
      }
#pragma omp barrier
    }
  }
  if (error) std::rethrow_exception(error);
}

/// p's convolution of x with the 3×3 kernels tap(o, c, ·, ·), + bias: U, then run; or
/// convolve_by_outputs where the tiles are few against the channels (as weight_grad splits).
template <class W, class Tap>
void convolve(const Problem& p, Tap tap, const float* x, const float* bias, float* y, bool parallel) {
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  if (threads > 1 && p.tiles() > 0 && p.tiles() < threads * std::max(p.in_channels, p.out_channels)) {
    return convolve_by_outputs<W>(p, tap, x, bias, y);
  }
  // ResNet's 512 × 512 weight: 16 MiB for F(2×2), 36 for F(4×4).
  Scratch<float> u(W::alpha * W::alpha * p.out_channels * weight_row_length(p.in_channels));
  transform_weight<W>(p.out_channels, p.in_channels, tap, u.data(), parallel);
  run<W>(p, u.data(), x, bias, y, parallel);
}

/// A weight-gradient block's E [α²][O][tiles] and V [α²][C][tiles] stay within about this
/// many bytes (they are written by the transforms, then read once by the GEMMs).
constexpr std::int64_t kWeightGradBlockBytes = std::int64_t{2} << 20;

/// grad_w[o][c] (+)= (Gᵀ S G) with S[ξ] = Σ over the tiles of E[ξ][o] · V[ξ][c], ξ's α²
/// values laid out [α²][O·C]: `count` of the weights from index q0 on. Vectorised along
/// the weights (each ξ's values are contiguous there).
template <class W>
TAPEGRAD_MULTIVERSION void transform_weight_grad(const float* s, std::int64_t weights, std::int64_t q0,
                                                 std::int64_t count, float* grad_w, bool add) {
  constexpr int a = W::alpha;
  constexpr std::int64_t chunk = 64;
  for (std::int64_t k0 = q0; k0 < q0 + count; k0 += chunk) {
    const std::int64_t n = std::min(chunk, q0 + count - k0);
    float gs[3][a][chunk];  // Gᵀ S
    for (int j = 0; j < a; ++j) {
      for (std::int64_t k = 0; k < n; ++k) {
        float column[a], t[3];
        for (int i = 0; i < a; ++i) column[i] = s[(i * a + j) * weights + k0 + k];
        W::weight_grad(column, t);
        for (int r = 0; r < 3; ++r) gs[r][j][k] = t[r];
      }
    }
    for (std::int64_t k = 0; k < n; ++k) {  // (Gᵀ S) G
      float* dst = grad_w + (k0 + k) * 9;
      for (int r = 0; r < 3; ++r) {
        float row[a], t[3];
        for (int j = 0; j < a; ++j) row[j] = gs[r][j][k];
        W::weight_grad(row, t);
        for (int c = 0; c < 3; ++c) dst[r * 3 + c] = add ? dst[r * 3 + c] + t[c] : t[c];
      }
    }
  }
}

/// grad_y as the weight gradient's transform reads it: O channels of h_out × w_out, no padding.
Problem grad_problem(const Problem& p) {
  Problem q = p;
  q.in_channels = p.out_channels;
  q.h = p.h_out;
  q.w = p.w_out;
  q.pad_top = q.pad_left = 0;
  return q;
}

/// The weight gradient of p's convolution of x, whose output gradient is gy: the forward's
/// adjoint in g, grad_w = Σ over the tiles of Gᵀ [(A e Aᵀ) ⊙ (Bᵀ d B)] G, e the tile's m×m
/// output gradient (zeros past the output's end). Per block of tiles: E[ξ][o] = (A e Aᵀ)[ξ]
/// and V[ξ][c] = (Bᵀ d B)[ξ], then S[ξ] (O × C) += E[ξ] · V[ξ]ᵀ, α² GEMMs with the tiles as
/// inner dimension; last Gᵀ S G, added to grad_w with `add`. The threads split it so that
/// each reads what it wrote (another core's cache is as far as memory, batch_norm.cpp):
/// - by tiles, where they outnumber the channels: each thread takes a consecutive share of
///   the tiles (the images it transformed in the forward), with its own blocks and its own
///   S, and the threads' S are added in the last step, split by weights;
/// - by outputs: per block, the threads transform a share of x's channels each into one V,
///   and E, the GEMMs and the last step by the same share of the outputs (S's rows).
/// (Split by channels for the transforms and by ξ for the GEMMs, each thread read half of V,
/// E and S from the other's cache, and waited at three barriers per block.)
template <class W>
void weight_grad(const Problem& p, const float* x, const float* gy, float* grad_w, bool add, bool parallel) {
  constexpr int a = W::alpha;
  constexpr std::int64_t positions = a * a;
  const std::int64_t tiles = p.tiles(), in = p.in_channels, out = p.out_channels, weights = in * out;
  if (tiles == 0) {
    if (!add) std::fill_n(grad_w, weights * 9, 0.0f);
    return;
  }
  const Problem q = grad_problem(p);
  const std::vector<float> zeros(static_cast<std::size_t>(p.w));  // (q.w = w_out <= p.w)
  const std::int64_t threads = parallel ? omp_get_max_threads() : 1;
  const bool by_tiles = threads == 1 || tiles >= threads * std::max(in, out);
  Scratch<float> s((by_tiles ? threads : 1) * positions * weights);
  // By outputs: the blocks' shared V and E, and each thread's scratch, allocated here so that
  // no thread can miss the barriers below by throwing.
  const std::int64_t tile_bytes = positions * (in + out) * std::int64_t{sizeof(float)};
  const Blocks shared = blocks_for(tiles, tile_bytes, kWeightGradBlockBytes);
  Scratch<float> v, e, shared_scratch;
  std::vector<std::vector<Run>> shared_runs;
  if (!by_tiles) {
    v.get(positions * in * shared.ld);
    e.get(positions * out * shared.ld);
    shared_scratch.get(threads * tiles_scratch<W>(shared.ld));
    for (std::int64_t b0 = 0; b0 < tiles; b0 += shared.block) {
      block_runs(p, b0, std::min(shared.block, tiles - b0), shared_runs.emplace_back());
    }
  }
  std::exception_ptr error;
  const auto keep = [&error] {
#pragma omp critical(tapegrad_winograd_error)
    if (!error) error = std::current_exception();
  };
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    // (by the team's size: it may have fewer threads than asked for, nested in another region)
    const std::int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
    if (by_tiles) {
      try {
        const std::int64_t t0 = tiles * t / team, t1 = tiles * (t + 1) / team;
        const Blocks mine = blocks_for(t1 - t0, tile_bytes, kWeightGradBlockBytes);
        const std::int64_t ld = mine.ld;
        BlockBuffers buffers;
        float* const my_v = buffers.get(0, positions * in * ld);
        float* const my_e = buffers.get(1, positions * out * ld);
        Scratch<float> scratch(tiles_scratch<W>(ld));
        std::vector<Run> runs;
        float* my_s = s.data() + t * positions * weights;
        if (t0 == t1) std::fill_n(my_s, positions * weights, 0.0f);
        for (std::int64_t b0 = t0; b0 < t1; b0 += mine.block) {
          const std::int64_t count = std::min(mine.block, t1 - b0);
          block_runs(p, b0, count, runs);
          transform_tiles<W, InputTransform<W>>(p, x, 0, in, runs, count, my_v, ld, zeros.data(), scratch.data());
          transform_tiles<W, GradTransform<W>>(q, gy, 0, out, runs, count, my_e, ld, zeros.data(), scratch.data());
          for (std::int64_t xi = 0; xi < positions; ++xi) {
            gemm(false, true, out, in, count, 1.0f, my_e + xi * out * ld, ld, my_v + xi * in * ld, ld,
                 b0 == t0 ? 0.0f : 1.0f, my_s + xi * weights, in);
          }
        }
      } catch (...) {
        keep();
      }
    } else {
      const std::int64_t ld = shared.ld;
      const std::int64_t c0 = in * t / team, c1 = in * (t + 1) / team, o0 = out * t / team, o1 = out * (t + 1) / team;
      float* scratch = shared_scratch.data() + t * tiles_scratch<W>(ld);
      for (std::size_t b = 0; b < shared_runs.size(); ++b) {
        const std::int64_t b0 = static_cast<std::int64_t>(b) * shared.block, count = std::min(shared.block, tiles - b0);
        transform_tiles<W, InputTransform<W>>(p, x, c0, c1, shared_runs[b], count, v.data(), ld, zeros.data(), scratch);
        transform_tiles<W, GradTransform<W>>(q, gy, o0, o1, shared_runs[b], count, e.data(), ld, zeros.data(), scratch);
#pragma omp barrier
        try {
          for (std::int64_t xi = 0; o0 < o1 && xi < positions; ++xi) {
            gemm(false, true, o1 - o0, in, count, 1.0f, e.data() + (xi * out + o0) * ld, ld, v.data() + xi * in * ld,
                 ld, b == 0 ? 0.0f : 1.0f, s.data() + xi * weights + o0 * in, in);
          }
        } catch (...) {
          keep();
        }
#pragma omp barrier
      }
    }
#pragma omp barrier
    // by tiles, a share of the weights; by outputs, this thread's outputs' (its rows of S)
    const std::int64_t q0 = by_tiles ? weights * t / team : out * t / team * in;
    const std::int64_t q1 = by_tiles ? weights * (t + 1) / team : out * (t + 1) / team * in;
    if (!error) {
      for (std::int64_t part = 1; by_tiles && part < team; ++part) {  // the threads' S into the first's
        for (std::int64_t xi = 0; xi < positions; ++xi) {
          add_into(s.data() + xi * weights + q0, s.data() + (part * positions + xi) * weights + q0, q1 - q0);
        }
      }
      transform_weight_grad<W>(s.data(), weights, q0, q1 - q0, grad_w, add);
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

WinogradTile winograd_tile_for(const ConvGeometry& g) {
  const std::int64_t tiles = g.batch * ((g.h.out + 3) / 4) * ((g.w.out + 3) / 4);
  return tiles >= kMinBlockTiles ? WinogradTile::f4 : WinogradTile::f2;
}

void winograd_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                      WinogradTile tile, bool parallel) {
  const auto tap = [&](std::int64_t o, std::int64_t c, int i, int j) { return w[((o * g.channels + c) * 3 + i) * 3 + j]; };
  with_tile(tile, forward_problem(g),
            [&](auto f, const Problem& p) { convolve<decltype(f)>(p, tap, x, b, y, parallel); });
}

void winograd_input_grad(const ConvGeometry& g, const float* grad_y, const float* w, const float* grad_x_bias,
                         float* grad_x, WinogradTile tile, bool parallel) {
  // grad_x[c, r, q] = Σ_{o, i, j} grad_y[o, r + p - i, q + p - j] · w[o, c, i, j]: with i' = 2 - i,
  // a 3×3 correlation of grad_y at padding 2 - p with w'[c, o, i', j'] = w[o, c, 2 - i', 2 - j'].
  const Problem problem{g.batch, g.out_channels, g.channels, g.h.out, g.w.out, g.h.in, g.w.in, 2 - g.h.pad_begin,
                        2 - g.w.pad_begin};
  const auto tap = [&](std::int64_t c, std::int64_t o, int i, int j) {
    return w[((o * g.channels + c) * 3 + (2 - i)) * 3 + (2 - j)];
  };
  with_tile(tile, problem,
            [&](auto f, const Problem& p) { convolve<decltype(f)>(p, tap, grad_y, grad_x_bias, grad_x, parallel); });
}

void winograd_weight_grad(const ConvGeometry& g, const float* x, const float* grad_y, float* grad_w, bool add,
                          WinogradTile tile, bool parallel) {
  with_tile(tile, forward_problem(g),
            [&](auto f, const Problem& p) { weight_grad<decltype(f)>(p, x, grad_y, grad_w, add, parallel); });
}

}  // namespace tapegrad::detail
