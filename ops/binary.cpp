// add, sub, mul, div, minimum, maximum and pow of two tensors, with NumPy broadcasting.
//   out[i] = a[ia] op b[ib] where ia, ib map the broadcast index to each operand.
// The VJP of a broadcast operand sums the gradient over the dims it was broadcast along
// (sum_to): each of its elements fed every output along those dims.
// Where PyTorch's gradient formula is a where(cond, ...), the condition is a constant mask of
// the output's shape computed from the saved operands (not recorded: it has no gradient).
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/math.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

TensorMeta binary_meta(std::string_view op, std::span<const Tensor> in) {
  detail::check_same_floating(op, in[0], in[1]);
  return {detail::broadcast_shapes(op, in[0].shape(), in[1].shape()), in[0].dtype()};
}

/// f(a, b) evaluated (unrecorded) at every element of a and b broadcast together.
template <class F>
Tensor broadcast_map(std::string_view op, const Tensor& a, const Tensor& b, F f) {
  const Shape shape = detail::broadcast_shapes(op, a.shape(), b.shape());
  return detail::dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    return detail::map_broadcast<T>(a, b, shape, [f](T x, T y) { return static_cast<T>(f(x, y)); });
  });
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

/// grad_out·other, input i's gradient: added into the sum the backward is making for input i
/// (OpContext::grad_sum) when neither is broadcast and nothing is recorded.
Tensor product_grad(const OpContext& ctx, std::size_t i, const Tensor& grad_out, const Tensor& other) {
  if (!is_grad_enabled() && other.shape() == grad_out.shape() && ctx.input(i).shape == grad_out.shape()) {
    if (Tensor sum = ctx.grad_sum(i); sum.defined()) {
      return detail::dispatch_floating(grad_out.dtype(), "mul", [&](auto tag) {
        using T = decltype(tag);
        return detail::map_binary_same<T>(grad_out, other, [](T g, T v) { return g * v; }, detail::NoFixup{}, sum);
      });
    }
  }
  return grad_if_needed(ctx, i, [&] { return grad_out * other; });
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
    return {ctx.needs_input_grad(0) ? product_grad(ctx, 0, grad_out, ctx.saved(1)) : Tensor(),
            ctx.needs_input_grad(1) ? product_grad(ctx, 1, grad_out, ctx.saved(0)) : Tensor()};
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

// minimum and maximum: a's share of the gradient is 1 where a wins, 0 where it loses and 1/2
// at a tie (PyTorch 1.13: where(a == b, grad / 2, grad).masked_fill_(a loses, 0)). A NaN
// operand wins the forward, and as in PyTorch both operands then get the full gradient.
template <bool IsMax>
struct Extremum {
  static constexpr std::string_view name = IsMax ? "maximum" : "minimum";
  static constexpr std::string_view kinks = "a = b";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    ctx.save(in[1]);
    return broadcast_forward(name, in, [](auto a, auto b) {
      if (a != a || b != b) return a != a ? a : b;
      return (IsMax ? a > b : a < b) ? a : b;
    });
  }
  static Tensor share(const Tensor& mine, const Tensor& other) {
    return broadcast_map(name, mine, other, [](auto x, auto y) {
      return x == y ? 0.5 : ((IsMax ? x < y : x > y) ? 0.0 : 1.0);
    });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor a = ctx.saved(0), b = ctx.saved(1);
    return {grad_if_needed(ctx, 0, [&] { return grad_out * share(a, b); }),
            grad_if_needed(ctx, 1, [&] { return grad_out * share(b, a); })};
  }
  Tensor branches(std::span<const Tensor> in, const Tensor&) const {
    return broadcast_map(name, in[0], in[1],
                         [](auto x, auto y) { return x > y ? 1.0 : (x < y ? -1.0 : 0.0); });
  }
  static std::vector<Sample> samples() {
    return binary_samples(IsMax ? tapegrad::maximum : tapegrad::minimum, -2);
  }
};

/// x where keep is 1 and `fill` where it is 0: keeps a formula finite at elements a where()
/// discards, with no gradient through them.
Tensor kept_or(const Tensor& x, const Tensor& keep, double fill) {
  return x * keep + rsub(keep, 1.0) * fill;
}

// a^b for two tensors. PyTorch's rules:
//   d/da = b·a^(b-1), but 0 where b = 0 (no 0·inf at a = 0);
//   d/db = a^b·log(a), but 0 where a = 0 and b >= 0 (0·log 0); a < 0 gives NaN.
// The discarded elements are evaluated at a = 1, b = 0, where the formulas are 0 and finite.
struct PowTensor {
  static constexpr std::string_view name = "pow_tensor";
  TensorMeta infer(std::span<const Tensor> in) const { return binary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    Tensor out = broadcast_forward(name, in, [](auto a, auto b) { return detail::num::pow(a, b); });
    ctx.save(in[0]);
    ctx.save(in[1]);
    ctx.save(ctx.needs_input_grad(1) ? out : Tensor());
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor a = ctx.saved(0), b = ctx.saved(1);
    return {grad_if_needed(ctx, 0, [&] {
              const Tensor keep = broadcast_map(name, a, b, [](auto, auto y) { return y != 0; });
              const Tensor b_kept = b * keep;
              return grad_out * b_kept * pow(kept_or(a, keep, 1.0), b_kept - 1.0);
            }),
            grad_if_needed(ctx, 1, [&] {
              const Tensor keep =
                  broadcast_map(name, a, b, [](auto x, auto y) { return !(x == 0 && y >= 0); });
              return grad_out * ctx.saved(2) * log(kept_or(a, keep, 1.0));
            })};
  }
  // Bases in [0.5, 2) keep log(a) real; exponents of both signs.
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto call = [](const std::vector<Tensor>& in) { return pow(in[0], in[1]); };
    return {
        {"same shape [3, 4]", {sample_tensor({3, 4}, 0.5, 2, 31), sample_tensor({3, 4}, -2, 2, 32)}, call},
        {"broadcast [2, 1, 4] with [3, 1]",
         {sample_tensor({2, 1, 4}, 0.5, 2, 33), sample_tensor({3, 1}, -2, 2, 34)}, call},
        {"0-dim base with [2, 3]", {sample_tensor({}, 0.5, 2, 35), sample_tensor({2, 3}, -2, 2, 36)}, call},
    };
  }
};

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return apply(Add{}, {a, b}); }
Tensor sub(const Tensor& a, const Tensor& b) { return apply(Sub{}, {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return apply(Mul{}, {a, b}); }
Tensor div(const Tensor& a, const Tensor& b) { return apply(Div{}, {a, b}); }
Tensor minimum(const Tensor& a, const Tensor& b) { return apply(Extremum<false>{}, {a, b}); }
Tensor maximum(const Tensor& a, const Tensor& b) { return apply(Extremum<true>{}, {a, b}); }
Tensor pow(const Tensor& a, const Tensor& b) { return apply(PowTensor{}, {a, b}); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }

TAPEGRAD_BUILTIN_OPS(binary, Add, Sub, Mul, Div, Extremum<false>, Extremum<true>, PowTensor)

}  // namespace tapegrad
