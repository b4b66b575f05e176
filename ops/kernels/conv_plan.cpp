// conv2d's plan (see conv_plan.hpp) and the two loops that follow it: the forward, and the
// VJP's raw gradients. Both walk the batch in chunks, split across OpenMP threads when the
// plan says so, each thread reusing its own workspaces.
#include "ops/kernels/conv_plan.hpp"

#include <algorithm>
#include <exception>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "autograd/block_cache.hpp"
#include "ops/kernels/gemm.hpp"
#include "ops/kernels/winograd.hpp"

namespace tapegrad::detail {
namespace {

/// The forward keeps the whole batch's unfolded input for the VJP up to this size.
constexpr std::int64_t kKeepUnfoldedBytes = std::int64_t{16} << 20;

/// A chunk's unfolded inputs stay within about this many bytes (roughly an L2 cache).
constexpr std::int64_t kChunkBytes = std::int64_t{1} << 20;

/// Below this many columns (a chunk's images × output plane) a chunk's GEMMs run far from
/// the GEMM's peak; such geometries unfold the whole batch and run one GEMM per group.
constexpr std::int64_t kMinChunkColumns = 256;

/// f32 3×3 stride-1 convolutions of one group (winograd_fits) with at least this many input
/// and output channels take Winograd for the forward and both gradients. ResNet-18's
/// layers, batch 32, bench_resnet18 on Zen 5 (a shared host; two rounds interleaved with the
/// GEMM paths' binary, old → new ms, forward | forward + backward):
///   1 thread:  64@32² 17-20 → 12 | 52-59 → 40;   128@16² 15 → 11 | 49 → 40-41
///              256@8² 16 → 12-14 | 52-53 → 46-47; 512@4² 17 → 15 | 66-67 → 51
///   2 threads: 64@32² 9 → 6 | 27 → 21;   128@16² 8 → 6 | 26-27 → 21
///              256@8² 8 → 7 | 32 → 30-31; 512@4² 9-11 → 9-11 | 30-32 → 29-35 (a draw)
constexpr std::int64_t kWinogradMinChannels = 64;

/// ... and from this many where the batch gives F(4×4) tiles (winograd_tile_for: 128 or
/// more). Kernel level on Zen 4 (conv_forward + conv_backward against the Winograd plan,
/// medians of 15-31 alternating calls, Winograd / unfolding paths), 24 to 48 channels
/// either side, 8² to 56² images: batch 32 0.45-0.84 (1 and 2 threads), batch 8 at 16² and
/// up 0.56-0.77, batch 4 at 32² and up 0.54-0.73; where only F(2×2) tiles fit it did not pay
/// (batch 4 at 16² 0.9-1.1, at 8² 1.2-1.4; batch 8 at 8² 0.9-1.3). With 16 or fewer
/// channels on either side, or the 3-channel stem, it took 0.7-2.8× the time, mostly more:
/// the transforms cost more than the multiplies they save. (Before session 17's faster
/// transforms, 16 and 32 channels ran at 0.3-0.9× the unfolding paths' speed.)
constexpr std::int64_t kWinogradMinChannelsF4 = 24;

/// Per-thread buffers for one chunk of images (slot 0: unfolded input, slots 1 and 2: a chunk
/// of outputs or of the output gradient; about kChunkBytes each) that grow to the largest
/// size asked of them and are reused. Whole-batch buffers come from the block cache
/// (Scratch) and go back to it.
template <class T>
T* workspace(int slot, std::int64_t size) {
  thread_local std::array<std::vector<T>, 3> buffers;
  auto& buffer = buffers[static_cast<std::size_t>(slot)];
  if (static_cast<std::int64_t>(buffer.size()) < size) buffer.resize(static_cast<std::size_t>(size));
  return buffer.data();
}

/// Runs body(n) for n in [0, count), on all threads when `parallel`, rethrowing the first
/// exception a thread hit (exceptions must not leave an OpenMP region).
template <class F>
void for_batch(std::int64_t count, bool parallel, F body) {
  std::exception_ptr error;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t n = 0; n < count; ++n) {
    try {
      body(n);
    } catch (...) {
#pragma omp critical(tapegrad_conv_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

/// How many images' unfolded inputs fit in kChunkBytes: at least one, at most the batch.
std::int64_t images_in_chunk_bytes(const ConvGeometry& g, std::size_t elem) {
  const auto per_image = std::max<std::int64_t>(g.col_rows() * g.plane_out() * static_cast<std::int64_t>(elem), 1);
  return std::clamp<std::int64_t>(kChunkBytes / per_image, 1, std::max<std::int64_t>(g.batch, 1));
}

/// The batch in chunks of consecutive images: as many unfolded images as fit in kChunkBytes
/// (at least one; the whole batch for loops that unfold nothing), in a number of chunks
/// that the threads share evenly when the batch is split: a multiple of the thread count,
/// the images spread over them as evenly as they go (chunk sizes differ by at most one), so
/// that each thread's consecutive chunks hold a thread's share of the images. (Chunks of a
/// fixed size left the last one short: 32 images in chunks of 6 gave one thread 18 and the
/// other 14, a 28 % longer input gradient on one thread for ResNet-18's stride-2 convs.)
struct Chunks {
  std::int64_t count = 0;
  Chunks(const ConvPlan& p, bool unfolds) : batch_(p.g.batch) {
    const ConvGeometry& g = p.g;
    if (g.batch <= 0) return;
    const std::int64_t size = g.pointwise() ? 1 : unfolds ? images_in_chunk_bytes(g, p.elem) : g.batch;
    count = (g.batch + size - 1) / size;
    if (p.parallel) {
      const std::int64_t threads = omp_get_max_threads();
      count = std::min(g.batch, (count + threads - 1) / threads * threads);
    }
  }
  std::int64_t first(std::int64_t c) const { return c * batch_ / count; }
  std::int64_t images(std::int64_t c) const { return first(c + 1) - first(c); }

 private:
  std::int64_t batch_;
};

/// A band of output rows of one image, as a geometry of its own: its output rows, the
/// input rows they read (starting x_offset elements into each input plane) and the padding
/// they see. Its channels stay a whole input plane apart, so it is unfolded and folded one
/// channel at a time.
struct Band {
  ConvGeometry g;
  std::int64_t x_offset = 0, y_offset = 0, cols = 0;  // within one plane
};

Band band(const ConvPlan& p, std::int64_t i) {
  const ConvGeometry& g = p.g;
  Band b{g, 0, i * p.band_rows * g.w.out, 0};
  const std::int64_t rows = std::min(p.band_rows, g.h.out - i * p.band_rows);
  const std::int64_t begin = g.h.start(i * p.band_rows), end = begin + (rows - 1) * g.h.stride + g.h.span();
  const std::int64_t first = std::max<std::int64_t>(begin, 0);
  b.g.h.in = std::min(end, g.h.in) - first;
  b.g.h.pad_begin = first - begin;
  b.g.h.pad_end = std::max<std::int64_t>(end - g.h.in, 0);
  b.g.h.out = rows;
  b.x_offset = first * g.w.in;
  b.cols = rows * g.w.out;
  return b;
}

/// f(n, gi, band) for each image of [n0, n0 + images), each group and each band.
template <class F>
void each_band(const ConvPlan& p, std::int64_t n0, std::int64_t images, F f) {
  for (std::int64_t n = n0; n < n0 + images; ++n) {
    for (std::int64_t gi = 0; gi < p.g.groups; ++gi) {
      for (std::int64_t i = 0; i < p.bands; ++i) f(n, gi, band(p, i));
    }
  }
}

/// im2col / col2im of one group's channels over a band (col's rows are band.cols long).
template <class T>
void unfold_band(const T* x, const ConvGeometry& g, const Band& b, T* col) {
  const std::int64_t taps = g.h.kernel * g.w.kernel;
  for (std::int64_t c = 0; c < g.group_in(); ++c) {
    im2col(x + c * g.plane_in() + b.x_offset, b.g, 1, col + c * taps * b.cols, b.cols);
  }
}
/// col2im, or for a tiling geometry (whose x was not zeroed) fold_tiles, which writes.
template <class T>
void fold(const T* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, T* x) {
  if (g.tiles()) return fold_tiles(col, ld, g, channels, x);
  col2im(col, ld, g, channels, x);
}
template <class T>
void fold_band(const T* col, const ConvGeometry& g, const Band& b, T* x) {
  const std::int64_t taps = g.h.kernel * g.w.kernel;
  for (std::int64_t c = 0; c < g.group_in(); ++c) {
    fold(col + c * taps * b.cols, b.cols, b.g, 1, x + c * g.plane_in() + b.x_offset);
  }
}

/// The weight transposed per group and padded to 16 lanes for the direct kernels:
/// [groups][col_rows][16], zero beyond group_out.
std::vector<float> direct_weight(const float* w, const ConvGeometry& g) {
  const std::int64_t go = g.group_out(), rows = g.col_rows();
  std::vector<float> wt(static_cast<std::size_t>(g.groups * rows * 16), 0.0f);
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    for (std::int64_t o = 0; o < go; ++o) {
      for (std::int64_t r = 0; r < rows; ++r) wt[static_cast<std::size_t>((gi * rows + r) * 16 + o)] = w[(gi * go + o) * rows + r];
    }
  }
  return wt;
}

/// copy(nchw, chunk) for each output plane of one group over a chunk of images: its offset
/// in NCHW and in the chunk's [group_out, images, plane] layout (images side by side).
template <class F>
void each_chunk_plane(const ConvGeometry& g, std::int64_t n0, std::int64_t images, std::int64_t group, F copy) {
  const std::int64_t go = g.group_out(), plane = g.plane_out();
  for (std::int64_t j = 0; j < images; ++j) {
    for (std::int64_t o = 0; o < go; ++o) copy(((n0 + j) * g.out_channels + group * go + o) * plane, (o * images + j) * plane);
  }
}

/// Every image of x unfolded into [groups, col_rows, batch · plane_out] (kept_shape()).
template <class T>
void unfold_whole_batch(const ConvPlan& p, const T* x, T* unfolded) {
  const ConvGeometry& g = p.g;
  const std::int64_t rows = g.col_rows(), plane = g.plane_out(), cols = g.batch * plane;
  const std::int64_t x_image = g.channels * g.plane_in();
#pragma omp parallel for collapse(2) schedule(static) if (p.parallel)
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      im2col(x + n * x_image + gi * g.group_in() * g.plane_in(), g, g.group_in(),
             unfolded + gi * rows * cols + n * plane, cols);
    }
  }
}

/// grad_W = Σ over the batch of grad_y · unfoldedᵀ with x unfolded whole ([groups, col_rows,
/// batch · plane_out]) and grad_y reordered to [out_channels, batch · plane] (the unfolded
/// columns' order), then one GEMM per group, which the GEMM library threads. Added to
/// grad_w with `add`.
template <class T>
void whole_batch_weight_grad(const ConvPlan& p, const T* x, const T* gy, T* grad_w, bool add) {
  const ConvGeometry& g = p.g;
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out(), cols = g.batch * plane;
  Scratch<T> unfolded(g.groups * rows * cols);
  unfold_whole_batch(p, x, unfolded.data());
  Scratch<T> gy_t_buffer(g.out_channels * cols);
  T* gy_t = gy_t_buffer.data();
#pragma omp parallel for collapse(2) schedule(static) if (p.parallel)
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    for (std::int64_t n = 0; n < g.batch; ++n) std::copy_n(gy + (n * g.out_channels + o) * plane, plane, gy_t + o * cols + n * plane);
  }
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    gemm(false, true, go, rows, cols, T(1), gy_t + gi * go * cols, cols, unfolded.data() + gi * rows * cols, cols,
         T(add ? 1 : 0), grad_w + gi * go * rows, rows);
  }
}

/// y = conv2d(x, w) + b with every image unfolded into a workspace ([groups, col_rows,
/// batch · plane_out]), then one GEMM per group over the batch (threaded by the GEMM
/// library) into [out_channels, batch · plane], reordered to NCHW.
/// Per chunk the GEMMs would have a few images' planes as columns (48 for ResNet-18's
/// 512-channel layer on 4×4 images), too few to run near the GEMM's peak.
template <class T>
void whole_batch_forward(const ConvPlan& p, const T* x, const T* w, const T* b, T* y) {
  const ConvGeometry& g = p.g;
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out(), cols = g.batch * plane;
  Scratch<T> unfolded_buffer(g.groups * rows * cols);
  T* unfolded = unfolded_buffer.data();
  unfold_whole_batch(p, x, unfolded);
  Scratch<T> out_buffer(g.out_channels * cols);
  T* out = out_buffer.data();
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    gemm(false, false, go, cols, rows, T(1), w + gi * go * rows, rows, unfolded + gi * rows * cols, cols, T(0),
         out + gi * go * cols, cols);
  }
#pragma omp parallel for collapse(2) schedule(static) if (p.parallel)
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      const T* src = out + o * cols + n * plane;
      T* dst = y + (n * g.out_channels + o) * plane;
      const T shift = b != nullptr ? b[o] : T(0);
      for (std::int64_t i = 0; i < plane; ++i) dst[i] = src[i] + shift;
    }
  }
}

/// grad_W_g (or its transpose, as the plan says) += grad_y · unfoldedᵀ over `cols` output
/// elements of one group.
template <class T>
void add_group_weight_grad(const ConvPlan& p, const T* unfolded, std::int64_t unfolded_ld, const T* gy,
                           std::int64_t gy_ld, std::int64_t cols, T* gw_g) {
  const std::int64_t go = p.g.group_out(), rows = p.g.col_rows();
  if (p.transposed_weight_grad) {
    gemm(false, true, rows, go, cols, T(1), unfolded, unfolded_ld, gy, gy_ld, T(1), gw_g, go);
  } else {
    gemm(false, true, go, rows, cols, T(1), gy, gy_ld, unfolded, unfolded_ld, T(1), gw_g, rows);
  }
}

/// Per-thread sums of the chunks' weight gradients, in the plan's layout: each thread adds
/// into its own slot and the slots are added in a fixed order afterwards, so the result does
/// not depend on scheduling.
template <class T>
class WeightGradSlots {
 public:
  WeightGradSlots(const ConvPlan& p, bool wanted)
      : p_(p), slots_(p.parallel ? omp_get_max_threads() : 1), size_(p.g.out_channels * p.g.col_rows()) {
    if (wanted) std::fill_n(sums_.get(slots_ * size_), slots_ * size_, T(0));
  }

  /// The calling thread's slot.
  T* mine() { return sums_.data() + (p_.parallel ? omp_get_thread_num() : 0) * size_; }

  /// grad_w = the sum of the slots, as [out_channels, col_rows]; grad_w += it with `add`.
  void sum_into(T* grad_w, bool add = false) const {
    const std::int64_t go = p_.g.group_out(), rows = p_.g.col_rows();
    if (!add) std::fill_n(grad_w, size_, T(0));
    for (std::int64_t s = 0; s < slots_; ++s) {
      const T* slot = sums_.data() + s * size_;
      if (!p_.transposed_weight_grad) {
        for (std::int64_t i = 0; i < size_; ++i) grad_w[i] += slot[i];
        continue;
      }
      for (std::int64_t gi = 0; gi < p_.g.groups; ++gi) {  // [rows, go] -> [go, rows]
        const T* src = slot + gi * go * rows;
        T* dst = grad_w + gi * go * rows;
        for (std::int64_t r = 0; r < rows; ++r) {
          for (std::int64_t o = 0; o < go; ++o) dst[o * rows + r] += src[r * go + o];
        }
      }
    }
  }

 private:
  const ConvPlan& p_;
  std::int64_t slots_, size_;
  Scratch<T> sums_;
};

}  // namespace

ConvPlan::ConvPlan(const ConvGeometry& geometry, std::size_t elem_size) : g(geometry), elem(elem_size) {
  const bool f32 = elem == sizeof(float);
  const double macs = static_cast<double>(g.batch) * static_cast<double>(g.out_channels) *
                      static_cast<double>(g.plane_out()) * static_cast<double>(g.col_rows());
  parallel = g.batch > 1 && omp_get_max_threads() > 1 && macs > 2e5;
  band_rows = g.h.out;
  const std::int64_t row_bytes = g.col_rows() * g.w.out * static_cast<std::int64_t>(elem);
  if (!g.pointwise() && g.h.pad_begin < g.h.span() && g.h.pad_end < g.h.span() && row_bytes * g.h.out > kChunkBytes) {
    band_rows = std::clamp<std::int64_t>(kChunkBytes / row_bytes, 1, g.h.out);  // every band reads an input row
  }
  bands = (g.h.out + band_rows - 1) / std::max<std::int64_t>(band_rows, 1);
  const ConvPath unfolded = bands > 1 ? ConvPath::banded : ConvPath::gemm;
  // Winograd where it measured faster than the unfolding paths (kWinogradMinChannels, or
  // kWinogradMinChannelsF4 with F(4×4) tiles), with F(4×4, 3×3) tiles where there are enough
  // of them (winograd_tile_for).
  const std::int64_t fewer_channels = std::min(g.channels, g.out_channels);
  const bool winograd = f32 && winograd_fits(g) &&
                        (fewer_channels >= kWinogradMinChannels ||
                         (fewer_channels >= kWinogradMinChannelsF4 && winograd_tile_for(g) == WinogradTile::f4));
  if (g.depthwise()) {
    forward = input_grad = weight_grad = ConvPath::depthwise;
  } else {
    forward = f32 && direct_conv_fits(g) ? ConvPath::direct : winograd ? ConvPath::winograd : unfolded;
    input_grad = winograd ? ConvPath::winograd : unfolded;
    if (winograd) winograd_tile = winograd_tile_for(g);
    weight_grad = winograd                                ? ConvPath::winograd
                  : f32 && direct_weight_grad_fits(g) ? ConvPath::direct
                                                      : unfolded;
  }
  const std::int64_t unfolded_bytes = g.groups * g.col_rows() * g.batch * g.plane_out() * static_cast<std::int64_t>(elem);
  const std::int64_t chunk_columns = images_in_chunk_bytes(g, elem) * g.plane_out();
  whole_batch = forward == ConvPath::gemm &&
                !g.pointwise() && g.batch > 1 && unfolded_bytes <= kKeepUnfoldedBytes &&
                chunk_columns < kMinChunkColumns;
  keeps_unfolded = weight_grad == ConvPath::gemm && forward != ConvPath::winograd && !g.pointwise() &&
                   !whole_batch && unfolded_bytes <= kKeepUnfoldedBytes;
  transposed_weight_grad = weight_grad == ConvPath::direct ||
                           (weight_grad != ConvPath::depthwise && weight_grad != ConvPath::winograd &&
                            g.group_out() >= 16 && g.group_out() < g.col_rows());
}

template <class T>
void conv_forward(const ConvPlan& p, const T* x, const T* w, const T* b, T* y, T* kept) {
  const ConvGeometry& g = p.g;
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
  const std::int64_t x_image = g.channels * g.plane_in(), y_image = g.out_channels * plane;
  if constexpr (std::is_same_v<T, float>) {
    if (p.forward == ConvPath::winograd) return winograd_forward(g, x, w, b, y, p.winograd_tile, p.parallel);
  }
  if (p.whole_batch) return whole_batch_forward(p, x, w, b, y);
  const Chunks chunks(p, p.forward == ConvPath::banded || p.forward == ConvPath::gemm);
  std::vector<float> wt;
  if constexpr (std::is_same_v<T, float>) {
    if (p.forward == ConvPath::direct) wt = direct_weight(w, g);
  }
  for_batch(chunks.count, p.parallel, [&](std::int64_t c) {
    const std::int64_t n0 = chunks.first(c), cb = chunks.images(c), ld = cb * plane;
    switch (p.forward) {
      case ConvPath::depthwise:  // (adds the bias itself)
        for (std::int64_t n = n0; n < n0 + cb; ++n) depthwise_forward(x + n * x_image, w, b, g, y + n * y_image);
        return;
      case ConvPath::direct:  // (adds the bias itself)
        if constexpr (std::is_same_v<T, float>) {
          for (std::int64_t n = n0; n < n0 + cb; ++n) direct_conv_forward(x + n * x_image, wt.data(), b, g, y + n * y_image);
        }
        return;
      case ConvPath::winograd:  // (whole-batch, above)
        return;
      case ConvPath::banded: {
        T* col = workspace<T>(0, rows * p.band_rows * g.w.out);
        each_band(p, n0, cb, [&](std::int64_t n, std::int64_t gi, const Band& band) {
          unfold_band(x + n * x_image + gi * g.group_in() * g.plane_in(), g, band, col);
          gemm(false, false, go, band.cols, rows, T(1), w + gi * go * rows, rows, col, band.cols, T(0),
               y + n * y_image + gi * go * plane + band.y_offset, plane);
        });
        break;
      }
      case ConvPath::gemm: {
        // The chunk's unfolded input: in the kept tensor (all images side by side, one block
        // per group) or in this thread's workspace; x itself for a pointwise kernel.
        const std::int64_t col_ld = kept != nullptr ? g.batch * plane : ld;
        T* col_base = kept != nullptr ? kept + n0 * plane : g.pointwise() ? nullptr : workspace<T>(0, rows * ld);
        T* chunk_out = cb > 1 ? workspace<T>(1, go * ld) : nullptr;
        for (std::int64_t gi = 0; gi < g.groups; ++gi) {
          const std::int64_t x_off = gi * g.group_in() * g.plane_in();
          T* col = kept != nullptr ? col_base + gi * rows * col_ld : col_base;
          for (std::int64_t j = 0; col != nullptr && j < cb; ++j) {
            im2col(x + (n0 + j) * x_image + x_off, g, g.group_in(), col + j * plane, col_ld);
          }
          const T* unfolded = col != nullptr ? col : x + n0 * x_image + x_off;
          T* dst = chunk_out != nullptr ? chunk_out : y + n0 * y_image + gi * go * plane;
          gemm(false, false, go, ld, rows, T(1), w + gi * go * rows, rows, unfolded, col != nullptr ? col_ld : ld, T(0),
               dst, ld);
          if (chunk_out == nullptr) continue;
          each_chunk_plane(g, n0, cb, gi, [&](std::int64_t nchw, std::int64_t chunk) {
            std::copy_n(chunk_out + chunk, plane, y + nchw);
          });
        }
        break;
      }
    }
    for (std::int64_t n = n0; b != nullptr && n < n0 + cb; ++n) {
      for (std::int64_t o = 0; o < g.out_channels; ++o) {
        T* dst = y + n * y_image + o * plane;
        for (std::int64_t i = 0; i < plane; ++i) dst[i] += b[o];
      }
    }
  });
}

template <class T>
void conv_backward(const ConvPlan& p, const T* x, const T* kept, const T* w, const T* gy, T* gx, T* grad_w,
                   const T* grad_x_bias, bool add_w) {
  const ConvGeometry& g = p.g;
  if constexpr (std::is_same_v<T, float>) {
    if (gx != nullptr && p.input_grad == ConvPath::winograd) {
      winograd_input_grad(g, gy, w, grad_x_bias, gx, p.winograd_tile, p.parallel);
      gx = nullptr;  // done: what follows is the weight gradient's
    }
    if (grad_w != nullptr && p.weight_grad == ConvPath::winograd) {
      winograd_weight_grad(g, x, gy, grad_w, add_w, p.winograd_tile, p.parallel);
      grad_w = nullptr;
    }
  }
  const bool need_x = gx != nullptr, need_w = grad_w != nullptr;
  if (!need_x && !need_w) return;
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
  const std::int64_t x_image = g.channels * g.plane_in(), y_image = g.out_channels * plane;
  const bool depthwise = p.forward == ConvPath::depthwise;
  const bool direct_w = need_w && p.weight_grad == ConvPath::direct;
  // A whole-batch plan: the weight gradient is one GEMM per group over the whole batch
  // (k = batch · plane), x unfolded whole again, after the chunk loop, threaded by the GEMM
  // library; per chunk, k would be a few images' planes and each chunk would read and write
  // all of grad_W (ResNet-18's 512→512 3×3 on 4×4 images: k = 48 for a 512 × 4608 result).
  // For large images (LeNet) the per-thread chunk sums stay faster.
  const bool whole_batch_w = need_w && p.whole_batch && p.weight_grad == ConvPath::gemm;
  const bool unfolded_w = need_w && !whole_batch_w && (p.weight_grad == ConvPath::banded || p.weight_grad == ConvPath::gemm);
  // col2im adds into grad_x, zeroed chunk by chunk (on the chunk's thread, just before);
  // the depthwise kernel and fold_tiles write every element.
  const bool zero_gx = need_x && !depthwise && !g.tiles();
  const Chunks chunks(p, !depthwise && (need_x || unfolded_w));
  const bool chunk_w = need_w && !whole_batch_w;
  WeightGradSlots<T> partial(p, chunk_w);
  const auto add_weight_grad = [&](const T* unfolded, std::int64_t unfolded_ld, const T* gyc, std::int64_t gy_ld,
                                   std::int64_t cols, T* gw_g) {
    add_group_weight_grad(p, unfolded, unfolded_ld, gyc, gy_ld, cols, gw_g);
  };
  const auto run_chunk = [&](std::int64_t c) {
    const std::int64_t n0 = chunks.first(c), cb = chunks.images(c), ld = cb * plane;
    T* gw = chunk_w ? partial.mine() : nullptr;
    if (zero_gx) std::fill_n(gx + n0 * x_image, cb * x_image, T(0));
    if (depthwise) {
      for (std::int64_t n = n0; n < n0 + cb; ++n) {
        depthwise_backward(need_w ? x + n * x_image : nullptr, w, gy + n * y_image, g,
                           need_x ? gx + n * x_image : nullptr, gw);
      }
      return;
    }
    if constexpr (std::is_same_v<T, float>) {  // the direct kernel's weight gradient, per image
      for (std::int64_t n = n0; direct_w && n < n0 + cb; ++n) direct_conv_weight_grad(x + n * x_image, gy + n * y_image, g, gw);
    }
    if (!need_x && !unfolded_w) return;
    if (p.bands > 1) {  // input_grad and an unfolding weight_grad are both banded
      T* col = workspace<T>(0, rows * p.band_rows * g.w.out);
      each_band(p, n0, cb, [&](std::int64_t n, std::int64_t gi, const Band& band) {
        const std::int64_t x_off = n * x_image + gi * g.group_in() * g.plane_in();
        const T* gyb = gy + n * y_image + gi * go * plane + band.y_offset;
        if (need_x) {
          gemm(true, false, rows, band.cols, go, T(1), w + gi * go * rows, rows, gyb, plane, T(0), col, band.cols);
          fold_band(col, g, band, gx + x_off);
        }
        if (unfolded_w) {
          unfold_band(x + x_off, g, band, col);
          add_weight_grad(col, band.cols, gyb, plane, band.cols, gw + gi * go * rows);
        }
      });
      return;
    }
    T* col = g.pointwise() ? nullptr : workspace<T>(0, rows * ld);
    T* chunk_gy = cb > 1 ? workspace<T>(1, go * ld) : nullptr;
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      const std::int64_t x_off = gi * g.group_in() * g.plane_in();
      if (chunk_gy != nullptr) {
        each_chunk_plane(g, n0, cb, gi, [&](std::int64_t nchw, std::int64_t chunk) {
          std::copy_n(gy + nchw, plane, chunk_gy + chunk);
        });
      }
      const T* gyc = chunk_gy != nullptr ? chunk_gy : gy + n0 * y_image + gi * go * plane;
      if (need_x) {  // grad of the unfolded input = W_gᵀ · grad_y, folded back
        const T* wg = w + gi * go * rows;
        if (col == nullptr) {
          gemm(true, false, rows, ld, go, T(1), wg, rows, gyc, ld, T(0), gx + n0 * x_image + x_off, ld);
        } else {
          gemm(true, false, rows, ld, go, T(1), wg, rows, gyc, ld, T(0), col, ld);
          for (std::int64_t j = 0; j < cb; ++j) fold(col + j * plane, ld, g, g.group_in(), gx + (n0 + j) * x_image + x_off);
        }
      }
      if (unfolded_w) {  // grad_W_g += grad_y · unfoldedᵀ
        const std::int64_t kept_ld = g.batch * plane;
        for (std::int64_t j = 0; kept == nullptr && col != nullptr && j < cb; ++j) {
          im2col(x + (n0 + j) * x_image + x_off, g, g.group_in(), col + j * plane, ld);
        }
        const T* unfolded = kept != nullptr ? kept + gi * rows * kept_ld + n0 * plane
                            : col != nullptr ? col
                                             : x + n0 * x_image + x_off;
        add_weight_grad(unfolded, kept != nullptr ? kept_ld : ld, gyc, ld, ld, gw + gi * go * rows);
      }
    }
  };
  for_batch(chunks.count, p.parallel, [&](std::int64_t c) {
    run_chunk(c);
    // the bias while the chunk's grad_x is still in cache (conv_transpose2d's forward)
    for (std::int64_t n = chunks.first(c); need_x && grad_x_bias != nullptr && n < chunks.first(c) + chunks.images(c); ++n) {
      for (std::int64_t ch = 0; ch < g.channels; ++ch) {
        T* dst = gx + n * x_image + ch * g.plane_in();
        const T shift = grad_x_bias[ch];
        for (std::int64_t i = 0; i < g.plane_in(); ++i) dst[i] += shift;
      }
    }
  });
  if (whole_batch_w) return whole_batch_weight_grad(p, x, gy, grad_w, add_w);
  if (need_w) partial.sum_into(grad_w, add_w);
}

template <class T>
bool conv_forward_weight_grad(const ConvPlan& p, const T* x, const T* w, T* y, const T* gy, T* grad_w) {
  const ConvGeometry& g = p.g;
  if (p.forward != ConvPath::gemm || p.weight_grad != ConvPath::gemm || p.whole_batch || g.pointwise()) return false;
  const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
  const std::int64_t x_image = g.channels * g.plane_in(), y_image = g.out_channels * plane;
  const Chunks chunks(p, true);
  WeightGradSlots<T> partial(p, true);
  for_batch(chunks.count, p.parallel, [&](std::int64_t c) {
    const std::int64_t n0 = chunks.first(c), cb = chunks.images(c), ld = cb * plane;
    T* col = workspace<T>(0, rows * ld);
    // a chunk of several images: y and grad_y as [group_out, images · plane] (images side by side)
    T* chunk_y = cb > 1 ? workspace<T>(1, go * ld) : nullptr;
    T* chunk_gy = cb > 1 ? workspace<T>(2, go * ld) : nullptr;
    for (std::int64_t gi = 0; gi < g.groups; ++gi) {
      const std::int64_t x_off = gi * g.group_in() * g.plane_in();
      for (std::int64_t j = 0; j < cb; ++j) im2col(x + (n0 + j) * x_image + x_off, g, g.group_in(), col + j * plane, ld);
      T* dst = chunk_y != nullptr ? chunk_y : y + n0 * y_image + gi * go * plane;
      gemm(false, false, go, ld, rows, T(1), w + gi * go * rows, rows, col, ld, T(0), dst, ld);
      if (chunk_y != nullptr) {
        each_chunk_plane(g, n0, cb, gi, [&](std::int64_t nchw, std::int64_t at) {
          std::copy_n(chunk_y + at, plane, y + nchw);
          std::copy_n(gy + nchw, plane, chunk_gy + at);
        });
      }
      const T* gyc = chunk_gy != nullptr ? chunk_gy : gy + n0 * y_image + gi * go * plane;
      add_group_weight_grad(p, col, ld, gyc, ld, ld, partial.mine() + gi * go * rows);
    }
  });
  partial.sum_into(grad_w);
  return true;
}

template void conv_forward(const ConvPlan&, const float*, const float*, const float*, float*, float*);
template void conv_forward(const ConvPlan&, const double*, const double*, const double*, double*, double*);
template void conv_backward(const ConvPlan&, const float*, const float*, const float*, const float*, float*, float*,
                            const float*, bool);
template void conv_backward(const ConvPlan&, const double*, const double*, const double*, const double*, double*,
                            double*, const double*, bool);
template bool conv_forward_weight_grad(const ConvPlan&, const float*, const float*, float*, const float*, float*);
template bool conv_forward_weight_grad(const ConvPlan&, const double*, const double*, double*, const double*,
                                       double*);

}  // namespace tapegrad::detail
