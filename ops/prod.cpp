// prod: the product of all elements, or along one dim (keepdim). Each lane (the elements one
// output multiplies) is [outer, n, inner] around the dim, or the whole flattened tensor.
//   out = Π_i x_i            grad_x_k = g · others_k,  others_k = Π_{i≠k} x_i
// others comes from prefix and suffix products, never out / x_k, so zeros need no special
// case: with one zero only that zero's gradient is nonzero, with two every gradient is 0.
// The one exception is PyTorch 1.13's: the gradient of prod over all elements with two or
// more zeros is a constant 0 (its derivative is 0 too); over a dim it is others, whose
// derivative is not 0. We follow both, since users compare second derivatives against it.
// others is the op prod_others, whose VJP, for a lane with upstream c,
//   grad_x_k = Σ_{i≠k} c_i Π_{j∉{i,k}} x_j
// is a raw O(n²)-per-lane kernel (so prod is twice differentiable, not three times).
#include <optional>
#include <vector>

#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

/// The lanes a product runs along: one dim, or the whole flattened tensor.
struct Lanes {
  std::optional<std::int64_t> dim;
  detail::DimSplit split(std::string_view op, const Shape& shape) const {
    if (!dim) return detail::DimSplit(Shape{shape.numel()}, 0);
    return detail::DimSplit(shape, detail::normalize_dim(op, *dim, shape.size()));
  }
  std::string describe() const { return dim ? fmt::format("dim={}", *dim) : std::string("all"); }
};

struct ProdOthers {
  static constexpr std::string_view name = "prod_others";
  static constexpr bool differentiable_vjp = false;
  Lanes lanes;
  std::string attributes() const { return lanes.describe(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    lanes.split(name, in[0].shape());
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    Tensor out = detail::make_tensor(x.meta());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      detail::for_each_lane(lanes.split(name, x.shape()), [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
        T before = 1;  // Π_{i<k} x_i, then Π_{i>k} x_i on the way back
        for (std::int64_t k = 0; k < n; ++k) {
          po[base + k * stride] = before;
          before *= px[base + k * stride];
        }
        T after = 1;
        for (std::int64_t k = n; k-- > 0;) {
          po[base + k * stride] *= after;
          after *= px[base + k * stride];
        }
      });
    });
    ctx.save(x);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    Tensor grad = detail::make_tensor(x.meta());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      const T* pc = grad_out.data<T>();
      T* pg = grad.data<T>();
      std::vector<T> after;
      detail::for_each_lane(lanes.split(name, x.shape()), [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
        after.assign(static_cast<std::size_t>(n) + 1, T(1));
        for (std::int64_t k = 0; k < n; ++k) {  // the lane without x_k
          for (std::int64_t i = n; i-- > 0;) {
            after[static_cast<std::size_t>(i)] = after[static_cast<std::size_t>(i) + 1] * (i == k ? T(1) : px[base + i * stride]);
          }
          T before = 1, total = 0;
          for (std::int64_t i = 0; i < n; ++i) {
            if (i == k) continue;
            total += pc[base + i * stride] * before * after[static_cast<std::size_t>(i) + 1];
            before *= px[base + i * stride];
          }
          pg[base + k * stride] = total;
        }
      });
    });
    return {grad};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    return {{"dim 1 of [3, 4]", {sample_tensor({3, 4}, -2, 2, 351)},
             [](const auto& in) { return apply(ProdOthers{{1}}, {in[0]}); }},
            {"all of [2, 3] with a zero", {sample_tensor({2, 3}, -2, 2, 352)},
             [](const auto& in) { return apply(ProdOthers{{}}, {in[0] * from_vector(std::vector<double>{1, 1, 0, 1, 1, 1}, {2, 3}, DType::f64)}); }}};
  }
};

struct Prod {
  static constexpr std::string_view name = "prod";
  Lanes lanes;
  bool keepdim = false;
  std::string attributes() const { return fmt::format("{}, keepdim={}", lanes.describe(), keepdim); }
  detail::DimMask mask(const Shape& shape) const {
    return detail::reduced_mask(name, shape, lanes.dim ? std::vector<std::int64_t>{*lanes.dim} : std::vector<std::int64_t>{});
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    return {detail::reduced_shape(in[0].shape(), mask(in[0].shape()), keepdim), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      const auto [outer, n, inner] = lanes.split(name, x.shape());
      for (std::int64_t o = 0; o < outer; ++o) {
        for (std::int64_t j = 0; j < inner; ++j) {
          T product = 1;  // an empty lane's product is 1
          for (std::int64_t k = 0; k < n; ++k) product *= px[(o * n + k) * inner + j];
          po[o * inner + j] = product;
        }
      }
    });
    ctx.save(x);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    if (!lanes.dim) {
      const Tensor zeros_in_x = detail::map_values(name, x, [](auto v) { return v == 0 ? 1 : 0; });
      if (sum(zeros_in_x).item<double>() >= 2) return {zeros(x.shape(), x.dtype())};
    }
    const Tensor others = apply(ProdOthers{lanes}, {x});
    return {reshape(grad_out, detail::keepdim_shape(x.shape(), mask(x.shape()))) * others};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    return {{"all of [3, 4]", {sample_tensor({3, 4}, 0.5, 1.5, 361)}, [](const auto& in) { return prod(in[0]); }},
            {"dim 1 of [3, 4]", {sample_tensor({3, 4}, -2, 2, 362)}, [](const auto& in) { return prod(in[0], 1); }},
            {"dim -1 keepdim of [2, 3, 4]", {sample_tensor({2, 3, 4}, -2, 2, 363)},
             [](const auto& in) { return prod(in[0], -1, true); }}};
  }
};

}  // namespace

Tensor prod(const Tensor& x) { return apply(Prod{{}, false}, {x}); }
Tensor prod(const Tensor& x, std::int64_t dim, bool keepdim) { return apply(Prod{{dim}, keepdim}, {x}); }

TAPEGRAD_BUILTIN_OPS(prod, ProdOthers, Prod)

}  // namespace tapegrad
