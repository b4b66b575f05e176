// avg_pool2d: y[p, q] = Σ window / divisor, with PyTorch's divisor rules:
//   - the window is first clipped to the padded input [-pad, in + pad); that size is the
//     divisor when count_include_pad (so a ceil_mode window hanging past the padding does
//     not count the part outside it);
//   - the window is then clipped to the input; that size is the divisor otherwise;
//   - divisor_override, when set, replaces both.
// VJP: each window spreads grad_y[p, q] / divisor over the input elements it summed. That
// map (Aᵀ, A being the pooling) is an op of its own, avg_pool2d_backward; it is linear in
// grad_y, so its own VJP is A again: avg_pool2d. Every order stays these two ops.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/window.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::PoolGeometry;

/// The input range a window sums over, and what it divides by.
struct Window {
  std::int64_t h0, h1, w0, w1;
  double divisor;
};

struct AvgPool2d {
  static constexpr std::string_view name = "avg_pool2d";
  AvgPool2dOptions opt;
  PoolGeometry geom{};  // set by forward, read by the VJP

  std::array<std::int64_t, 2> stride() const { return detail::stride_or_kernel(opt.stride, opt.kernel_size); }
  std::string attributes() const {
    const auto s = stride();
    return fmt::format("kernel_size=[{}, {}], stride=[{}, {}], padding=[{}, {}], ceil_mode={}, "
                       "count_include_pad={}{}", opt.kernel_size[0], opt.kernel_size[1], s[0], s[1],
                       opt.padding[0], opt.padding[1], opt.ceil_mode, opt.count_include_pad,
                       opt.divisor_override ? fmt::format(", divisor_override={}", *opt.divisor_override) : "");
  }
  PoolGeometry geometry(const Tensor& x) const {
    detail::check_floating(name, x);
    if (opt.divisor_override && *opt.divisor_override == 0) {
      throw ValueError("avg_pool2d: divisor_override must be non-zero");
    }
    return detail::pool_geometry(name, x.shape(), opt.kernel_size, stride(), opt.padding, {1, 1},
                                 opt.ceil_mode);
  }
  Window window(std::int64_t oh, std::int64_t ow) const {
    const PoolGeometry& g = geom;
    std::int64_t h0 = g.h.start(oh), w0 = g.w.start(ow);
    std::int64_t h1 = std::min(h0 + g.h.kernel, g.h.in + g.h.pad_end);
    std::int64_t w1 = std::min(w0 + g.w.kernel, g.w.in + g.w.pad_end);
    const auto padded = static_cast<double>((h1 - h0) * (w1 - w0));
    h0 = std::max<std::int64_t>(h0, 0);
    w0 = std::max<std::int64_t>(w0, 0);
    h1 = std::min(h1, g.h.in);
    w1 = std::min(w1, g.w.in);
    const double divisor = opt.divisor_override ? static_cast<double>(*opt.divisor_override)
                           : opt.count_include_pad ? padded
                                                   : static_cast<double>((h1 - h0) * (w1 - w0));
    return {h0, h1, w0, w1, divisor};
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    return {detail::pool_output_shape(in[0].shape(), geometry(in[0])), in[0].dtype()};
  }

  /// Calls f(plane, out_offset, window) for every output element.
  template <class F>
  void for_each_window(F f) const {
    const PoolGeometry& g = geom;
    const std::int64_t plane_out = g.h.out * g.w.out;
#pragma omp parallel for schedule(static) if (g.planes * plane_out > (1 << 16))
    for (std::int64_t p = 0; p < g.planes; ++p) {
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        for (std::int64_t ow = 0; ow < g.w.out; ++ow) f(p, p * plane_out + oh * g.w.out + ow, window(oh, ow));
      }
    }
  }

  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    geom = geometry(x);
    const PoolGeometry& g = geom;
    Tensor out = detail::make_tensor(detail::pool_output_shape(x.shape(), g), x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      for_each_window([&](std::int64_t p, std::int64_t o, const Window& win) {
        const T* src = px + p * g.h.in * g.w.in;
        T acc = 0;
        for (std::int64_t ih = win.h0; ih < win.h1; ++ih) {
          for (std::int64_t iw = win.w0; iw < win.w1; ++iw) acc += src[ih * g.w.in + iw];
        }
        py[o] = acc / static_cast<T>(win.divisor);
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  /// Aᵀ·grad_y: each window's grad_y / divisor added over the elements it summed.
  Tensor spread(const Tensor& grad_out, const TensorMeta& mx) const {
    Tensor grad_x = zeros(mx.shape, mx.dtype);
    const PoolGeometry& g = geom;
    detail::dispatch_floating(mx.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* gy = grad_out.data<T>();
      T* gx = grad_x.data<T>();
      for_each_window([&](std::int64_t p, std::int64_t o, const Window& win) {
        T* dst = gx + p * g.h.in * g.w.in;
        const T share = gy[o] / static_cast<T>(win.divisor);
        for (std::int64_t ih = win.h0; ih < win.h1; ++ih) {
          for (std::int64_t iw = win.w0; iw < win.w1; ++iw) dst[ih * g.w.in + iw] += share;
        }
      });
    });
    return grad_x;
  }
  static std::vector<Sample> samples();
};

/// avg_pool2d_backward: grad_x [x's shape] = Aᵀ·grad_y for the pooling `pool` of an input
/// of meta `x`. VJP: grad_grad_y = A·grad_grad_x = avg_pool2d(grad_grad_x).
struct AvgPool2dBackward {
  static constexpr std::string_view name = "avg_pool2d_backward";
  AvgPool2d pool;  // options and the forward's geometry
  TensorMeta x;
  std::string attributes() const { return pool.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "grad_out", in[0], {detail::pool_output_shape(x.shape, pool.geom), x.dtype});
    return x;
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) { return pool.spread(in[0], x); }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {avg_pool2d(grad_out, pool.opt)};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> AvgPool2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(AvgPool2dBackward{*this, ctx.input(0)}, {grad_out})};
}

struct PoolCase {
  const char* label;
  Shape x;
  AvgPool2dOptions opt;
};

std::vector<PoolCase> pool_cases() {
  return {
      {"2x2 stride 2", {2, 3, 6, 8}, {.kernel_size = {2, 2}}},
      {"3x3 stride 2 pad 1 count_include_pad", {1, 2, 7, 9}, {.kernel_size = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
      {"3x3 stride 2 pad 1 exclude pad, ceil_mode", {1, 2, 6, 7},
       {.kernel_size = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true, .count_include_pad = false}},
      {"3x2 stride (1, 2) divisor_override 5", {2, 1, 5, 7},
       {.kernel_size = {3, 2}, .stride = {1, 2}, .divisor_override = 5}},
      {"ceil_mode with padding counted", {1, 1, 5, 5},
       {.kernel_size = {2, 2}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}},
  };
}

std::vector<Sample> AvgPool2d::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = 400;
  for (const PoolCase& c : pool_cases()) {
    const AvgPool2dOptions opt = c.opt;
    out.push_back({c.label, {detail::sample_tensor(c.x, -1, 1, seed++)},
                   [opt](const std::vector<Tensor>& in) { return avg_pool2d(in[0], opt); }});
  }
  return out;
}

std::vector<Sample> AvgPool2dBackward::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = 450;
  for (const PoolCase& c : pool_cases()) {
    AvgPool2d pool{c.opt};
    const TensorMeta x{c.x, DType::f64};
    pool.geom = pool.geometry(detail::make_tensor(x));
    const Shape y = detail::pool_output_shape(c.x, pool.geom);
    out.push_back({c.label, {detail::sample_tensor(y, -1, 1, seed++)},
                   [pool, x](const std::vector<Tensor>& in) {
                     return apply(AvgPool2dBackward{pool, x}, {in[0]});
                   }});
  }
  return out;
}

}  // namespace

Tensor avg_pool2d(const Tensor& x, const AvgPool2dOptions& options) {
  return apply(AvgPool2d{options}, {x});
}

TAPEGRAD_BUILTIN_OPS(avg_pool2d, AvgPool2d, AvgPool2dBackward)

}  // namespace tapegrad
