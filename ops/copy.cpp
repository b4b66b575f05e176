// clone (a copy of the data; gradient passes through unchanged) and to(dtype) (a
// conversion; between f32 and f64 the gradient is converted back to the input's dtype).
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

struct Clone {
  static constexpr std::string_view name = "clone";
  TensorMeta infer(std::span<const Tensor> in) const {
    if (!in[0].defined()) throw ValueError("clone: input is an undefined tensor");
    return in[0].meta();
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) { return detail::copy_data(in[0]); }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {grad_out}; }
  static std::vector<Sample> samples() {
    return {{"[2, 3]", {detail::sample_tensor({2, 3}, -1, 1, 51)},
             [](const auto& in) { return in[0].clone() * 2.0; }}};
  }
};

Tensor convert(const Tensor& x, DType dtype) {
  Tensor out = detail::make_tensor(x.shape(), dtype);
  detail::dispatch_all(x.dtype(), [&](auto from) {
    detail::dispatch_all(dtype, [&](auto to) {
      using S = decltype(from);
      using T = decltype(to);
      const S* p = x.data<S>();
      T* q = out.data<T>();
      for (std::int64_t i = 0; i < x.numel(); ++i) q[i] = static_cast<T>(p[i]);
    });
  });
  return out;
}

struct To {
  static constexpr std::string_view name = "to";
  DType dtype;
  std::string attributes() const { return fmt::format("dtype={}", dtype); }
  TensorMeta infer(std::span<const Tensor> in) const {
    if (!in[0].defined()) throw ValueError("to: input is an undefined tensor");
    return {in[0].shape(), dtype};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) { return convert(in[0], dtype); }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {grad_out.to(ctx.input(0).dtype)};
  }
  static std::vector<Sample> samples() {
    return {{"f64 -> f32 -> f64 [2, 3]", {detail::sample_tensor({2, 3}, -1, 1, 52)},
             [](const auto& in) { return in[0].to(DType::f32).to(DType::f64) * 3.0; },
             // f32 rounding (2^-24 relative) divided by the step must stay below atol.
             1e-2, 1e-4, 1e-3}};
  }
};

}  // namespace

Tensor Tensor::clone() const { return apply(Clone{}, {*this}); }

Tensor Tensor::to(DType dtype) const {
  if (!defined()) throw ValueError("to: input is an undefined tensor");
  if (dtype == this->dtype()) return *this;
  return apply(To{dtype}, {*this});
}

TAPEGRAD_BUILTIN_OPS(copy, Clone, To)

}  // namespace tapegrad
