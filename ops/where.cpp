// where(condition, a, b): a where the bool condition holds, b elsewhere, the three broadcast
// together (NumPy rules), as torch.where. masked_fill(x, mask, value) is where(mask, value, x).
// VJP: grad_a = where(condition, grad_out, 0) and grad_b = where(condition, 0, grad_out),
// each summed back to its operand's shape (sum_to). Both are where again, so the VJP is
// recorded under create_graph and differentiates to any order; the condition gets none.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

void check_mask(std::string_view op, const Tensor& mask, std::string_view what) {
  if (!mask.defined()) throw ValueError(fmt::format("{}: {} is an undefined tensor", op, what));
  if (mask.dtype() != DType::boolean) {
    throw DTypeError(fmt::format("{}: {} must be bool (a comparison's result, or .to(DType::boolean)), got {} {}", op,
                                 what, mask.dtype(), mask.shape()));
  }
}

struct Where {
  static constexpr std::string_view name = "where";
  TensorMeta infer(std::span<const Tensor> in) const {
    check_mask(name, in[0], "condition");
    for (std::size_t i : {1, 2}) {
      if (!in[i].defined()) throw ValueError(fmt::format("where: {} is an undefined tensor", i == 1 ? "a" : "b"));
    }
    if (in[1].dtype() != in[2].dtype()) {
      throw DTypeError(fmt::format("where: a and b have different dtypes, {} {} and {} {}; convert one with .to()",
                                   in[1].shape(), in[1].dtype(), in[2].shape(), in[2].dtype()));
    }
    const Shape values = detail::broadcast_shapes(name, in[1].shape(), in[2].shape());
    return {detail::broadcast_shapes(name, in[0].shape(), values), in[1].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    const TensorMeta meta = infer(in);
    Tensor out = detail::make_tensor(meta);
    detail::dispatch_all(meta.dtype, [&](auto tag) {
      using T = decltype(tag);
      const bool* pc = in[0].data<bool>();
      const T* pa = in[1].data<T>();
      const T* pb = in[2].data<T>();
      T* po = out.data<T>();
      detail::each_broadcast<3>(meta.shape, {in[0].shape(), in[1].shape(), in[2].shape()},
                                [&](std::int64_t i, const auto& at) { po[i] = pc[at[0]] ? pa[at[1]] : pb[at[2]]; });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor& cond = ctx.saved(0);
    const Tensor zero = zeros({}, grad_out.dtype());
    auto part = [&](std::size_t i, const Tensor& a, const Tensor& b) {
      return ctx.needs_input_grad(i) ? detail::sum_to(where(cond, a, b), ctx.input(i).shape) : Tensor();
    };
    return {Tensor(), part(1, grad_out, zero), part(2, zero, grad_out)};
  }
  static std::vector<Sample> samples();
};

std::vector<Sample> Where::samples() {
  using detail::sample_tensor;
  const Tensor checker = from_vector(std::vector<double>{1, 0, 0, 1, 1, 0}, {2, 3}, DType::f64).to(DType::boolean);
  const Tensor column = from_vector(std::vector<double>{0, 1, 1}, {3, 1}, DType::f64).to(DType::boolean);
  return {
      {"same shapes [2, 3]", {sample_tensor({2, 3}, -1, 1, 61), sample_tensor({2, 3}, -1, 1, 62)},
       [checker](const std::vector<Tensor>& in) { return where(checker, in[0], in[1]); }},
      {"condition [3, 1], a [3, 4], b [4]", {sample_tensor({3, 4}, -1, 1, 63), sample_tensor({4}, -1, 1, 64)},
       [column](const std::vector<Tensor>& in) { return where(column, in[0], in[1]); }},
      {"masked_fill with a 0-dim value", {sample_tensor({2, 3}, -1, 1, 65), sample_tensor({}, -1, 1, 66)},
       [checker](const std::vector<Tensor>& in) { return masked_fill(in[0], checker, in[1]); }},
  };
}

}  // namespace

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) { return apply(Where{}, {condition, a, b}); }
Tensor where(const Tensor& condition, const Tensor& a, double b) {
  if (!a.defined()) throw ValueError("where: a is an undefined tensor");
  return where(condition, a, full({}, b, a.dtype()));
}
Tensor where(const Tensor& condition, double a, const Tensor& b) {
  if (!b.defined()) throw ValueError("where: b is an undefined tensor");
  return where(condition, full({}, a, b.dtype()), b);
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, const Tensor& value) {
  check_mask("masked_fill", mask, "mask");
  if (!x.defined() || !value.defined()) {
    throw ValueError(fmt::format("masked_fill: {} is an undefined tensor", x.defined() ? "value" : "input"));
  }
  detail::broadcast_shapes("masked_fill", x.shape(), mask.shape());
  if (value.dim() != 0) {
    throw ShapeError(fmt::format("masked_fill: value must be a 0-dim tensor (or a number), got {}", value.shape()));
  }
  if (value.dtype() != x.dtype()) {
    throw DTypeError(fmt::format("masked_fill: value is {}, the input is {} {}", value.dtype(), x.dtype(), x.shape()));
  }
  return where(mask, value, x);
}
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  if (!x.defined()) throw ValueError("masked_fill: input is an undefined tensor");
  return masked_fill(x, mask, full({}, value, x.dtype()));
}

TAPEGRAD_BUILTIN_OPS(where, Where)

}  // namespace tapegrad
