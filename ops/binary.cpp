// add, sub, mul, div of two tensors, with NumPy broadcasting.
//   out[i] = a[ia] op b[ib] where ia, ib map the broadcast index to each operand.
// The VJP of a broadcast operand sums the gradient over the dims it was broadcast along
// (sum_to): each of its elements fed every output along those dims.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

TensorMeta binary_meta(std::string_view op, std::span<const Tensor> in) {
  detail::check_same_floating(op, in[0], in[1]);
  return {detail::broadcast_shapes(op, in[0].shape(), in[1].shape()), in[0].dtype()};
}

template <class F>
Tensor broadcast_forward(std::string_view op, std::span<const Tensor> in, F f) {
  const Shape shape = detail::broadcast_shapes(op, in[0].shape(), in[1].shape());
  return detail::dispatch_floating(in[0].dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    return detail::map_broadcast<T>(in[0], in[1], shape, [f](T a, T b) { return static_cast<T>(f(a, b)); });
  });
}

/// The gradient of input i, reduced to its shape, or undefined when it is not needed.
template <class F>
Tensor grad_if_needed(const OpContext& ctx, std::size_t i, F compute) {
  if (!ctx.needs_input_grad(i)) return Tensor();
  return detail::sum_to(compute(), ctx.input(i).shape);
}

std::vector<Sample> binary_samples(Tensor (*fn)(const Tensor&, const Tensor&), double low_b) {
  using detail::sample_tensor;
  auto call = [fn](const std::vector<Tensor>& in) { return fn(in[0], in[1]); };
  return {
      {"same shape [3, 4]", {sample_tensor({3, 4}, -2, 2, 1), sample_tensor({3, 4}, low_b, 2, 2)}, call},
      {"broadcast [2, 1, 4] with [3, 1]",
       {sample_tensor({2, 1, 4}, -2, 2, 3), sample_tensor({3, 1}, low_b, 2, 4)}, call},
      {"0-dim with [2, 3]", {sample_tensor({}, -2, 2, 5), sample_tensor({2, 3}, low_b, 2, 6)}, call},
  };
}

struct Add {
  static constexpr std::string_view name = "add";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return broadcast_forward(name, in, [](auto a, auto b) { return a + b; });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {grad_if_needed(ctx, 0, [&] { return grad_out; }),
            grad_if_needed(ctx, 1, [&] { return grad_out; })};
  }
  static std::vector<Sample> samples() { return binary_samples(tapegrad::add, -2); }
};

struct Sub {
  static constexpr std::string_view name = "sub";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return broadcast_forward(name, in, [](auto a, auto b) { return a - b; });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {grad_if_needed(ctx, 0, [&] { return grad_out; }),
            grad_if_needed(ctx, 1, [&] { return neg(grad_out); })};
  }
  static std::vector<Sample> samples() { return binary_samples(tapegrad::sub, -2); }
};

struct Mul {
  static constexpr std::string_view name = "mul";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    // Save only what the other input's gradient needs.
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return broadcast_forward(name, in, [](auto a, auto b) { return a * b; });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {grad_if_needed(ctx, 0, [&] { return grad_out * ctx.saved(1); }),
            grad_if_needed(ctx, 1, [&] { return grad_out * ctx.saved(0); })};
  }
  static std::vector<Sample> samples() { return binary_samples(tapegrad::mul, -2); }
};

struct Div {
  static constexpr std::string_view name = "div";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    Tensor out = broadcast_forward(name, in, [](auto a, auto b) { return a / b; });
    ctx.save(in[1]);
    ctx.save(ctx.needs_input_grad(1) ? out : Tensor());
    return out;
  }
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b² = -out/b.
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor& b = ctx.saved(0);
    return {grad_if_needed(ctx, 0, [&] { return grad_out / b; }),
            grad_if_needed(ctx, 1, [&] { return neg(grad_out * ctx.saved(1) / b); })};
  }
  // The divisor stays in [0.5, 2): far from the pole at 0.
  static std::vector<Sample> samples() { return binary_samples(tapegrad::div, 0.5); }
};

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return apply(Add{}, {a, b}); }
Tensor sub(const Tensor& a, const Tensor& b) { return apply(Sub{}, {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return apply(Mul{}, {a, b}); }
Tensor div(const Tensor& a, const Tensor& b) { return apply(Div{}, {a, b}); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }

TAPEGRAD_BUILTIN_OPS(binary, Add, Sub, Mul, Div)

}  // namespace tapegrad
