// Ops between a tensor and a number c (which takes the tensor's dtype):
//   add_scalar x + c, mul_scalar x * c, div_scalar x / c, rsub_scalar c - x,
//   rdiv_scalar c / x, pow x^c.
// They keep the number as an attribute instead of making a 0-dim tensor, so a scalar
// step costs one output allocation.
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

TensorMeta unary_meta(std::string_view op, std::span<const Tensor> in) {
  detail::check_floating(op, in[0]);
  return in[0].meta();
}

/// Cheap: f is one arithmetic instruction (map_unary); pow is not.
template <bool Cheap = true, class F>
Tensor scalar_forward(std::string_view op, const Tensor& x, double c, F f) {
  return detail::dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const auto cv = static_cast<T>(c);
    return detail::map_unary<T, Cheap>(x, [cv, f](T v) { return static_cast<T>(f(v, cv)); });
  });
}

std::vector<Sample> scalar_samples(Tensor (*fn)(const Tensor&, double), double c, double low) {
  auto call = [fn, c](const std::vector<Tensor>& in) { return fn(in[0], c); };
  return {{fmt::format("[2, 3, 4], c={}", c), {detail::sample_tensor({2, 3, 4}, low, 2, 11)}, call},
          {fmt::format("0-dim, c={}", c), {detail::sample_tensor({}, low, 2, 12)}, call}};
}

struct AddScalar {
  static constexpr std::string_view name = "add_scalar";
  double c;
  std::string attributes() const { return fmt::format("c={}", c); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return scalar_forward(name, in[0], c, [](auto v, auto k) { return v + k; });
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {grad_out}; }
  static std::vector<Sample> samples() {
    return scalar_samples([](const Tensor& x, double k) { return x + k; }, 0.75, -2);
  }
};

struct MulScalar {
  static constexpr std::string_view name = "mul_scalar";
  double c;
  std::string attributes() const { return fmt::format("c={}", c); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return scalar_forward(name, in[0], c, [](auto v, auto k) { return v * k; });
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {grad_out * c}; }
  static std::vector<Sample> samples() {
    return scalar_samples([](const Tensor& x, double k) { return x * k; }, -1.5, -2);
  }
};

struct DivScalar {
  static constexpr std::string_view name = "div_scalar";
  double c;
  std::string attributes() const { return fmt::format("c={}", c); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return scalar_forward(name, in[0], c, [](auto v, auto k) { return v / k; });
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {grad_out / c}; }
  static std::vector<Sample> samples() {
    return scalar_samples([](const Tensor& x, double k) { return x / k; }, 3.0, -2);
  }
};

struct RSubScalar {
  static constexpr std::string_view name = "rsub_scalar";
  double c;
  std::string attributes() const { return fmt::format("c={}", c); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return scalar_forward(name, in[0], c, [](auto v, auto k) { return k - v; });
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {neg(grad_out)}; }
  static std::vector<Sample> samples() {
    return scalar_samples([](const Tensor& x, double k) { return k - x; }, 0.5, -2);
  }
};

struct RDivScalar {
  static constexpr std::string_view name = "rdiv_scalar";
  double c;
  std::string attributes() const { return fmt::format("c={}", c); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    Tensor out = scalar_forward(name, in[0], c, [](auto v, auto k) { return k / v; });
    ctx.save(in[0]);
    ctx.save(out);
    return out;
  }
  // d(c/x)/dx = -c/x² = -out/x.
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {neg(grad_out * ctx.saved(1) / ctx.saved(0))};
  }
  static std::vector<Sample> samples() {
    return scalar_samples([](const Tensor& x, double k) { return k / x; }, 2.0, 0.5);
  }
};

struct Pow {
  static constexpr std::string_view name = "pow";
  double exponent;
  std::string attributes() const { return fmt::format("exponent={}", exponent); }
  TensorMeta infer(std::span<const Tensor> in) const { return unary_meta(name, in); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    return scalar_forward<false>(name, in[0], exponent, [](auto v, auto k) { return std::pow(v, k); });
  }
  // d(x^e)/dx = e * x^(e-1); e = 0 gives 0 everywhere (PyTorch's rule, no 0 * inf).
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (exponent == 0.0) return {zeros_like(grad_out)};
    return {grad_out * (pow(ctx.saved(0), exponent - 1.0) * exponent)};
  }
  static std::vector<Sample> samples() {
    auto s = scalar_samples([](const Tensor& x, double e) { return pow(x, e); }, 3.0, -2);
    auto frac = scalar_samples([](const Tensor& x, double e) { return pow(x, e); }, -1.5, 0.5);
    s.insert(s.end(), frac.begin(), frac.end());
    return s;
  }
};

}  // namespace

Tensor add(const Tensor& a, double b) { return apply(AddScalar{b}, {a}); }
Tensor sub(const Tensor& a, double b) { return apply(AddScalar{-b}, {a}); }
Tensor mul(const Tensor& a, double b) { return apply(MulScalar{b}, {a}); }
Tensor div(const Tensor& a, double b) { return apply(DivScalar{b}, {a}); }
Tensor rsub(const Tensor& a, double b) { return apply(RSubScalar{b}, {a}); }
Tensor rdiv(const Tensor& a, double b) { return apply(RDivScalar{b}, {a}); }
Tensor pow(const Tensor& x, double exponent) { return apply(Pow{exponent}, {x}); }

Tensor operator+(const Tensor& a, double b) { return add(a, b); }
Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return div(a, b); }
Tensor operator+(double a, const Tensor& b) { return add(b, a); }
Tensor operator-(double a, const Tensor& b) { return rsub(b, a); }
Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
Tensor operator/(double a, const Tensor& b) { return rdiv(b, a); }

TAPEGRAD_BUILTIN_OPS(scalar, AddScalar, MulScalar, DivScalar, RSubScalar, RDivScalar, Pow)

}  // namespace tapegrad
