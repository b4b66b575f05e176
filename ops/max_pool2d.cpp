// max_pool2d: y[p, q] = max over the window's elements inside the input (padding is never
// selected). The forward saves the winner's flat index h*W + w in its (n, c) plane:
//   - ties go to the first maximum in row-major window order (a later equal value does
//     not replace it); NaN wins, and a later NaN replaces an earlier one (PyTorch's
//     `val > max || isnan(val)`);
// VJP: grad_x[winner(p, q)] += grad_y[p, q]; every other element gets 0 (a small change of
// a non-maximum does not move the output). An element that wins several overlapping
// windows receives the sum.
#include <omp.h>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/pool.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::PoolGeometry;

std::array<std::int64_t, 2> stride_or_kernel(const MaxPool2dOptions& o) {
  return detail::stride_or_kernel(o.stride, o.kernel_size);
}

struct MaxPool2d {
  static constexpr std::string_view name = "max_pool2d";
  static constexpr std::string_view kinks = "ties within a window";
  MaxPool2dOptions opt;

  std::string attributes() const {
    const auto s = stride_or_kernel(opt);
    return fmt::format("kernel_size=[{}, {}], stride=[{}, {}], padding=[{}, {}], dilation=[{}, {}], "
                       "ceil_mode={}", opt.kernel_size[0], opt.kernel_size[1], s[0], s[1],
                       opt.padding[0], opt.padding[1], opt.dilation[0], opt.dilation[1], opt.ceil_mode);
  }
  PoolGeometry geometry(const Shape& x) const {
    return detail::pool_geometry(name, x, opt.kernel_size, stride_or_kernel(opt), opt.padding,
                                 opt.dilation, opt.ceil_mode);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    return {detail::pool_output_shape(in[0].shape(), geometry(in[0].shape())), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const PoolGeometry g = geometry(x.shape());
    const Shape out_shape = detail::pool_output_shape(x.shape(), g);
    Tensor out = detail::make_tensor(out_shape, x.dtype());
    Tensor indices = detail::make_tensor(out_shape, DType::i64);
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      std::int64_t* pi = indices.data<std::int64_t>();
      const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
      // Each thread takes one run of planes (a kernel call per run, not per plane).
#pragma omp parallel if (g.planes * plane_in > (1 << 16))
      {
        const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
        const std::int64_t p0 = g.planes * t / threads, p1 = g.planes * (t + 1) / threads;
        detail::max_pool_forward(px + p0 * plane_in, g, py + p0 * plane_out, pi + p0 * plane_out, p1 - p0);
      }
    });
    ctx.save(indices);
    ctx.add_extra_output(indices);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& mx = ctx.input(0);
    const Tensor& indices = ctx.saved(0);
    const PoolGeometry g = geometry(mx.shape);
    const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
    Tensor grad_x = detail::make_tensor(mx.shape, mx.dtype);
    detail::dispatch_floating(mx.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* pg = grad_out.data<T>();
      const std::int64_t* pi = indices.data<std::int64_t>();
      T* gx = grad_x.data<T>();
#pragma omp parallel for schedule(static) if (g.planes * plane_in > (1 << 16))
      for (std::int64_t p = 0; p < g.planes; ++p) {
        detail::max_pool_backward(pg + p * plane_out, pi + p * plane_out, g, gx + p * plane_in);
      }
    });
    return {grad_x};
  }
  // For the gradient checker: the winners, which decide where each window's gradient goes.
  Tensor branches(std::span<const Tensor> in, const Tensor&) const {
    OpContext ctx(nullptr);
    MaxPool2d{opt}.forward(ctx, in);
    return ctx.take_extras()[0];
  }
  static std::vector<Sample> samples();
};

std::vector<Sample> MaxPool2d::samples() {
  // A permutation of distinct values keeps every window away from ties (a kink of max).
  auto distinct = [](const Shape& s, std::uint64_t seed) {
    Tensor t = detail::sample_tensor(s, 0, 1, seed, false);
    const auto n = t.numel();
    std::vector<double> v(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<double>((i * 37) % n) / static_cast<double>(n) - 0.5;
    return from_vector(v, s, DType::f64).set_requires_grad(true);
  };
  struct Case {
    const char* label;
    Shape x;
    MaxPool2dOptions opt;
  };
  const Case cases[] = {
      {"2x2 stride 2", {2, 3, 6, 8}, {.kernel_size = {2, 2}}},
      {"3x3 stride 2 pad 1 (overlapping)", {1, 2, 7, 9}, {.kernel_size = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
      {"3x2 stride (1, 2) dilation (2, 1)", {2, 1, 8, 7}, {.kernel_size = {3, 2}, .stride = {1, 2}, .dilation = {2, 1}}},
      {"ceil_mode 3x3 stride 2 on 6x7", {1, 2, 6, 7}, {.kernel_size = {3, 3}, .stride = {2, 2}, .ceil_mode = true}},
      {"unbatched [C, H, W]", {3, 5, 4}, {.kernel_size = {2, 2}, .stride = {1, 1}}},
  };
  std::vector<Sample> out;
  std::uint64_t seed = 300;
  for (const Case& c : cases) {
    const MaxPool2dOptions opt = c.opt;
    out.push_back({c.label, {distinct(c.x, seed++)},
                   [opt](const std::vector<Tensor>& in) { return max_pool2d(in[0], opt); }});
  }
  return out;
}

}  // namespace

MaxPoolResult max_pool2d_with_indices(const Tensor& x, const MaxPool2dOptions& options) {
  auto outs = apply_with_extras(MaxPool2d{options}, {x});
  return {outs[0], outs[1]};
}

Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& options) {
  return apply(MaxPool2d{options}, {x});
}

TAPEGRAD_BUILTIN_OPS(max_pool2d, MaxPool2d)

}  // namespace tapegrad
