// Element-wise functions y = f(x), each with its derivative right below it. The VJP is
// grad_input = df(grad_out, s) with s what the op saved: the input x or the output y (exp,
// sigmoid, tanh, sqrt reuse y and need not keep x). df is written once for numbers and
// tensors: recorded for create_graph, it is evaluated on tensors, so the second derivative
// flows through y (or x) and grad_out. A piecewise op also takes b = branch(s), which piece
// each element is on, as a constant: relu's df is grad_out·b. Where one piece's formula
// would overflow on the other's elements (elu's e^x for large x), or where PyTorch's second
// derivative masks with a strict inequality while its first derivative does not (elu and
// softplus exactly at their kink), the formula reads x·below(b): masked elements stay
// finite and get no gradient through x.
// An op with options (leaky_relu's slope) keeps them in its Def, one instance per call.
// A Def marked `cheap` computes f in a few instructions (no vecmath polynomial): its large
// outputs are written with streaming stores on the CPUs where that pays (autograd/simd.hpp).
#include <bit>
#include <cmath>
#include <concepts>
#include <limits>
#include <type_traits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/math.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

enum class Saves { nothing, input, output };

/// The functions an f or df calls, for numbers (f32: vectorisable kernels, f64: libm; see
/// ops/detail/math.hpp) and for tensors (recorded ops) alike.
namespace generic {
using detail::num::cos, detail::num::erf, detail::num::exp, detail::num::expm1, detail::num::log,
    detail::num::log1p, detail::num::sigmoid, detail::num::sin, detail::num::tanh;
using tapegrad::cos, tapegrad::erf, tapegrad::exp, tapegrad::log1p, tapegrad::sin,
    tapegrad::tanh, tapegrad::sigmoid;
/// sin and cos, where f32 takes the float-reduced kernels (exact for |x| < kTrigFastBelow)
/// or, with Wide, the double-reduced ones (exact for |x| < kTrigExactBelow); f64 and tensors
/// ignore Wide.
template <bool Wide, class T> T sin_of(const T& x) {
  if constexpr (Wide && std::same_as<T, float>) return detail::vm::sin_wide(x);
  else return generic::sin(x);
}
template <bool Wide, class T> T cos_of(const T& x) {
  if constexpr (Wide && std::same_as<T, float>) return detail::vm::cos_wide(x);
  else return generic::cos(x);
}
/// An option (a double) in a df's arithmetic: T for numbers, so that f32 stays f32.
template <class T>
using Num = std::conditional_t<std::is_floating_point_v<T>, T, double>;
/// The zero gradient of sign, floor and round: PyTorch returns zeros, unconnected to grad_out.
template <class T>
T zero_like(const T& g) {
  if constexpr (std::is_floating_point_v<T>) return T(0);
  else return zeros_like(g);
}
/// For a branch b of -1 (below a kink), 0 (exactly at it) or 1 (above it): 1 above, else 0;
/// and 1 below, else 0. Exactly at the kink both are 0.
template <class T> T above(const T& b) { return b * (b + 1) * Num<T>(0.5); }
template <class T> T below(const T& b) { return b * (b - 1) * Num<T>(0.5); }
/// g where the mask m is nonzero, else 0: a selection, as PyTorch's relu and clamp backward
/// (an Inf or NaN g where the mask is 0 gives 0, where a product would give NaN).
template <class T> T pass_where(const T& g, const T& m) {
  if constexpr (std::is_floating_point_v<T>) return m != 0 ? g : T(0);
  else return where(ne(m, 0.0), g, 0.0);
}
}  // namespace generic
using generic::Num;

struct NegDef {
  static constexpr std::string_view name = "neg";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::nothing;
  template <class T> static T f(T x) { return -x; }
  template <class T> static T df(T g, T) { return -g; }
  static constexpr double low = -2, high = 2;
};

struct ExpDef {
  static constexpr std::string_view name = "exp";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return generic::exp(x); }
  template <class T> static T df(T g, T y) { return g * y; }
  static constexpr double low = -2, high = 2;
};

struct LogDef {
  static constexpr std::string_view name = "log";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return generic::log(x); }
  template <class T> static T df(T g, T x) { return g / x; }
  static constexpr double low = 0.2, high = 3;
};

struct SqrtDef {
  static constexpr std::string_view name = "sqrt";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return std::sqrt(x); }
  template <class T> static T df(T g, T y) { return g / (y * 2); }
  static constexpr double low = 0.2, high = 3;
};

// |x| has a kink at 0, where the gradient is 0 (sign(0) = 0, as PyTorch).
struct AbsDef {
  static constexpr std::string_view name = "abs";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::abs(x); }
  template <class T> static T df(T g, T, T b) { return g * b; }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0)); }
};

// relu has a kink at 0, where the gradient is 0 (PyTorch's rule). It saves its output:
// y > 0 exactly where x > 0.
struct ReluDef {
  static constexpr std::string_view name = "relu";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return x > 0 ? x : (x == x ? T(0) : x); }  // NaN stays
  template <class T> static T df(T g, T, T b) { return generic::pass_where(g, b); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x > 0 ? T(1) : T(0); }
};

struct SigmoidDef {
  static constexpr std::string_view name = "sigmoid";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return generic::sigmoid(x); }
  template <class T> static T df(T g, T y) { return g * y * (1 - y); }
  static constexpr double low = -3, high = 3;
};

struct TanhDef {
  static constexpr std::string_view name = "tanh";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return generic::tanh(x); }
  template <class T> static T df(T g, T y) { return g * (1 - y * y); }
  static constexpr double low = -2, high = 2;
};

struct Log1pDef {
  static constexpr std::string_view name = "log1p";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return generic::log1p(x); }
  template <class T> static T df(T g, T x) { return g / (x + 1); }
  static constexpr double low = -0.8, high = 2;
};

struct Expm1Def {
  static constexpr std::string_view name = "expm1";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return generic::expm1(x); }
  template <class T> static T df(T g, T y) { return g * (y + 1); }
  static constexpr double low = -2, high = 2;
};

// sin and cos in f32 are exact for |x| < kTrigFastBelow, and with Wide for |x| <
// kTrigExactBelow (see Unary::exact_forward).
struct SinDef {
  static constexpr std::string_view name = "sin";
  static constexpr Saves saves = Saves::input;
  template <class T, bool Wide = false> static T f(T x) { return generic::sin_of<Wide>(x); }
  template <class T, bool Wide = false> static T df(T g, T x) { return g * generic::cos_of<Wide>(x); }
  static constexpr double low = -3, high = 3;
};

struct CosDef {
  static constexpr std::string_view name = "cos";
  static constexpr Saves saves = Saves::input;
  template <class T, bool Wide = false> static T f(T x) { return generic::cos_of<Wide>(x); }
  template <class T, bool Wide = false> static T df(T g, T x) { return -(g * generic::sin_of<Wide>(x)); }
  static constexpr double low = -3, high = 3;
};

// erf'(x) = 2/sqrt(π)·e^(-x²).
struct ErfDef {
  static constexpr std::string_view name = "erf";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return generic::erf(x); }
  template <class T> static T df(T g, T x) { return g * generic::exp(-(x * x)) * Num<T>(M_2_SQRTPI); }
  static constexpr double low = -2, high = 2;
};

// d(x^-1/2)/dx = -x^-3/2 / 2 = -y³/2 (PyTorch's formula, from the output).
struct RsqrtDef {
  static constexpr std::string_view name = "rsqrt";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return T(1) / std::sqrt(x); }
  template <class T> static T df(T g, T y) { return g * (y * y * y) * Num<T>(-0.5); }
  static constexpr double low = 0.2, high = 3;
};

// sign, floor and round are piecewise constant: gradient 0 everywhere, also at their jumps
// (PyTorch's rule). Their branch is their value, which changes exactly at a jump.
struct SignDef {
  static constexpr std::string_view name = "sign";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::nothing;
  template <class T> static T f(T x) { return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0)); }  // NaN -> 0
  template <class T> static T df(T g, T) { return generic::zero_like(g); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return f(x); }
};

struct FloorDef {
  static constexpr std::string_view name = "floor";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::nothing;
  template <class T> static T f(T x) { return std::floor(x); }
  template <class T> static T df(T g, T) { return generic::zero_like(g); }
  static constexpr double low = -3, high = 3;
  static constexpr std::string_view kinks = "x an integer";
  template <class T> static T branch(T x) { return f(x); }
};

// nearbyint in the default rounding mode rounds half to even, as torch.round.
struct RoundDef {
  static constexpr std::string_view name = "round";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::nothing;
  template <class T> static T f(T x) { return std::nearbyint(x); }
  template <class T> static T df(T g, T) { return generic::zero_like(g); }
  static constexpr double low = -3, high = 3;
  static constexpr std::string_view kinks = "x a half-integer";
  template <class T> static T branch(T x) { return f(x); }
};

// ---- activations ----------------------------------------------------------------------------

// silu'(x) = s·(1 + x·(1 - s)), s = sigmoid(x) (PyTorch's formula).
struct SiluDef {
  static constexpr std::string_view name = "silu";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return x * generic::sigmoid(x); }
  template <class T> static T df(T g, T x) {
    const T s = generic::sigmoid(x);
    return g * s * (x * (1 - s) + 1);
  }
  static constexpr double low = -3, high = 3;
};

// log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|): no overflow at either end. Its derivative is
// 1 - sigmoid(x) = sigmoid(-x).
struct LogSigmoidDef {
  static constexpr std::string_view name = "log_sigmoid";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::min(x, T(0)) - generic::log1p(generic::exp(-std::abs(x))); }
  template <class T> static T df(T g, T x) { return g * generic::sigmoid(-x); }
  static constexpr double low = -3, high = 3;
};

// gelu with the normal CDF Φ: (x·Φ(x))' = Φ(x) + x·φ(x). With tanh, u = k·(x + c·x³):
// (0.5·x·(1 + tanh u))' = 0.5·(1 + tanh u) + 0.5·x·(1 - tanh² u)·k·(1 + 3c·x²).
struct GeluDef {
  static constexpr std::string_view name = "gelu";
  static constexpr Saves saves = Saves::input;
  GeluApproximate approximate = GeluApproximate::none;
  static constexpr double kappa = 0.044715, k = M_SQRT2 * M_2_SQRTPI * 0.5;  // k = sqrt(2/π)
  std::string attributes() const {
    return approximate == GeluApproximate::none ? "approximate=none" : "approximate=tanh";
  }
  template <class T> T f(T x) const {
    return approximate == GeluApproximate::tanh ? f_of<true>(x) : f_of<false>(x);
  }
  template <class T> T df(T g, T x) const {
    return approximate == GeluApproximate::tanh ? df_of<true>(g, x) : df_of<false>(g, x);
  }
  template <bool Tanh, class T> static T f_of(T x) {
    if constexpr (!Tanh && std::same_as<T, float>) return detail::vm::gelu(x);  // one piece
    if constexpr (!Tanh) return x * T(0.5) * (1 + generic::erf(x * T(M_SQRT1_2)));
    const T inner = T(k) * (x + T(kappa) * x * x * x);
    return T(0.5) * x * (1 + generic::tanh(inner));
  }
  template <bool Tanh, class T> static T df_of(T g, T x) {
    if constexpr (!Tanh && std::same_as<T, float>) return g * detail::vm::gelu_grad(x);  // one exp
    if constexpr (!Tanh) {
      const T cdf = (generic::erf(x * Num<T>(M_SQRT1_2)) + 1) * Num<T>(0.5);
      const T pdf = generic::exp(x * x * Num<T>(-0.5)) * Num<T>(M_2_SQRTPI * M_SQRT1_2 * 0.5);
      return g * (cdf + x * pdf);
    }
    const T t = generic::tanh((x + x * x * x * Num<T>(kappa)) * Num<T>(k));
    const T d_inner = (x * x * Num<T>(3 * kappa) + 1) * Num<T>(k);
    return g * ((t + 1) * Num<T>(0.5) + x * Num<T>(0.5) * (1 - t * t) * d_inner);
  }
  /// body(this gelu with `approximate` a compile-time constant): a vectorised loop then
  /// computes one formula, where a select would compute both.
  template <class Body> decltype(auto) fixed(Body body) const;
  static constexpr double low = -3, high = 3;
  static std::vector<GeluDef> variants() { return {{GeluApproximate::none}, {GeluApproximate::tanh}}; }
};

template <bool Tanh>
struct GeluFixed : GeluDef {
  template <class T> T f(T x) const { return f_of<Tanh>(x); }
  template <class T> T df(T g, T x) const { return df_of<Tanh>(g, x); }
};
template <class Body>
decltype(auto) GeluDef::fixed(Body body) const {
  return approximate == GeluApproximate::tanh ? body(GeluFixed<true>{*this}) : body(GeluFixed<false>{*this});
}

// Gradient negative_slope at x = 0 (PyTorch: x > 0 ? grad : grad·slope).
struct LeakyReluDef {
  static constexpr std::string_view name = "leaky_relu";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::input;
  double negative_slope = 0.01;
  std::string attributes() const { return fmt::format("negative_slope={}", negative_slope); }
  template <class T> T f(T x) const { return x > 0 ? x : x * T(negative_slope); }
  template <class T> T df(T g, T, T b) const { return g * (b + (1 - b) * Num<T>(negative_slope)); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x > 0 ? T(1) : T(0); }
  static std::vector<LeakyReluDef> variants() { return {{0.01}, {0.2}, {-0.5}}; }
};

// elu'(x) = alpha·e^x for x <= 0 (alpha at 0, as PyTorch), 1 above; a NaN takes the upper
// piece (PyTorch's x <= 0 test). Its second derivative is alpha·e^x only for x < 0: PyTorch's
// double backward masks with x < 0, so at exactly 0 it is 0. Hence x·below(b) in the exponent:
// e^0 = 1 at the kink, with no gradient through it.
struct EluDef {
  static constexpr std::string_view name = "elu";
  static constexpr Saves saves = Saves::input;
  double alpha = 1.0;
  std::string attributes() const { return fmt::format("alpha={}", alpha); }
  template <class T> T f(T x) const { return x > 0 ? x : generic::expm1(x) * T(alpha); }
  template <class T> T df(T g, T x, T b) const {
    const T up = generic::above(b);
    return g * (up + (1 - up) * generic::exp(x * generic::below(b)) * Num<T>(alpha));
  }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "x = 0";
  template <class T> static T branch(T x) { return x < 0 ? T(-1) : (x == 0 ? T(0) : T(1)); }
  static std::vector<EluDef> variants() { return {{1.0}, {1.5}}; }
};

// Where beta·x > threshold softplus is x itself (gradient 1); elsewhere its derivative is
// sigmoid(beta·x). The pieces meet with a tiny jump at the threshold. As for elu, PyTorch's
// second derivative masks with beta·x < threshold: at exactly the threshold the gradient is
// sigmoid(threshold), a constant.
struct SoftplusDef {
  static constexpr std::string_view name = "softplus";
  static constexpr Saves saves = Saves::input;
  double beta = 1.0, threshold = 20.0;
  std::string attributes() const { return fmt::format("beta={}, threshold={}", beta, threshold); }
  template <class T> T f(T x) const {
    return x * T(beta) > T(threshold) ? x : generic::log1p(generic::exp(x * T(beta))) / T(beta);
  }
  template <class T> T df(T g, T x, T b) const {
    const T up = generic::above(b), down = generic::below(b);
    const T beta_x = x * down * Num<T>(beta) + (1 - down) * Num<T>(threshold);
    return g * (up + (1 - up) * generic::sigmoid(beta_x));
  }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = "beta*x = threshold";
  template <class T> T branch(T x) const {
    const T beta_x = x * T(beta);
    return beta_x > T(threshold) ? T(1) : (beta_x == T(threshold) ? T(0) : T(-1));
  }
  static std::vector<SoftplusDef> variants() { return {{1.0, 20.0}, {2.0, 3.0}}; }
};

// clamp and hardtanh: min(max(x, low), high) (NaN stays NaN; low > high gives high). The
// branch is -1 below, 1 above, 0 where the gradient passes: clamp includes the bounds,
// hardtanh excludes them, and a NaN gets no gradient from either (as PyTorch 1.13).
template <bool Inclusive>
struct BoundsDef {
  static constexpr std::string_view name = Inclusive ? "clamp" : "hardtanh";
  static constexpr bool cheap = true;
  static constexpr Saves saves = Saves::input;
  double low_bound = -std::numeric_limits<double>::infinity();
  double high_bound = std::numeric_limits<double>::infinity();
  std::string attributes() const {
    return fmt::format("{}={}, {}={}", Inclusive ? "min" : "min_val", low_bound,
                       Inclusive ? "max" : "max_val", high_bound);
  }
  template <class T> T f(T x) const { return std::min(std::max(x, T(low_bound)), T(high_bound)); }
  template <class T> T df(T g, T, T b) const { return generic::pass_where(g, 1 - b * b); }
  static constexpr double low = -2, high = 2;
  static constexpr std::string_view kinks = Inclusive ? "x = min or x = max" : "x = min_val or x = max_val";
  template <class T> T branch(T x) const {
    const bool passes = Inclusive ? x >= T(low_bound) && x <= T(high_bound)
                                  : x > T(low_bound) && x < T(high_bound);
    return passes ? T(0) : (x < T(low_bound) || x != x ? T(-1) : T(1));
  }
  static std::vector<BoundsDef> variants() {
    constexpr double inf = std::numeric_limits<double>::infinity();
    if constexpr (Inclusive) return {{-0.5, 1.0}, {0.3, inf}, {-inf, -0.2}, {0.5, -0.5}};
    else return {{-1.0, 1.0}, {-0.5, 1.2}};
  }
};
using ClampDef = BoundsDef<true>;
using HardtanhDef = BoundsDef<false>;

/// Whether some x[i], i < n, has |x[i]| ≥ bound ≥ 0 (or is NaN): one vectorised scan, on the
/// bit patterns (|x| ≥ bound exactly where |x|'s bits, as a non-negative integer, are at
/// least bound's; a NaN's are above inf's). A float compare with an OR of bools stayed a
/// scalar loop, half of sin's forward.
TAPEGRAD_MULTIVERSION bool any_large(const float* x, std::int64_t n, float bound) {
  const std::int32_t limit = std::bit_cast<std::int32_t>(bound);
  std::int32_t any = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    any |= std::int32_t((std::bit_cast<std::int32_t>(x[i]) & 0x7fffffff) >= limit);
  }
  return any != 0;
}

/// Whether Def is piecewise: df takes the branch, and the gradient checker is told where.
template <class Def>
concept Piecewise = requires(const Def def, double v) {
  Def::kinks;
  def.df(v, v, v);
};

template <class Def>
struct Unary {
  static constexpr std::string_view name = Def::name;
  /// Def::cheap: f is a few instructions, no vecmath polynomial (detail::map_unary streams
  /// such a map's large output on more CPUs).
  static constexpr bool kCheap = requires { requires Def::cheap; };
  static constexpr std::string_view kinks = [] {
    if constexpr (requires { Def::kinks; }) return Def::kinks;
    else return std::string_view{};
  }();
  Def def{};
  std::string attributes() const {
    if constexpr (requires { def.attributes(); }) return def.attributes();
    else return {};
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    return in[0].meta();
  }
  /// body(def), or body(a copy of def whose options are compile-time constants) where Def
  /// offers one (gelu).
  template <class Body>
  decltype(auto) fixed(Body body) const {
    if constexpr (requires { def.fixed(body); }) return def.fixed(body);
    else return body(def);
  }
  // The f32 kernels of sin and cos (Defs whose f takes Wide) are exact for |x| <
  // kTrigFastBelow only. A block with a larger argument (rare) is recomputed, while it is in
  // cache, by the Wide kernels, exact for |x| < kTrigExactBelow, and its arguments beyond that
  // (rarer still) one by one in double by libm.
  static constexpr bool kHasRange = requires(float v) { Def::template f<float, true>(v); };
  template <class T>
  auto exact_forward() const {
    return [d = def](const T* x, T* out, std::int64_t n) {
      if constexpr (kHasRange && std::same_as<T, float>) {
        using detail::vm::kTrigExactBelow, detail::vm::kTrigFastBelow;
        if (!any_large(x, n, kTrigFastBelow)) return;
        detail::map_loop(x, out, n, [d](float v) { return d.template f<float, true>(v); });
        if (!any_large(x, n, kTrigExactBelow)) return;
        for (std::int64_t i = 0; i < n; ++i) {
          if (!(std::abs(x[i]) < kTrigExactBelow)) out[i] = float(d.f(double(x[i])));
        }
      }
    };
  }
  template <class T>
  auto exact_vjp() const {
    return [d = def](const T* g, const T* x, T* out, std::int64_t n) {
      if constexpr (kHasRange && std::same_as<T, float>) {
        using detail::vm::kTrigExactBelow, detail::vm::kTrigFastBelow;
        if (!any_large(x, n, kTrigFastBelow)) return;
        detail::map_loop(g, x, out, n,
                         [d](float gv, float xv) { return d.template df<float, true>(gv, xv); });
        if (!any_large(x, n, kTrigExactBelow)) return;
        for (std::int64_t i = 0; i < n; ++i) {
          if (!(std::abs(x[i]) < kTrigExactBelow)) out[i] = float(d.df(double(g[i]), double(x[i])));
        }
      }
    };
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    Tensor out = detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      return fixed([&](auto d) {
        return detail::map_unary<T, kCheap>(in[0], [d](T v) { return d.f(v); }, exact_forward<T>());
      });
    });
    if constexpr (Def::saves == Saves::input) ctx.save(in[0]);
    if constexpr (Def::saves == Saves::output) ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor saved = Def::saves == Saves::nothing ? Tensor() : ctx.saved(0);
    if (is_grad_enabled()) {  // recorded (create_graph): the same df on tensors
      if constexpr (Piecewise<Def>) return {def.df(grad_out, saved, branch_of(saved))};
      else return {def.df(grad_out, saved)};
    }
    // Added straight into the gradient being summed for x, where there is one (the maps over
    // grad_out and the saved tensor; neg's, over grad_out alone, is a new tensor).
    const Tensor sum = Def::saves == Saves::nothing ? Tensor() : ctx.grad_sum(0);
    return {detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (Def::saves == Saves::nothing) {
        return detail::map_unary<T, kCheap>(grad_out, [d = def](T g) { return d.df(g, T(0)); });
      } else if constexpr (Piecewise<Def>) {
        return detail::map_binary_same<T>(grad_out, saved,
                                          [d = def](T g, T s) { return d.df(g, s, d.branch(s)); },
                                          detail::NoFixup{}, sum);
      } else {
        return fixed([&](auto d) {
          return detail::map_binary_same<T>(grad_out, saved, [d](T g, T s) { return d.df(g, s); },
                                            exact_vjp<T>(), sum);
        });
      }
    })};
  }
  // Which piece of f (and of f') each element took, from the input or, where it has the
  // same sign (relu), the output: for the gradient checker, and f' itself.
  Tensor branches(std::span<const Tensor> in, const Tensor& out) const
    requires requires { Def::kinks; }
  {
    return branch_of(Def::saves == Saves::output ? out : in[0]);
  }
  Tensor branch_of(const Tensor& saved) const {
    return detail::dispatch_floating(saved.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      return detail::map_unary<T, true>(saved, [d = def](T v) { return d.branch(v); });
    });
  }
  static std::vector<Sample> samples();
};

template <class Def>
Tensor unary(const Tensor& x, Def def = {}) {
  return apply(Unary<Def>{def}, {x});
}

template <class Def>
std::vector<Sample> Unary<Def>::samples() {
  // Kinked ops (abs, relu) sample away from their kink at 0.
  auto make = [](const Shape& s, std::uint64_t seed) {
    return Def::low < 0 ? detail::sample_away_from_zero(s, Def::low, Def::high, 0.05, seed)
                        : detail::sample_tensor(s, Def::low, Def::high, seed);
  };
  std::vector<Def> defs{Def{}};
  if constexpr (requires { Def::variants(); }) defs = Def::variants();
  std::vector<Sample> out;
  for (const Def& d : defs) {
    auto call = [d](const std::vector<Tensor>& in) { return unary<Def>(in[0], d); };
    std::string options;
    if constexpr (requires { d.attributes(); }) options = ", " + d.attributes();
    out.push_back({"[2, 3, 5]" + options, {make({2, 3, 5}, 21)}, call});
    out.push_back({"0-dim" + options, {make({}, 22)}, call});
  }
  return out;
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
Tensor log1p(const Tensor& x) { return unary<Log1pDef>(x); }
Tensor expm1(const Tensor& x) { return unary<Expm1Def>(x); }
Tensor sin(const Tensor& x) { return unary<SinDef>(x); }
Tensor cos(const Tensor& x) { return unary<CosDef>(x); }
Tensor erf(const Tensor& x) { return unary<ErfDef>(x); }
Tensor rsqrt(const Tensor& x) { return unary<RsqrtDef>(x); }
Tensor sign(const Tensor& x) { return unary<SignDef>(x); }
Tensor floor(const Tensor& x) { return unary<FloorDef>(x); }
Tensor round(const Tensor& x) { return unary<RoundDef>(x); }
Tensor silu(const Tensor& x) { return unary<SiluDef>(x); }
Tensor log_sigmoid(const Tensor& x) { return unary<LogSigmoidDef>(x); }
Tensor gelu(const Tensor& x, GeluApproximate approximate) {
  return unary<GeluDef>(x, {approximate});
}
Tensor leaky_relu(const Tensor& x, double negative_slope) {
  return unary<LeakyReluDef>(x, {negative_slope});
}
Tensor elu(const Tensor& x, double alpha) { return unary<EluDef>(x, {alpha}); }
Tensor softplus(const Tensor& x, double beta, double threshold) {
  return unary<SoftplusDef>(x, {beta, threshold});
}
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  if (!min && !max) {
    throw ValueError(fmt::format("clamp: at least one of min and max must be given (input {} {})",
                                 x.shape(), x.dtype()));
  }
  constexpr double inf = std::numeric_limits<double>::infinity();
  return unary<ClampDef>(x, {min.value_or(-inf), max.value_or(inf)});
}
Tensor hardtanh(const Tensor& x, double min_val, double max_val) {
  if (min_val > max_val) {
    throw ValueError(fmt::format("hardtanh: min_val must be <= max_val, got min_val={} > "
                                 "max_val={} (input {} {})", min_val, max_val, x.shape(), x.dtype()));
  }
  return unary<HardtanhDef>(x, {min_val, max_val});
}
Tensor operator-(const Tensor& x) { return neg(x); }

TAPEGRAD_BUILTIN_OPS(unary, Unary<NegDef>, Unary<ExpDef>, Unary<LogDef>, Unary<SqrtDef>,
                     Unary<AbsDef>, Unary<ReluDef>, Unary<SigmoidDef>, Unary<TanhDef>,
                     Unary<Log1pDef>, Unary<Expm1Def>, Unary<SinDef>, Unary<CosDef>,
                     Unary<ErfDef>, Unary<RsqrtDef>, Unary<SignDef>, Unary<FloorDef>,
                     Unary<RoundDef>, Unary<SiluDef>, Unary<LogSigmoidDef>, Unary<GeluDef>,
                     Unary<LeakyReluDef>, Unary<EluDef>, Unary<SoftplusDef>, Unary<ClampDef>,
                     Unary<HardtanhDef>)

}  // namespace tapegrad
