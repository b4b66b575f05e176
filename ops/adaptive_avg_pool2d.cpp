// adaptive_avg_pool2d: x [N, C, H, W] or [C, H, W] -> [.., OH, OW], y[p, q] = the mean of
// x over rows [floor(p·H/OH), ceil((p+1)·H/OH)) and columns [floor(q·W/OW), ceil((q+1)·W/OW))
// (PyTorch's windows: they overlap when OH does not divide H, and repeat rows when OH > H).
// VJP: each window spreads grad_y[p, q] / its size over the elements it averaged. That map
// (Aᵀ, A being the pooling) is an op of its own, adaptive_avg_pool2d_backward; it is linear
// in grad_y, so its own VJP is A again: adaptive_avg_pool2d. Every order stays these two ops.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/window.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AdaptiveGeometry;

struct AdaptiveAvgPool2d {
  static constexpr std::string_view name = "adaptive_avg_pool2d";
  Size2 output_size;

  std::string attributes() const { return fmt::format("output_size=[{}, {}]", output_size[0], output_size[1]); }
  AdaptiveGeometry geometry(const Tensor& x) const {
    detail::check_floating(name, x);
    return detail::adaptive_geometry(name, x.shape(), output_size);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    return {detail::adaptive_output_shape(in[0].shape(), geometry(in[0])), in[0].dtype()};
  }

  /// Calls f(in_plane_offset, out_offset, h0, h1, w0, w1) for every output element, planes
  /// in parallel (each plane's outputs and input elements belong to one thread).
  template <class F>
  static void for_each_window(const AdaptiveGeometry& g, F f) {
    const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
#pragma omp parallel for schedule(static) if (g.planes * (plane_in + plane_out) > (1 << 16))
    for (std::int64_t p = 0; p < g.planes; ++p) {
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
          f(p * plane_in, p * plane_out + oh * g.w.out + ow, g.h.begin(oh), g.h.end(oh), g.w.begin(ow), g.w.end(ow));
        }
      }
    }
  }

  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const AdaptiveGeometry g = geometry(x);
    Tensor out = detail::make_tensor(detail::adaptive_output_shape(x.shape(), g), x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      for_each_window(g, [&](std::int64_t src, std::int64_t o, std::int64_t h0, std::int64_t h1, std::int64_t w0,
                             std::int64_t w1) {
        T acc = 0;
        for (std::int64_t ih = h0; ih < h1; ++ih) {
          for (std::int64_t iw = w0; iw < w1; ++iw) acc += px[src + ih * g.w.in + iw];
        }
        py[o] = acc / static_cast<T>((h1 - h0) * (w1 - w0));
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// adaptive_avg_pool2d_backward: grad_x [x's shape] = Aᵀ·grad_y for the adaptive pooling to
/// output_size of an input of meta `x`. VJP: grad_grad_y = A·grad_grad_x.
struct AdaptiveAvgPool2dBackward {
  static constexpr std::string_view name = "adaptive_avg_pool2d_backward";
  Size2 output_size;
  TensorMeta x;

  std::string attributes() const {
    return fmt::format("output_size=[{}, {}], input={}", output_size[0], output_size[1], x.shape);
  }
  AdaptiveGeometry geometry() const { return detail::adaptive_geometry(name, x.shape, output_size); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "grad_out", in[0], {detail::adaptive_output_shape(x.shape, geometry()), x.dtype});
    return x;
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const AdaptiveGeometry g = geometry();
    Tensor grad_x = zeros(x.shape, x.dtype);
    detail::dispatch_floating(x.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* gy = in[0].data<T>();
      T* gx = grad_x.data<T>();
      AdaptiveAvgPool2d::for_each_window(g, [&](std::int64_t dst, std::int64_t o, std::int64_t h0, std::int64_t h1,
                                                std::int64_t w0, std::int64_t w1) {
        const T share = gy[o] / static_cast<T>((h1 - h0) * (w1 - w0));
        for (std::int64_t ih = h0; ih < h1; ++ih) {
          for (std::int64_t iw = w0; iw < w1; ++iw) gx[dst + ih * g.w.in + iw] += share;
        }
      });
    });
    return grad_x;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {adaptive_avg_pool2d(grad_out, output_size)};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> AdaptiveAvgPool2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(AdaptiveAvgPool2dBackward{output_size, ctx.input(0)}, {grad_out})};
}

struct PoolCase {
  const char* label;
  Shape x;
  Size2 output_size;
};

std::vector<PoolCase> pool_cases() {
  return {
      {"6x8 to 3x4 (windows divide)", {2, 3, 6, 8}, {3, 4}},
      {"7x5 to 3x3 (uneven, overlapping)", {1, 2, 7, 5}, {3, 3}},
      {"3x4 to 5x6 (output larger)", {1, 2, 3, 4}, {5, 6}},
      {"5x4 to 1x1", {2, 2, 5, 4}, 1},
      {"unbatched [C, H, W] 5x7 to 2x3", {3, 5, 7}, {2, 3}},
  };
}

std::vector<Sample> AdaptiveAvgPool2d::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = 470;
  for (const PoolCase& c : pool_cases()) {
    const Size2 size = c.output_size;
    out.push_back({c.label, {detail::sample_tensor(c.x, -1, 1, seed++)},
                   [size](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], size); }});
  }
  return out;
}

std::vector<Sample> AdaptiveAvgPool2dBackward::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = 490;
  for (const PoolCase& c : pool_cases()) {
    const AdaptiveAvgPool2dBackward op{c.output_size, {c.x, DType::f64}};
    const Shape y = detail::adaptive_output_shape(c.x, op.geometry());
    out.push_back({c.label, {detail::sample_tensor(y, -1, 1, seed++)},
                   [op](const std::vector<Tensor>& in) { return apply(AdaptiveAvgPool2dBackward{op}, {in[0]}); }});
  }
  return out;
}

}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size) {
  return apply(AdaptiveAvgPool2d{output_size}, {x});
}

TAPEGRAD_BUILTIN_OPS(adaptive_avg_pool2d, AdaptiveAvgPool2d, AdaptiveAvgPool2dBackward)

}  // namespace tapegrad
