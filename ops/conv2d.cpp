// conv2d: 2-D cross-correlation (the kernel is not flipped), as PyTorch's conv2d.
//   x [N, C, H, W], w [O, C/G, kh, kw], b [O] -> y [N, O, OH, OW]
//   y[n, o, p, q] = b[o] + Σ_{c in o's group, i, j} x[n, c, p·s + i·d - pad, q·s + j·d - pad] · w[o, c, i, j]
// Per image and group this is one GEMM on the unfolded input: y_g = W_g · im2col(x_g).
// VJPs (per image and group):
//   grad_x_g = col2im(W_gᵀ · grad_y_g): each input element collects grad_y × w from exactly
//              the windows that read it; elements no window reads (stride remainders) get 0.
//   grad_W_g = Σ_n grad_y_g · im2col(x_g)ᵀ
//   grad_b   = Σ_{n, p, q} grad_y
// Paths: 1×1/stride 1/no padding uses x itself as the unfolded input; depthwise (one
// input channel per group, which includes a single input channel) uses direct loops;
// everything else im2col + GEMM. Small images
// are unfolded in chunks side by side, so one GEMM covers several of them instead of many
// tiny GEMMs; a chunk's workspace is bounded (about 1 MiB, or one image), never N images.
// Chunks are split across OpenMP threads when the work is large enough, each thread
// reusing its own workspaces. When the weight needs a gradient and the batch's unfolded
// input is at most 16 MiB, the forward also keeps it for the VJP, which then unfolds nothing.
// Second order: grad_x and grad_W are ops of their own, conv2d_input_grad(grad_y, W) (a
// transposed convolution) and conv2d_weight_grad(x, grad_y) (a correlation). All three are
// the same bilinear form <conv2d(x, W), grad_y> = <x, input_grad(grad_y, W)> =
// <W, weight_grad(x, grad_y)>, so each one's VJP is made of the other two.
#include <exception>
#include <omp.h>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/conv.hpp"
#include "ops/kernels/gemm.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

using detail::ConvGeometry;

/// Per-thread scratch buffers (slot 0: unfolded input, slot 1: a chunk of outputs) that
/// grow to the largest size asked of them and are reused.
template <class T>
T* workspace(int slot, std::int64_t size) {
  thread_local std::array<std::vector<T>, 2> buffers;
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

/// Splitting the batch pays off only when it carries enough multiply-adds.
bool worth_parallel(const ConvGeometry& g) {
  const double macs = static_cast<double>(g.batch) * static_cast<double>(g.out_channels) *
                      static_cast<double>(g.plane_out()) * static_cast<double>(g.col_rows());
  return g.batch > 1 && omp_get_max_threads() > 1 && macs > 2e5;
}

/// The forward keeps the whole batch's unfolded input for the VJP up to this size.
constexpr std::int64_t kKeepUnfoldedBytes = std::int64_t{16} << 20;

/// A chunk's unfolded inputs stay within about this many bytes (roughly an L2 cache).
constexpr std::int64_t kChunkBytes = std::int64_t{1} << 20;

/// Images per chunk: as many unfolded images as fit in kChunkBytes (at least one; the
/// whole batch for kernels that unfold nothing), in a number of chunks that the threads
/// share evenly when the batch is split.
struct Chunks {
  std::int64_t size = 1, count = 0;
  Chunks(const ConvGeometry& g, bool parallel, std::size_t elem, bool unfolds) {
    const std::int64_t batch = std::max<std::int64_t>(g.batch, 1);
    if (!g.pointwise()) {
      const auto per_image = std::max<std::int64_t>(g.col_rows() * g.plane_out() * static_cast<std::int64_t>(elem), 1);
      size = unfolds ? std::clamp<std::int64_t>(kChunkBytes / per_image, 1, batch) : batch;
      if (parallel) {  // a multiple of the thread count, as even as the batch allows
        const std::int64_t threads = omp_get_max_threads();
        const std::int64_t chunks = ((batch + size - 1) / size + threads - 1) / threads * threads;
        size = (batch + chunks - 1) / chunks;
      }
    }
    count = (g.batch + size - 1) / size;
  }
  std::int64_t first(std::int64_t c) const { return c * size; }
  std::int64_t images(std::int64_t c, std::int64_t batch) const { return std::min(size, batch - c * size); }
};

/// A band of output rows of one image, as a geometry of its own: its output rows, the
/// input rows they read (starting x_offset elements into each input plane) and the padding
/// they see. Its channels stay a whole input plane apart, so it is unfolded and folded one
/// channel at a time.
struct Band {
  ConvGeometry g;
  std::int64_t x_offset = 0, y_offset = 0, cols = 0;  // within one plane
};

/// An image whose unfolded input exceeds kChunkBytes is unfolded a band of output rows at a
/// time, so that each band stays in cache between im2col and its GEMMs (one image of the
/// 64@56² 3×3 conv unfolds to 7.2 MB). Bands need every output row to read at least one
/// input row: padding below the kernel's span.
struct Bands {
  std::int64_t height = 0, count = 1;  // output rows per band, bands per image
  Bands(const ConvGeometry& g, std::size_t elem) : height(g.h.out) {
    const std::int64_t row_bytes = g.col_rows() * g.w.out * static_cast<std::int64_t>(elem);
    if (!g.pointwise() && g.h.pad_begin < g.h.span() && g.h.pad_end < g.h.span() && row_bytes * g.h.out > kChunkBytes) {
      height = std::clamp<std::int64_t>(kChunkBytes / row_bytes, 1, g.h.out);
    }
    count = (g.h.out + height - 1) / std::max<std::int64_t>(height, 1);
  }
  /// f(n, gi, band) for each image of [n0, n0 + images), each group and each band.
  template <class F>
  void each(const ConvGeometry& g, std::int64_t n0, std::int64_t images, F f) const {
    for (std::int64_t n = n0; n < n0 + images; ++n) {
      for (std::int64_t gi = 0; gi < g.groups; ++gi) {
        for (std::int64_t i = 0; i < count; ++i) f(n, gi, (*this)(g, i));
      }
    }
  }
  Band operator()(const ConvGeometry& g, std::int64_t i) const {
    Band b{g, 0, i * height * g.w.out, 0};
    const std::int64_t rows = std::min(height, g.h.out - i * height);
    const std::int64_t begin = g.h.start(i * height), end = begin + (rows - 1) * g.h.stride + g.h.span();
    const std::int64_t first = std::max<std::int64_t>(begin, 0);
    b.g.h.in = std::min(end, g.h.in) - first;
    b.g.h.pad_begin = first - begin;
    b.g.h.pad_end = std::max<std::int64_t>(end - g.h.in, 0);
    b.g.h.out = rows;
    b.x_offset = first * g.w.in;
    b.cols = rows * g.w.out;
    return b;
  }
};

/// The weight transposed per group and padded to 16 lanes for the direct kernels:
/// [groups][col_rows][16], zero beyond group_out.
template <class T>
std::vector<T> direct_weight(const T* w, const ConvGeometry& g) {
  const std::int64_t go = g.group_out(), rows = g.col_rows();
  std::vector<T> wt(static_cast<std::size_t>(g.groups * rows * 16), T(0));
  for (std::int64_t gi = 0; gi < g.groups; ++gi) {
    for (std::int64_t o = 0; o < go; ++o) {
      for (std::int64_t r = 0; r < rows; ++r) wt[static_cast<std::size_t>((gi * rows + r) * 16 + o)] = w[(gi * go + o) * rows + r];
    }
  }
  return wt;
}

/// im2col / col2im of one group's channels over a band (col's rows are band.cols long).
template <class T>
void unfold_band(const T* x, const ConvGeometry& g, const Band& band, T* col) {
  const std::int64_t taps = g.h.kernel * g.w.kernel;
  for (std::int64_t c = 0; c < g.group_in(); ++c) {
    detail::im2col(x + c * g.plane_in() + band.x_offset, band.g, 1, col + c * taps * band.cols, band.cols);
  }
}
template <class T>
void fold_band(const T* col, const ConvGeometry& g, const Band& band, T* x) {
  const std::int64_t taps = g.h.kernel * g.w.kernel;
  for (std::int64_t c = 0; c < g.group_in(); ++c) {
    detail::col2im(col + c * taps * band.cols, band.cols, band.g, 1, x + c * g.plane_in() + band.x_offset);
  }
}

std::string pair(const std::array<std::int64_t, 2>& v) { return fmt::format("[{}, {}]", v[0], v[1]); }

struct Conv2d {
  static constexpr std::string_view name = "conv2d";
  Conv2dOptions opt;
  ConvGeometry geom{};  // set by forward, read by the VJP

  std::string attributes() const {
    const char* mode = opt.padding_mode == ConvPadding::same ? "same" : "valid";
    return fmt::format("stride={}, padding={}, dilation={}, groups={}", pair(opt.stride),
                       opt.padding_mode == ConvPadding::explicit_sizes ? pair(opt.padding) : mode,
                       pair(opt.dilation), opt.groups);
  }

  ConvGeometry geometry(const Tensor& x, const Tensor& w, const Tensor& b) const {
    detail::check_floating(name, x, "input");
    detail::check_floating(name, w, "weight");
    if (x.dim() != 4 || w.dim() != 4) {
      throw ShapeError(fmt::format("conv2d: expects input [N, C, H, W] and weight [O, C/groups, "
                                   "kh, kw], got input {} and weight {}", x.shape(), w.shape()));
    }
    if (x.dtype() != w.dtype() || (b.defined() && b.dtype() != x.dtype())) {
      throw DTypeError(fmt::format("conv2d: input, weight and bias must share one dtype, got {}, "
                                   "{} and {}", x.dtype(), w.dtype(),
                                   b.defined() ? dtype_name(b.dtype()) : "no bias"));
    }
    ConvGeometry r;
    r.batch = x.shape()[0];
    r.channels = x.shape()[1];
    r.out_channels = w.shape()[0];
    r.groups = opt.groups;
    if (r.groups <= 0) throw ValueError(fmt::format("conv2d: groups must be positive, got {}", r.groups));
    if (r.channels % r.groups != 0 || r.out_channels % r.groups != 0) {
      throw ShapeError(fmt::format("conv2d: groups={} must divide both the input channels ({}) "
                                   "and the output channels ({})", r.groups, r.channels, r.out_channels));
    }
    if (w.shape()[1] * r.groups != r.channels) {
      throw ShapeError(fmt::format("conv2d: input {} has {} channels but weight {} expects "
                                   "{} (= {} per group x groups={})", x.shape(), r.channels,
                                   w.shape(), w.shape()[1] * r.groups, w.shape()[1], r.groups));
    }
    if (b.defined() && (b.dim() != 1 || b.shape()[0] != r.out_channels)) {
      throw ShapeError(fmt::format("conv2d: bias must be [{}], got {}", r.out_channels, b.shape()));
    }
    r.h = {x.shape()[2], w.shape()[2], opt.stride[0], opt.padding[0], opt.padding[0], opt.dilation[0], 0};
    r.w = {x.shape()[3], w.shape()[3], opt.stride[1], opt.padding[1], opt.padding[1], opt.dilation[1], 0};
    if (opt.padding_mode != ConvPadding::explicit_sizes) {
      for (detail::Axis* a : {&r.h, &r.w}) {
        a->pad_begin = a->pad_end = 0;
        detail::check_window_params(name, a == &r.h ? "height" : "width", *a);
        if (opt.padding_mode == ConvPadding::same) {
          if (a->stride != 1) {
            throw ValueError(fmt::format("conv2d: padding='same' needs stride 1, got stride {}",
                                         pair(opt.stride)));
          }
          const std::int64_t total = a->dilation * (a->kernel - 1);
          a->pad_begin = total / 2;  // the odd one goes at the bottom/right, as PyTorch does
          a->pad_end = total - a->pad_begin;
        }
      }
    }
    detail::resolve_axis(name, "height", r.h, false);
    detail::resolve_axis(name, "width", r.w, false);
    return r;
  }

  TensorMeta infer(std::span<const Tensor> in) const {
    const ConvGeometry r = geometry(in[0], in[1], in[2]);
    return {{r.batch, r.out_channels, r.h.out, r.w.out}, in[0].dtype()};
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    const Tensor& b = in[2];
    geom = geometry(x, w, b);
    const ConvGeometry& g = geom;
    // When the weight needs a gradient and the whole unfolded input is small, it is kept
    // for the VJP (in place of x), which then needs no second im2col.
    const bool depthwise = g.depthwise();
    const std::int64_t unfolded_bytes = g.groups * g.col_rows() * g.batch * g.plane_out() *
                                        static_cast<std::int64_t>(dtype_size(x.dtype()));
    const bool direct = x.dtype() == DType::f32 && detail::direct_conv_fits(g);
    const bool direct_w = x.dtype() == DType::f32 && detail::direct_weight_grad_fits(g);  // needs x, not unfolded
    const Bands bands(g, dtype_size(x.dtype()));
    const bool banded = !depthwise && bands.count > 1;
    const bool keep = ctx.needs_input_grad(1) && !g.pointwise() && !depthwise && !direct_w && !banded &&
                      unfolded_bytes <= kKeepUnfoldedBytes;
    Tensor kept = keep ? detail::make_tensor({{g.groups, g.col_rows(), g.batch * g.plane_out()}, x.dtype()})
                       : Tensor();
    ctx.save(ctx.needs_input_grad(1) ? x : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? w : Tensor());
    ctx.save(kept);
    Tensor out = detail::make_tensor({{g.batch, g.out_channels, g.h.out, g.w.out}, x.dtype()});
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      const T* pw = w.data<T>();
      const T* pb = b.defined() ? b.data<T>() : nullptr;
      T* py = out.data<T>();
      const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
      const std::int64_t x_image = g.channels * g.plane_in(), y_image = g.out_channels * plane;
      const bool parallel = worth_parallel(g);
      const Chunks chunks(g, parallel, sizeof(T), !depthwise && !direct);
      const std::vector<T> wt = direct ? direct_weight(pw, g) : std::vector<T>();
      for_batch(chunks.count, parallel, [&](std::int64_t c) {
        const std::int64_t n0 = chunks.first(c), cb = chunks.images(c, g.batch), ld = cb * plane;
        if (depthwise) {
          // (adds the bias itself)
          for (std::int64_t n = n0; n < n0 + cb; ++n) detail::depthwise_forward(px + n * x_image, pw, pb, g, py + n * y_image);
        } else if (direct) {  // (adds the bias itself)
          if constexpr (std::is_same_v<T, float>) {
            for (std::int64_t n = n0; n < n0 + cb; ++n) detail::direct_conv_forward(px + n * x_image, wt.data(), pb, g, py + n * y_image);
          }
        } else if (banded) {
          T* col = workspace<T>(0, rows * bands.height * g.w.out);
          bands.each(g, n0, cb, [&](std::int64_t n, std::int64_t gi, const Band& band) {
            unfold_band(px + n * x_image + gi * g.group_in() * g.plane_in(), g, band, col);
            detail::gemm(false, false, go, band.cols, rows, T(1), pw + gi * go * rows, rows, col, band.cols, T(0),
                         py + n * y_image + gi * go * plane + band.y_offset, plane);
          });
        } else {
          // The chunk's unfolded input: in the kept tensor (all images side by side, one
          // block per group) or in this thread's workspace.
          const std::int64_t col_ld = keep ? g.batch * plane : ld;
          T* col_base = keep ? kept.data<T>() + n0 * plane : g.pointwise() ? nullptr : workspace<T>(0, rows * ld);
          T* chunk_out = cb > 1 ? workspace<T>(1, go * ld) : nullptr;
          for (std::int64_t gi = 0; gi < g.groups; ++gi) {
            const std::int64_t x_off = gi * g.group_in() * g.plane_in(), y_off = gi * go * plane;
            T* col = keep ? col_base + gi * rows * col_ld : col_base;
            for (std::int64_t j = 0; col != nullptr && j < cb; ++j) {
              detail::im2col(px + (n0 + j) * x_image + x_off, g, g.group_in(), col + j * plane, col_ld);
            }
            const T* unfolded = col != nullptr ? col : px + n0 * x_image + x_off;
            T* dst = chunk_out != nullptr ? chunk_out : py + n0 * y_image + y_off;
            detail::gemm(false, false, go, ld, rows, T(1), pw + gi * go * rows, rows, unfolded,
                         col != nullptr ? col_ld : ld, T(0), dst, ld);
            for (std::int64_t j = 0; chunk_out != nullptr && j < cb; ++j) {  // [go, cb, plane] -> NCHW
              for (std::int64_t o = 0; o < go; ++o) {
                std::copy_n(chunk_out + o * ld + j * plane, plane, py + (n0 + j) * y_image + y_off + o * plane);
              }
            }
          }
        }
        for (std::int64_t n = n0; pb != nullptr && !depthwise && !direct && n < n0 + cb; ++n) {
          for (std::int64_t o = 0; o < g.out_channels; ++o) {
            T* dst = py + n * y_image + o * plane;
            for (std::int64_t i = 0; i < plane; ++i) dst[i] += pb[o];
          }
        }
      });
    });
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);

  /// The raw gradients: grad_x from grad_y and w (when need_x), grad_W from grad_y and x or
  /// its kept unfolded form (when need_w).
  std::pair<Tensor, Tensor> grads(const Tensor& x, const Tensor& w, const Tensor& kept,
                                  const Tensor& grad_out, const TensorMeta& mx,
                                  const TensorMeta& mw, bool need_x, bool need_w) const {
    const ConvGeometry& g = geom;
    const bool depthwise = g.depthwise();
    // col2im adds into grad_x; the depthwise kernel writes every element.
    Tensor grad_x = !need_x ? Tensor() : depthwise ? detail::make_tensor(mx.shape, mx.dtype) : zeros(mx.shape, mx.dtype);
    Tensor grad_w = need_w ? zeros(mw.shape, mw.dtype) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* gy = grad_out.data<T>();
      const std::int64_t go = g.group_out(), rows = g.col_rows(), plane = g.plane_out();
      const std::int64_t x_image = g.channels * g.plane_in(), y_image = g.out_channels * plane;
      const bool parallel = worth_parallel(g);
      const bool direct_w = std::is_same_v<T, float> && detail::direct_weight_grad_fits(g);
      const Chunks chunks(g, parallel, sizeof(T), !depthwise && (!direct_w || need_x));
      // Each thread sums its chunks' weight gradients in its own slot; the slots are added
      // in a fixed order afterwards, so the result does not depend on scheduling. With 16 or
      // more output channels per group and more unfolded rows, the slots hold grad_W_gᵀ
      // [rows, go] = unfolded · grad_yᵀ: the GEMM is faster with the long side as its rows
      // (measured: 16×150×1700 45 → 76 GFLOP/s, 64×576×3136 64 → 94; below 16 columns slower).
      const bool transposed = direct_w || (!depthwise && go >= 16 && go < rows);
      // grad_W_g (or its transpose) += grad_y · unfoldedᵀ over `cols` output elements
      auto add_weight_grad = [&](const T* unfolded, std::int64_t unfolded_ld, const T* gyc, std::int64_t gy_ld,
                                 std::int64_t cols, T* gw_g) {
        if (transposed) {
          detail::gemm(false, true, rows, go, cols, T(1), unfolded, unfolded_ld, gyc, gy_ld, T(1), gw_g, go);
        } else {
          detail::gemm(false, true, go, rows, cols, T(1), gyc, gy_ld, unfolded, unfolded_ld, T(1), gw_g, rows);
        }
      };
      const Bands bands(g, sizeof(T));
      const std::int64_t slots = parallel ? omp_get_max_threads() : 1;
      const std::int64_t wsize = mw.shape.numel();
      std::vector<T> partial(need_w ? static_cast<std::size_t>(slots * wsize) : 0, T(0));
      const T* px = need_w && !kept.defined() ? x.data<T>() : nullptr;
      const T* pkept = kept.defined() ? kept.data<T>() : nullptr;
      const T* pw = need_x ? w.data<T>() : nullptr;
      T* gx = need_x ? grad_x.data<T>() : nullptr;
      if (need_x || need_w) {
        for_batch(chunks.count, parallel, [&](std::int64_t c) {
          const std::int64_t n0 = chunks.first(c), cb = chunks.images(c, g.batch), ld = cb * plane;
          T* gw = need_w ? partial.data() + (parallel ? omp_get_thread_num() : 0) * wsize : nullptr;
          if (depthwise) {
            for (std::int64_t n = n0; n < n0 + cb; ++n) {
              detail::depthwise_backward(px != nullptr ? px + n * x_image : nullptr, pw, gy + n * y_image, g,
                                         gx != nullptr ? gx + n * x_image : nullptr, gw);
            }
            return;
          }
          if constexpr (std::is_same_v<T, float>) {  // the direct kernel's weight gradient, per image
            for (std::int64_t n = n0; direct_w && need_w && n < n0 + cb; ++n) {
              detail::direct_conv_weight_grad(px + n * x_image, gy + n * y_image, g, gw);
            }
          }
          if (direct_w && !need_x) return;
          if (bands.count > 1) {
            T* col = workspace<T>(0, rows * bands.height * g.w.out);
            bands.each(g, n0, cb, [&](std::int64_t n, std::int64_t gi, const Band& band) {
              const std::int64_t x_off = n * x_image + gi * g.group_in() * g.plane_in();
              const T* gyb = gy + n * y_image + gi * go * plane + band.y_offset;
              if (need_x) {
                detail::gemm(true, false, rows, band.cols, go, T(1), pw + gi * go * rows, rows, gyb, plane, T(0), col,
                             band.cols);
                fold_band(col, g, band, gx + x_off);
              }
              if (need_w && !direct_w) {
                unfold_band(px + x_off, g, band, col);
                add_weight_grad(col, band.cols, gyb, plane, band.cols, gw + gi * go * rows);
              }
            });
            return;
          }
          T* col = g.pointwise() ? nullptr : workspace<T>(0, rows * ld);
          T* chunk_gy = cb > 1 ? workspace<T>(1, go * ld) : nullptr;
          for (std::int64_t gi = 0; gi < g.groups; ++gi) {
            const std::int64_t x_off = gi * g.group_in() * g.plane_in(), y_off = gi * go * plane;
            for (std::int64_t j = 0; chunk_gy != nullptr && j < cb; ++j) {  // NCHW -> [go, cb, plane]
              for (std::int64_t o = 0; o < go; ++o) {
                std::copy_n(gy + (n0 + j) * y_image + y_off + o * plane, plane, chunk_gy + o * ld + j * plane);
              }
            }
            const T* gyc = chunk_gy != nullptr ? chunk_gy : gy + n0 * y_image + y_off;
            if (need_x) {  // grad of the unfolded input = W_gᵀ · grad_y, folded back
              const T* wg = pw + gi * go * rows;
              if (col == nullptr) {
                detail::gemm(true, false, rows, ld, go, T(1), wg, rows, gyc, ld, T(0), gx + n0 * x_image + x_off, ld);
              } else {
                detail::gemm(true, false, rows, ld, go, T(1), wg, rows, gyc, ld, T(0), col, ld);
                for (std::int64_t j = 0; j < cb; ++j) {
                  detail::col2im(col + j * plane, ld, g, g.group_in(), gx + (n0 + j) * x_image + x_off);
                }
              }
            }
            if (need_w && !direct_w) {  // grad_W_g += grad_y · unfoldedᵀ
              const std::int64_t kept_ld = g.batch * plane;
              for (std::int64_t j = 0; pkept == nullptr && col != nullptr && j < cb; ++j) {
                detail::im2col(px + (n0 + j) * x_image + x_off, g, g.group_in(), col + j * plane, ld);
              }
              const T* unfolded = pkept != nullptr  ? pkept + gi * rows * kept_ld + n0 * plane
                                  : col != nullptr ? col
                                                   : px + n0 * x_image + x_off;
              add_weight_grad(unfolded, pkept != nullptr ? kept_ld : ld, gyc, ld, ld, gw + gi * go * rows);
            }
          }
        });
      }
      if (need_w) {
        T* dst = grad_w.data<T>();
        for (std::int64_t s = 0; s < slots; ++s) {
          const T* slot = partial.data() + s * wsize;
          if (!transposed) {
            for (std::int64_t i = 0; i < wsize; ++i) dst[i] += slot[i];
            continue;
          }
          for (std::int64_t gi = 0; gi < g.groups; ++gi) {  // [rows, go] -> [go, rows]
            const T* src = slot + gi * go * rows;
            T* out = dst + gi * go * rows;
            for (std::int64_t r = 0; r < rows; ++r) {
              for (std::int64_t o = 0; o < go; ++o) out[o * rows + r] += src[r * go + o];
            }
          }
        }
      }
    });
    return {grad_x, grad_w};
  }

  /// grad_b [O] = grad_y summed over N, OH, OW.
  Tensor bias_grad(const Tensor& grad_out, const TensorMeta& mb) const {
    Tensor grad_b = zeros(mb.shape, grad_out.dtype());
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t y_image = geom.out_channels * geom.plane_out();
      for (std::int64_t n = 0; n < geom.batch; ++n) {
        detail::bias_grad(grad_out.data<T>() + n * y_image, geom.out_channels, geom.plane_out(), grad_b.data<T>());
      }
    });
    return grad_b;
  }

  static std::vector<Sample> samples();
};

/// What conv2d_input_grad and conv2d_weight_grad share: the conv2d (options and forward
/// geometry) whose gradient they are, and the shapes of its tensors.
struct ConvGrad {
  Conv2d conv;
  TensorMeta x, w;
  TensorMeta y() const {
    return {{conv.geom.batch, conv.geom.out_channels, conv.geom.h.out, conv.geom.w.out}, x.dtype};
  }
  std::string attributes() const { return conv.attributes(); }
};

/// conv2d_input_grad(grad_y, W) -> grad_x. VJP: grad_y's is conv2d(c, W); W's is
/// conv2d_weight_grad(c, grad_y).
struct Conv2dInputGrad {
  static constexpr std::string_view name = "conv2d_input_grad";
  ConvGrad of;
  std::string attributes() const { return of.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "grad_out", in[0], of.y());
    detail::check_meta(name, "weight", in[1], of.w);
    return of.x;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return of.conv.grads({}, in[1], {}, in[0], of.x, of.w, true, false).first;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// conv2d_weight_grad(x, grad_y) -> grad_W. VJP: x's is conv2d_input_grad(grad_y, C);
/// grad_y's is conv2d(x, C).
struct Conv2dWeightGrad {
  static constexpr std::string_view name = "conv2d_weight_grad";
  ConvGrad of;
  std::string attributes() const { return of.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "input", in[0], of.x);
    detail::check_meta(name, "grad_out", in[1], of.y());
    return of.w;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return of.conv.grads(in[0], {}, {}, in[1], of.x, of.w, false, true).second;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {ctx.needs_input_grad(0) ? apply(Conv2dInputGrad{of}, {ctx.saved(1), grad_out}) : Tensor(),
            ctx.needs_input_grad(1) ? conv2d(ctx.saved(0), grad_out, Tensor(), of.conv.opt) : Tensor()};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> Conv2dInputGrad::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {ctx.needs_input_grad(0) ? conv2d(grad_out, ctx.saved(1), Tensor(), of.conv.opt) : Tensor(),
          ctx.needs_input_grad(1) ? apply(Conv2dWeightGrad{of}, {grad_out, ctx.saved(0)}) : Tensor()};
}

std::vector<Tensor> Conv2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  const TensorMeta& mx = ctx.input(0);
  const TensorMeta& mw = ctx.input(1);
  const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1);
  Tensor grad_x, grad_w;
  if (is_grad_enabled()) {  // recorded (create_graph): the gradients as ops of their own
    const ConvGrad of{*this, mx, mw};
    if (need_x) grad_x = apply(Conv2dInputGrad{of}, {grad_out, ctx.saved(1)});
    if (need_w) grad_w = apply(Conv2dWeightGrad{of}, {ctx.saved(0), grad_out});
  } else {
    std::tie(grad_x, grad_w) = grads(ctx.saved(0), ctx.saved(1), ctx.saved(2), grad_out, mx, mw, need_x, need_w);
  }
  Tensor grad_b;
  if (ctx.needs_input_grad(2)) {
    grad_b = is_grad_enabled() ? sum(grad_out, {0, 2, 3}) : bias_grad(grad_out, ctx.input(2));
  }
  return {grad_x, grad_w, grad_b};
}

struct ConvCase {
  const char* label;
  Shape x, w;
  bool bias;
  Conv2dOptions opt;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 pad 1", {2, 3, 5, 6}, {4, 3, 3, 3}, true, {}},
      {"2x3 kernel, stride (2, 1), pad (1, 0), dilation (1, 2)", {2, 2, 7, 8}, {3, 2, 2, 3}, true,
       {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}},
      {"groups 2, no bias", {1, 4, 5, 5}, {6, 2, 3, 3}, false, {.padding = {1, 1}, .groups = 2}},
      {"groups 3, stride 2 with remainders", {2, 3, 7, 6}, {3, 1, 2, 2}, true, {.stride = {3, 2}, .groups = 3}},
      {"depthwise x2 multiplier", {2, 3, 6, 5}, {6, 1, 3, 3}, true, {.padding = {1, 2}, .groups = 3}},
      {"1x1 pointwise", {2, 4, 3, 5}, {3, 4, 1, 1}, true, {}},
      {"input exactly the receptive field", {1, 2, 3, 4}, {2, 2, 3, 4}, true, {}},
      {"W of 1", {2, 2, 5, 1}, {3, 2, 3, 1}, true, {.padding = {2, 0}}},
      {"padding same, even kernel", {1, 2, 5, 6}, {2, 2, 2, 4}, true, {.dilation = {2, 1}, .padding_mode = ConvPadding::same}},
      {"padding valid", {1, 2, 5, 6}, {2, 2, 3, 2}, false, {.padding_mode = ConvPadding::valid}},
  };
}

std::vector<Sample> Conv2d::samples() {
  using detail::sample_tensor;
  std::vector<Sample> out;
  std::uint64_t seed = 200;
  for (const ConvCase& c : conv_cases()) {
    std::vector<Tensor> inputs{sample_tensor(c.x, -1, 1, seed++), sample_tensor(c.w, -1, 1, seed++)};
    if (c.bias) inputs.push_back(sample_tensor({c.w[0]}, -1, 1, seed++));
    const Conv2dOptions opt = c.opt;
    out.push_back({c.label, inputs, [opt](const std::vector<Tensor>& in) {
                     return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), opt);
                   }});
  }
  return out;
}

/// The gradient ops' samples, one per conv2d case: Op applied to random values of the
/// shapes it reads (`first`, `second`: x, w or y, picked from the case's ConvGrad).
template <class Op, class Pick>
std::vector<Sample> grad_samples(Pick pick, std::uint64_t seed) {
  std::vector<Sample> out;
  for (const ConvCase& c : conv_cases()) {
    ConvGrad of{Conv2d{c.opt}, {c.x, DType::f64}, {c.w, DType::f64}};
    of.conv.geom = of.conv.geometry(detail::make_tensor(of.x), detail::make_tensor(of.w), Tensor());
    const auto [first, second] = pick(of);
    out.push_back({c.label,
                   {detail::sample_tensor(first.shape, -1, 1, seed), detail::sample_tensor(second.shape, -1, 1, seed + 1)},
                   [of](const std::vector<Tensor>& in) { return apply(Op{of}, {in[0], in[1]}); }});
    seed += 2;
  }
  return out;
}

std::vector<Sample> Conv2dInputGrad::samples() {
  return grad_samples<Conv2dInputGrad>([](const ConvGrad& grad) { return std::pair{grad.y(), grad.w}; }, 250);
}

std::vector<Sample> Conv2dWeightGrad::samples() {
  return grad_samples<Conv2dWeightGrad>([](const ConvGrad& grad) { return std::pair{grad.x, grad.y()}; }, 280);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options) {
  if (x.defined() && x.dim() == 3) {  // unbatched [C, H, W]
    Shape s = x.shape();
    const Tensor y = apply(Conv2d{options}, {reshape(x, {1, s[0], s[1], s[2]}), weight, bias});
    return reshape(y, {y.shape()[1], y.shape()[2], y.shape()[3]});
  }
  return apply(Conv2d{options}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(conv2d, Conv2d, Conv2dInputGrad, Conv2dWeightGrad)

}  // namespace tapegrad
