// softmax and log_softmax along one dim, computed stably around the maximum m:
//   log_softmax(x)_i = x_i - m - log Σ_j exp(x_j - m),  softmax = exp(log_softmax)
// VJPs, with y the output and g = grad_out (sums run along the dim):
//   softmax:     grad_x = y * (g - Σ g*y)
//   log_softmax: grad_x = g - exp(y) * Σ g
#include <cmath>
#include <limits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

using detail::for_each_lane;

template <bool Log>
struct SoftmaxOp {
  static constexpr std::string_view name = Log ? "log_softmax" : "softmax";
  std::int64_t dim;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    detail::normalize_dim(name, dim, in[0].dim());
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const detail::DimSplit split(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    Tensor out = detail::make_tensor(x.meta());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      for_each_lane(split, [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
        T m = -std::numeric_limits<T>::infinity();
        for (std::int64_t k = 0; k < n; ++k) m = std::max(m, px[base + k * stride]);
        // A +inf or an all -inf lane makes x - m nan everywhere in it, as in PyTorch.
        T total = 0;
        for (std::int64_t k = 0; k < n; ++k) total += std::exp(px[base + k * stride] - m);
        const T log_total = std::log(total);
        for (std::int64_t k = 0; k < n; ++k) {
          const T v = px[base + k * stride] - m - log_total;
          py[base + k * stride] = Log ? v : std::exp(v);
        }
      });
    });
    ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor y = ctx.saved(0);
    if (is_grad_enabled()) {  // recorded (create_graph): the same formulas as ops
      if constexpr (Log) return {grad_out - exp(y) * sum(grad_out, {dim}, true)};
      else return {y * (grad_out - sum(grad_out * y, {dim}, true))};
    }
    const detail::DimSplit split(y.shape(), detail::normalize_dim(name, dim, y.dim()));
    Tensor grad_x = detail::make_tensor(y.meta());
    detail::dispatch_floating(y.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* py = y.data<T>();
      const T* pg = grad_out.data<T>();
      T* pgx = grad_x.data<T>();
      for_each_lane(split, [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
        T dot = 0;
        for (std::int64_t k = 0; k < n; ++k) {
          const std::int64_t i = base + k * stride;
          dot += Log ? pg[i] : pg[i] * py[i];
        }
        for (std::int64_t k = 0; k < n; ++k) {
          const std::int64_t i = base + k * stride;
          pgx[i] = Log ? pg[i] - std::exp(py[i]) * dot : py[i] * (pg[i] - dot);
        }
      });
    });
    return {grad_x};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto fn = [](std::int64_t d) {
      return [d](const std::vector<Tensor>& in) {
        return Log ? log_softmax(in[0], d) : softmax(in[0], d);
      };
    };
    return {{"dim 1 of [3, 5]", {sample_tensor({3, 5}, -3, 3, 81)}, fn(1)},
            {"dim 0 of [4, 2, 3]", {sample_tensor({4, 2, 3}, -3, 3, 82)}, fn(0)}};
  }
};

}  // namespace

Tensor softmax(const Tensor& x, std::int64_t dim) { return apply(SoftmaxOp<false>{dim}, {x}); }
Tensor log_softmax(const Tensor& x, std::int64_t dim) { return apply(SoftmaxOp<true>{dim}, {x}); }

TAPEGRAD_BUILTIN_OPS(softmax, SoftmaxOp<false>, SoftmaxOp<true>)

}  // namespace tapegrad
