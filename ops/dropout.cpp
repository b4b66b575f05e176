// dropout in training: out = x * mask, with mask_i = 1/(1-p) with probability 1-p and 0
// otherwise (drawn from the global generator); grad_x = grad_out * mask. In eval, or with
// p = 0, it is the identity and records nothing. p = 1 zeroes everything.
#include "autograd/random.hpp"
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

struct Dropout {
  static constexpr std::string_view name = "dropout";
  double p;
  std::string attributes() const { return fmt::format("p={}", p); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    std::vector<double> u(static_cast<std::size_t>(x.numel()));
    detail::fill_uniform(u.data(), x.numel(), 0.0, 1.0);
    const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    Tensor mask = detail::make_tensor(x.meta());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      T* m = mask.data<T>();
      for (std::int64_t i = 0; i < x.numel(); ++i) {
        m[static_cast<std::size_t>(i)] = u[static_cast<std::size_t>(i)] < p ? T(0) : static_cast<T>(keep_scale);
      }
    });
    ctx.save(mask);
    return x * mask;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) { return {grad_out * ctx.saved(0)}; }
  static std::vector<Sample> samples() {
    // The checker re-runs fn for every finite difference: reseed so the mask repeats.
    return {{"[4, 6] p=0.3", {detail::sample_tensor({4, 6}, -1, 1, 101)}, [](const auto& in) {
               manual_seed(7);
               return dropout(in[0], 0.3, true);
             }}};
  }
};

}  // namespace

Tensor dropout(const Tensor& x, double p, bool train) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw ValueError(fmt::format("dropout: probability p must be in [0, 1], got {}", p));
  }
  if (!x.defined()) throw ValueError("dropout: input is an undefined tensor");
  if (!train || p == 0.0) return x;
  return apply(Dropout{p}, {x});
}

TAPEGRAD_BUILTIN_OPS(dropout, Dropout)

}  // namespace tapegrad
