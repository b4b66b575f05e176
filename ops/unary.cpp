// Element-wise functions y = f(x), each with its derivative right below it. The VJP is
// grad_input = grad_out * f'(x), with f' written in terms of what the op saved: the input
// x or the output y (exp, sigmoid, tanh, sqrt reuse y and need not keep x). df is written
// once for numbers and tensors: recorded for create_graph, it is evaluated on tensors, so
// the second derivative flows through y (or x) and grad_out. A piecewise-linear op (abs,
// relu) has f' = its branch indicator, a constant: grad_out * branches(x).
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

enum class Saves { nothing, input, output };

struct NegDef {
  static constexpr std::string_view name = "neg";
  static constexpr Saves saves = Saves::nothing;
  template <class T> static T f(T x) { return -x; }
  template <class T> static T df(T g, T) { return -g; }
  static constexpr double low = -2, high = 2;
};

struct ExpDef {
  static constexpr std::string_view name = "exp";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return std::exp(x); }
  template <class T> static T df(T g, T y) { return g * y; }
  static constexpr double low = -2, high = 2;
};

struct LogDef {
  static constexpr std::string_view name = "log";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::log(x); }
  template <class T> static T df(T g, T x) { return g / x; }
  static constexpr double low = 0.2, high = 3;
};

struct SqrtDef {
  static constexpr std::string_view name = "sqrt";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return std::sqrt(x); }
  template <class T> static T df(T g, T y) { return g / (y * 2); }
  static constexpr double low = 0.2, high = 3;
};

// |x| has a kink at 0, where the gradient is 0 (sign(0) = 0, as PyTorch).
struct AbsDef {
  static constexpr std::string_view name = "abs";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::abs(x); }
  template <class T> static T df(T g, T x) { return x > 0 ? g : (x < 0 ? -g : T(0)); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0)); }
};

// relu has a kink at 0, where the gradient is 0 (PyTorch's rule). It saves its output:
// y > 0 exactly where x > 0.
struct ReluDef {
  static constexpr std::string_view name = "relu";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return x > 0 ? x : (x == x ? T(0) : x); }  // NaN stays
  template <class T> static T df(T g, T y) { return y > 0 ? g : T(0); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x > 0 ? T(1) : T(0); }
};

// sigmoid(x) = 1 / (1 + e^-x), evaluated without overflow for large |x|.
struct SigmoidDef {
  static constexpr std::string_view name = "sigmoid";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) {
    if (x >= 0) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
  }
  template <class T> static T df(T g, T y) { return g * y * (1 - y); }
  static constexpr double low = -3, high = 3;
};

struct TanhDef {
  static constexpr std::string_view name = "tanh";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return std::tanh(x); }
  template <class T> static T df(T g, T y) { return g * (1 - y * y); }
  static constexpr double low = -2, high = 2;
};

template <class Def>
struct Unary {
  static constexpr std::string_view name = Def::name;
  static constexpr std::string_view kinks = [] {
    if constexpr (requires { Def::kinks; }) return Def::kinks;
    else return std::string_view{};
  }();
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    Tensor out = detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      return detail::map_unary<T>(in[0], [](T v) { return Def::f(v); });
    });
    if constexpr (Def::saves == Saves::input) ctx.save(in[0]);
    if constexpr (Def::saves == Saves::output) ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) {  // recorded (create_graph): the same df on tensors
      if constexpr (requires { Def::kinks; }) return {grad_out * branch_of(ctx.saved(0))};
      else if constexpr (Def::saves == Saves::nothing) return {Def::df(grad_out, Tensor())};
      else return {Def::df(grad_out, ctx.saved(0))};
    }
    return {detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (Def::saves == Saves::nothing) {
        return detail::map_unary<T>(grad_out, [](T g) { return Def::df(g, T(0)); });
      } else {
        return detail::map_binary_same<T>(grad_out, ctx.saved(0),
                                          [](T g, T s) { return Def::df(g, s); });
      }
    })};
  }
  // Which piece of f (and of f') each element took, from the input or, where it has the
  // same sign (relu), the output: for the gradient checker, and f' itself.
  Tensor branches(std::span<const Tensor> in, const Tensor& out) const
    requires requires { Def::kinks; }
  {
    return branch_of(Def::saves == Saves::input ? in[0] : out);
  }
  static Tensor branch_of(const Tensor& saved) {
    return detail::dispatch_floating(saved.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      return detail::map_unary<T>(saved, [](T v) { return Def::branch(v); });
    });
  }
  static std::vector<Sample> samples();
};

template <class Def>
Tensor unary(const Tensor& x) {
  return apply(Unary<Def>{}, {x});
}

template <class Def>
std::vector<Sample> Unary<Def>::samples() {
  // Kinked ops (abs, relu) sample away from their kink at 0.
  auto make = [](const Shape& s, std::uint64_t seed) {
    return Def::low < 0 ? detail::sample_away_from_zero(s, Def::low, Def::high, 0.05, seed)
                        : detail::sample_tensor(s, Def::low, Def::high, seed);
  };
  auto call = [](const std::vector<Tensor>& in) { return unary<Def>(in[0]); };
  return {{"[2, 3, 5]", {make({2, 3, 5}, 21)}, call}, {"0-dim", {make({}, 22)}, call}};
}

}  // namespace

Tensor neg(const Tensor& x) { return unary<NegDef>(x); }
Tensor exp(const Tensor& x) { return unary<ExpDef>(x); }
Tensor log(const Tensor& x) { return unary<LogDef>(x); }
Tensor sqrt(const Tensor& x) { return unary<SqrtDef>(x); }
Tensor abs(const Tensor& x) { return unary<AbsDef>(x); }
Tensor relu(const Tensor& x) { return unary<ReluDef>(x); }
Tensor sigmoid(const Tensor& x) { return unary<SigmoidDef>(x); }
Tensor tanh(const Tensor& x) { return unary<TanhDef>(x); }
Tensor operator-(const Tensor& x) { return neg(x); }

TAPEGRAD_BUILTIN_OPS(unary, Unary<NegDef>, Unary<ExpDef>, Unary<LogDef>, Unary<SqrtDef>,
                     Unary<AbsDef>, Unary<ReluDef>, Unary<SigmoidDef>, Unary<TanhDef>)

}  // namespace tapegrad
