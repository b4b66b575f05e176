// prod: the product of all elements, or along one dim (keepdim). Each lane (the elements one
// output multiplies) is [outer, n, inner] around the dim, or the whole flattened tensor.
//   out = Π_i x_i            grad_x_k = g · others_k,  others_k = Π_{i≠k} x_i
// others never divides out by x_k, so zeros need no special case: with one zero only that
// zero's gradient is nonzero, with two every gradient is 0. The one exception is PyTorch
// 1.13's: the gradient of prod over all elements with two or more zeros is a constant 0 (its
// derivative is 0 too); over a dim it is others, whose derivative is not 0. We follow both,
// since users compare second derivatives against PyTorch.
// others comes from prefix and suffix products (O(n) per lane); under create_graph it is
// recorded instead as prod(Y, -1) with Y[.., k, j] = x_j for j ≠ k and 1 for j = k, an
// [.., n, n] tensor built from x by broadcasting ops, so the second derivative is prod's own
// VJP again, on Y (O(n²) per lane, only when differentiating twice).
#include <optional>
#include <vector>

#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

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

/// others_k = Π_{i≠k} x_i along each lane, not recorded: prefix times suffix products.
Tensor others_kernel(const Tensor& x, const detail::DimSplit& split) {
  Tensor out = detail::make_tensor(x.meta());
  detail::dispatch_floating(x.dtype(), "prod", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    detail::for_each_lane(split, [&](std::int64_t base, std::int64_t stride, std::int64_t n) {
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
  return out;
}

/// others as recorded ops (see the file comment), for lanes along the last dim of x: [.., n].
Tensor others_recorded(const Tensor& x) {
  const std::int64_t n = x.shape()[x.dim() - 1];
  Tensor eye = zeros({n, n}, x.dtype());
  detail::dispatch_floating(x.dtype(), "prod", [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t k = 0; k < n; ++k) eye.data<T>()[k * n + k] = T(1);
  });
  Shape row = x.shape();
  row[row.size() - 1] = 1;
  row.push_back(n);
  return prod(reshape(x, row) * (1.0 - eye) + eye, -1);
}

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
    const Tensor g = reshape(grad_out, detail::keepdim_shape(x.shape(), mask(x.shape())));
    if (!is_grad_enabled()) return {g * others_kernel(x, lanes.split(name, x.shape()))};
    if (!lanes.dim || x.dim() == 0) return {g * reshape(others_recorded(reshape(x, {x.numel()})), x.shape())};
    const auto d = static_cast<std::int64_t>(detail::normalize_dim(name, *lanes.dim, x.dim()));
    const auto last = static_cast<std::int64_t>(x.dim()) - 1;
    if (d == last) return {g * others_recorded(x)};
    return {g * transpose(others_recorded(transpose(x, d, last)), d, last)};
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

TAPEGRAD_BUILTIN_OPS(prod, Prod)

}  // namespace tapegrad
