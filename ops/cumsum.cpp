// cumsum along one dim and its VJP, the reverse cumulative sum, each the other's VJP:
//   cumsum:          out_k = Σ_{i <= k} x_i      grad_x = cumsum_backward(g)
//   cumsum_backward: out_k = Σ_{i >= k} c_i      grad_c = cumsum(g)
// Both are linear, so every order of derivative is one of the two.
#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

template <bool Reverse>
struct CumSum {
  static constexpr std::string_view name = Reverse ? "cumsum_backward" : "cumsum";
  std::int64_t dim;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    detail::normalize_dim(name, dim, in[0].dim());
    return in[0].meta();
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    Tensor out = detail::make_tensor(x.meta());
    const detail::DimSplit split(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      detail::for_each_lane(split, [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
        T total = 0;
        for (std::int64_t step = 0; step < n; ++step) {
          const std::int64_t i = base + (Reverse ? n - 1 - step : step) * stride;
          total += px[i];
          po[i] = total;
        }
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {apply(CumSum<!Reverse>{dim}, {grad_out})};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto with = [](std::int64_t d) {
      return [d](const std::vector<Tensor>& in) {
        return Reverse ? apply(CumSum{d}, {in[0]}) : cumsum(in[0], d);
      };
    };
    return {{"dim 1 of [3, 4]", {sample_tensor({3, 4}, -1, 1, Reverse ? 371 : 381)}, with(1)},
            {"dim -3 of [2, 3, 4]", {sample_tensor({2, 3, 4}, -1, 1, Reverse ? 372 : 382)}, with(-3)}};
  }
};

}  // namespace

Tensor cumsum(const Tensor& x, std::int64_t dim) { return apply(CumSum<false>{dim}, {x}); }

TAPEGRAD_BUILTIN_OPS(cumsum, CumSum<false>, CumSum<true>)

}  // namespace tapegrad
