// adaptive_max_pool2d: x [N, C, H, W] or [C, H, W] -> [.., OH, OW], y[p, q] = the maximum
// of x over PyTorch's adaptive window (rows [floor(p·H/OH), ceil((p+1)·H/OH)), columns
// likewise; see adaptive_avg_pool2d). The forward saves the winner's flat index h*W + w in
// its (n, c) plane, with PyTorch 1.13's rule (its `val > max || isnan(val)` scan):
//   - ties go to the first maximum in row-major window order;
//   - NaN wins, and a later NaN replaces an earlier one;
//   - a window of -inf only is won by its first element.
// VJP: grad_x[winner(p, q)] += grad_y[p, q], every other element 0; an element that wins
// several overlapping windows receives the sum. That scatter is max_pool2d's own
// (max_pool2d_backward, ops/detail/winners.hpp), whose VJP is the gather at the winners, so
// every order stays explicit.
#include <cmath>
#include <limits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/detail/winners.hpp"
#include "ops/kernels/window.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AdaptiveGeometry;

struct AdaptiveMaxPool2d {
  static constexpr std::string_view name = "adaptive_max_pool2d";
  static constexpr std::string_view kinks = "ties within a window";
  Size2 output_size;

  std::string attributes() const { return fmt::format("output_size=[{}, {}]", output_size[0], output_size[1]); }
  AdaptiveGeometry geometry(const Tensor& x) const {
    detail::check_floating(name, x);
    return detail::adaptive_geometry(name, x.shape(), output_size);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    return {detail::adaptive_output_shape(in[0].shape(), geometry(in[0])), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const AdaptiveGeometry g = geometry(x);
    const Shape out_shape = detail::adaptive_output_shape(x.shape(), g);
    Tensor out = detail::make_tensor(out_shape, x.dtype());
    Tensor indices = detail::make_tensor(out_shape, DType::i64);
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      std::int64_t* pi = indices.data<std::int64_t>();
      const std::int64_t plane_in = g.h.in * g.w.in, plane_out = g.h.out * g.w.out;
#pragma omp parallel for schedule(static) if (g.planes * (plane_in + plane_out) > (1 << 16))
      for (std::int64_t p = 0; p < g.planes; ++p) {
        const T* src = px + p * plane_in;
        for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
          for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
            const std::int64_t h0 = g.h.begin(oh), h1 = g.h.end(oh), w0 = g.w.begin(ow), w1 = g.w.end(ow);
            std::int64_t at = h0 * g.w.in + w0;
            T best = -std::numeric_limits<T>::infinity();
            for (std::int64_t ih = h0; ih < h1; ++ih) {
              for (std::int64_t iw = w0; iw < w1; ++iw) {
                const T v = src[ih * g.w.in + iw];
                if (v > best || std::isnan(v)) {
                  best = v;
                  at = ih * g.w.in + iw;
                }
              }
            }
            py[p * plane_out + oh * g.w.out + ow] = best;
            pi[p * plane_out + oh * g.w.out + ow] = at;
          }
        }
      }
    });
    ctx.save(indices);
    ctx.add_extra_output(indices);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& mx = ctx.input(0);
    const AdaptiveGeometry g = detail::adaptive_geometry(name, mx.shape, output_size);
    return {detail::scatter_to_winners(grad_out, ctx.saved(0), g.as_pool(), mx)};
  }
  // For the gradient checker: the winners, which decide where each window's gradient goes.
  Tensor branches(std::span<const Tensor> in, const Tensor&) const {
    OpContext ctx(nullptr);
    AdaptiveMaxPool2d{output_size}.forward(ctx, in);
    return ctx.take_extras()[0];
  }
  static std::vector<Sample> samples();
};

std::vector<Sample> AdaptiveMaxPool2d::samples() {
  struct Case {
    const char* label;
    Shape x;
    Size2 output_size;
  };
  const Case cases[] = {
      {"6x8 to 3x4 (windows divide)", {2, 3, 6, 8}, {3, 4}},
      {"7x5 to 3x3 (uneven, overlapping)", {1, 2, 7, 5}, {3, 3}},
      {"3x4 to 5x6 (output larger)", {1, 2, 3, 4}, {5, 6}},
      {"5x4 to 1x1", {2, 2, 5, 4}, 1},
      {"unbatched [C, H, W] 5x7 to 2x3", {3, 5, 7}, {2, 3}},
  };
  std::vector<Sample> out;
  for (const Case& c : cases) {
    const Size2 size = c.output_size;
    out.push_back({c.label, {detail::sample_distinct(c.x)},
                   [size](const std::vector<Tensor>& in) { return adaptive_max_pool2d(in[0], size); }});
  }
  return out;
}

}  // namespace

MaxPoolResult adaptive_max_pool2d_with_indices(const Tensor& x, Size2 output_size) {
  auto outs = apply_with_extras(AdaptiveMaxPool2d{output_size}, {x});
  return {outs[0], outs[1]};
}

Tensor adaptive_max_pool2d(const Tensor& x, Size2 output_size) {
  return apply(AdaptiveMaxPool2d{output_size}, {x});
}

TAPEGRAD_BUILTIN_OPS(adaptive_max_pool2d, AdaptiveMaxPool2d)

}  // namespace tapegrad
