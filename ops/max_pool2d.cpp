// max_pool2d: y[p, q] = max over the window's elements inside the input (padding is never
// selected). The forward saves the winner's flat index h*W + w in its (n, c) plane:
//   - ties go to the first maximum in row-major window order (a later equal value does
//     not replace it); NaN wins, and a later NaN replaces an earlier one (PyTorch's
//     `val > max || isnan(val)`);
// VJP: grad_x[winner(p, q)] += grad_y[p, q]; every other element gets 0 (a small change of
// a non-maximum does not move the output). An element that wins several overlapping
// windows receives the sum. That scatter is an op of its own, max_pool2d_backward, and so
// is its adjoint, the gather y[p, q] = c[winner(p, q)] (max_pool2d_gather): each is the
// other's VJP, with the winners a constant input, so every order stays these two ops.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/detail/winners.hpp"
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
      detail::parallel_ranges(g.planes, g.planes * plane_in > (1 << 16), [&](std::int64_t p0, std::int64_t p1, int) {
        detail::max_pool_forward(px + p0 * plane_in, g, py + p0 * plane_out, pi + p0 * plane_out, p1 - p0);
      });
    });
    ctx.save(indices);
    ctx.add_extra_output(indices);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  // For the gradient checker: the winners, which decide where each window's gradient goes.
  Tensor branches(std::span<const Tensor> in, const Tensor&) const {
    OpContext ctx(nullptr);
    MaxPool2d{opt}.forward(ctx, in);
    return ctx.take_extras()[0];
  }
  static std::vector<Sample> samples();
};

/// What the scatter and the gather share: the pooling geometry, the forward input's meta,
/// and the check of the winners' tensor.
struct WinnerMap {
  PoolGeometry g;
  TensorMeta x;
  Shape y() const { return detail::pool_output_shape(x.shape, g); }
  std::string attributes() const { return fmt::format("input={}", x.shape); }
  /// The values (of `values_shape`, x's dtype) and the winners' indices (i64, y's shape).
  void check(std::string_view op, const Tensor& values, const Shape& values_shape,
             const Tensor& indices) const {
    detail::check_meta(op, "values", values, {values_shape, x.dtype});
    detail::check_meta(op, "the winners' indices", indices, {y(), DType::i64});
  }
};

struct MaxPool2dGather;

/// max_pool2d_backward: grad_x [x] = the scatter of grad_y [y] to the winners.
struct MaxPool2dScatter {
  static constexpr std::string_view name = "max_pool2d_backward";
  WinnerMap map;
  std::string attributes() const { return map.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    map.check(name, in[0], map.y(), in[1]);
    return map.x;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[1]);
    const PoolGeometry& g = map.g;
    const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
    Tensor grad_x = detail::make_tensor(map.x);
    detail::dispatch_floating(map.x.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* pg = in[0].data<T>();
      const std::int64_t* pi = in[1].data<std::int64_t>();
      T* gx = grad_x.data<T>();
#pragma omp parallel for schedule(static) if (g.planes * plane_in > (1 << 16))
      for (std::int64_t p = 0; p < g.planes; ++p) {
        detail::max_pool_backward(pg + p * plane_out, pi + p * plane_out, g, gx + p * plane_in);
      }
    });
    return grad_x;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// max_pool2d_gather: y [y] = c [x] read at the winners.
struct MaxPool2dGather {
  static constexpr std::string_view name = "max_pool2d_gather";
  WinnerMap map;
  std::string attributes() const { return map.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    map.check(name, in[0], map.x.shape, in[1]);
    return {map.y(), map.x.dtype};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[1]);
    const PoolGeometry& g = map.g;
    const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
    Tensor out = detail::make_tensor(map.y(), map.x.dtype);
    detail::dispatch_floating(map.x.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* pc = in[0].data<T>();
      const std::int64_t* pi = in[1].data<std::int64_t>();
      T* py = out.data<T>();
      for (std::int64_t p = 0; p < g.planes; ++p) {
        for (std::int64_t o = 0; o < plane_out; ++o) {
          py[p * plane_out + o] = pc[p * plane_in + pi[p * plane_out + o]];
        }
      }
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {apply(MaxPool2dScatter{map}, {grad_out, ctx.saved(0)}), Tensor()};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> MaxPool2dScatter::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(MaxPool2dGather{map}, {grad_out, ctx.saved(0)}), Tensor()};
}

std::vector<Tensor> MaxPool2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  const TensorMeta& mx = ctx.input(0);
  return {detail::scatter_to_winners(grad_out, ctx.saved(0), geometry(mx.shape), mx)};
}

struct PoolCase {
  const char* label;
  Shape x;
  MaxPool2dOptions opt;
};

std::vector<PoolCase> pool_cases() {
  return {
      {"2x2 stride 2", {2, 3, 6, 8}, {.kernel_size = {2, 2}}},
      {"3x3 stride 2 pad 1 (overlapping)", {1, 2, 7, 9}, {.kernel_size = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
      {"3x2 stride (1, 2) dilation (2, 1)", {2, 1, 8, 7}, {.kernel_size = {3, 2}, .stride = {1, 2}, .dilation = {2, 1}}},
      {"ceil_mode 3x3 stride 2 on 6x7", {1, 2, 6, 7}, {.kernel_size = {3, 3}, .stride = {2, 2}, .ceil_mode = true}},
      {"unbatched [C, H, W]", {3, 5, 4}, {.kernel_size = {2, 2}, .stride = {1, 1}}},
  };
}

std::vector<Sample> MaxPool2d::samples() {
  std::vector<Sample> out;
  for (const PoolCase& c : pool_cases()) {
    const MaxPool2dOptions opt = c.opt;
    out.push_back({c.label, {detail::sample_distinct(c.x)},
                   [opt](const std::vector<Tensor>& in) { return max_pool2d(in[0], opt); }});
  }
  return out;
}

/// The scatter's and the gather's samples: the winners of each max_pool2d sample, and
/// random values of the shape the op reads (`of_output`: the pooled shape).
template <class Op>
std::vector<Sample> winner_samples(bool of_output, std::uint64_t seed) {
  std::vector<Sample> out;
  for (const PoolCase& c : pool_cases()) {
    const Tensor x = detail::sample_distinct(c.x);
    const WinnerMap map{MaxPool2d{c.opt}.geometry(c.x), x.meta()};
    const Tensor indices = max_pool2d_with_indices(x.detach(), c.opt).indices;
    out.push_back({c.label,
                   {detail::sample_tensor(of_output ? map.y() : c.x, -1, 1, seed++), indices},
                   [map](const std::vector<Tensor>& in) { return apply(Op{map}, {in[0], in[1]}); }});
  }
  return out;
}

std::vector<Sample> MaxPool2dScatter::samples() { return winner_samples<MaxPool2dScatter>(true, 330); }
std::vector<Sample> MaxPool2dGather::samples() { return winner_samples<MaxPool2dGather>(false, 360); }

}  // namespace

Tensor detail::scatter_to_winners(const Tensor& grad_out, const Tensor& indices, const PoolGeometry& g,
                                  const TensorMeta& x) {
  return apply(MaxPool2dScatter{{g, x}}, {grad_out, indices});
}

MaxPoolResult max_pool2d_with_indices(const Tensor& x, const MaxPool2dOptions& options) {
  auto outs = apply_with_extras(MaxPool2d{options}, {x});
  return {outs[0], outs[1]};
}

Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& options) {
  return apply(MaxPool2d{options}, {x});
}

TAPEGRAD_BUILTIN_OPS(max_pool2d, MaxPool2d, MaxPool2dScatter, MaxPool2dGather)

}  // namespace tapegrad
