// amax / amin over dims (empty dims: every element; keepdim) and argmax / argmin.
//   amax: out[j] = max_{i ↦ j} x[i]      grad_x[i] = g[j] / count_j where x[i] = out[j], else 0
// count_j is the number of elements tied at the maximum: PyTorch splits the gradient evenly
// among ties (max(x, dim) sends it to the first one only). NaN propagates to the output.
// The weights [x = out] / count are constants, so the recorded VJP, g · weights, is
// differentiable again (in g; its derivative in x is 0 away from ties).
// argmax / argmin are max(x, dim)'s indices (of -x for argmin): the first extremum, NaN
// counting as one (PyTorch's rule); i64 and without gradient, so not ops of their own.
#include <cmath>

#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

template <bool Max>
struct Extremum {
  static constexpr std::string_view name = Max ? "amax" : "amin";
  static constexpr std::string_view kinks = "ties within a reduced group";
  std::vector<std::int64_t> dims;  // empty: all
  bool keepdim = false;
  std::string attributes() const { return fmt::format("dims=[{}], keepdim={}", fmt::join(dims, ", "), keepdim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    const detail::DimMask mask = detail::reduced_mask(name, in[0].shape(), dims);
    if (in[0].numel() == 0 || detail::reduced_count(in[0].shape(), mask) == 0) {
      throw ShapeError(fmt::format("{}: cannot reduce over dims [{}] of an empty tensor {}: an "
                                   "empty group has no {}", name, fmt::join(dims, ", "),
                                   in[0].shape(), Max ? "maximum" : "minimum"));
    }
    return {detail::reduced_shape(in[0].shape(), mask, keepdim), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor rows = detail::reduce_rows(in[0], detail::reduced_mask(name, in[0].shape(), dims));
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t width = rows.shape()[1];
      for (std::int64_t j = 0; j < rows.shape()[0]; ++j) {
        const T* row = rows.data<T>() + j * width;
        T best = row[0];
        for (std::int64_t k = 1; k < width && !std::isnan(best); ++k) {
          if ((Max ? row[k] > best : row[k] < best) || std::isnan(row[k])) best = row[k];
        }
        out.data<T>()[j] = best;
      }
    });
    ctx.save(in[0]);
    ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    const detail::DimMask mask = detail::reduced_mask(name, x.shape(), dims);
    const Shape keep = detail::keepdim_shape(x.shape(), mask);
    return {reshape(grad_out, keep) * detail::tie_weights(name, x, reshape(ctx.saved(1).detach(), keep), mask)};
  }
  // For the gradient checker: which elements are extrema.
  Tensor branches(std::span<const Tensor> in, const Tensor& out) const {
    const Shape keep = detail::keepdim_shape(in[0].shape(), detail::reduced_mask(name, in[0].shape(), dims));
    return detail::map_values(name, in[0], reshape(out.detach(), keep), [](auto v, auto m) { return v == m ? 1 : 0; });
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto with = [](std::vector<std::int64_t> d, bool keep) {
      return [d, keep](const std::vector<Tensor>& in) { return Max ? amax(in[0], d, keep) : amin(in[0], d, keep); };
    };
    return {{"all of [3, 4]", {sample_tensor({3, 4}, -2, 2, Max ? 331 : 341)}, with({}, false)},
            {"dim 1 of [3, 5]", {sample_tensor({3, 5}, -2, 2, Max ? 332 : 342)}, with({1}, false)},
            {"dims [0, -1] keepdim of [2, 3, 4]", {sample_tensor({2, 3, 4}, -2, 2, Max ? 333 : 343)}, with({0, -1}, true)}};
  }
};

/// The index of the first maximum of x (negated for argmin) along dim, or of the flattened x.
Tensor arg_extremum(const Tensor& x, std::optional<std::int64_t> dim, bool keepdim, bool is_max,
                    std::string_view op) {
  detail::check_floating(op, x);
  if (x.numel() == 0) {
    throw ShapeError(fmt::format("{}: the input {} is empty: an empty group has no extremum", op, x.shape()));
  }
  if (dim) detail::normalize_dim(op, *dim, x.dim());  // names the op the user called
  NoGradGuard no_grad;
  const Tensor values = is_max ? x.detach() : neg(x.detach());
  if (dim) return max(values, *dim, keepdim).indices;
  const Tensor flat_index = max(reshape(values, {x.numel()}), 0).indices;
  return keepdim ? reshape(flat_index, Shape(std::vector<std::int64_t>(x.dim(), 1))) : flat_index;
}

}  // namespace

Tensor amax(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  return apply(Extremum<true>{dims, keepdim}, {x});
}
Tensor amin(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  return apply(Extremum<false>{dims, keepdim}, {x});
}
Tensor argmax(const Tensor& x, std::optional<std::int64_t> dim, bool keepdim) {
  return arg_extremum(x, dim, keepdim, true, "argmax");
}
Tensor argmin(const Tensor& x, std::optional<std::int64_t> dim, bool keepdim) {
  return arg_extremum(x, dim, keepdim, false, "argmin");
}

TAPEGRAD_BUILTIN_OPS(reduce_extrema, Extremum<true>, Extremum<false>)

}  // namespace tapegrad
