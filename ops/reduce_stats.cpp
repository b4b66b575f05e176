// Statistical reductions over dims (empty dims: every element; keepdim keeps them as 1),
// with N the number of elements each output reduces, x̄ their mean, g = grad_out:
//   var:       Σ (x - x̄)² / max(0, N - correction)     grad_x = 2 (x - x̄) / (N - correction) · g
//   std:       sqrt(var)                                 grad_x = (x - x̄) / ((N - correction) · std) · g,
//              0 where std = 0 (PyTorch masks that 0/0 to 0)
//   logsumexp: m + log Σ exp(x - m), m = max (0 where m is ±inf: an all -inf row gives -inf,
//              never nan)                                grad_x = exp(x - out) · g (nan on an all
//              -inf row, as PyTorch's)
//   norm p=1:  Σ |x|                                     grad_x = sgn(x) · g  (0 at x = 0)
//   norm p=2:  sqrt(Σ x²)                                grad_x = g · x / out (0 where out = 0)
//   norm p=∞:  max |x|                                   grad_x = sgn(x) · g split evenly among
//              the tied maxima of |x| (0 on an all-zero row, since sgn(0) = 0)
// Every VJP is written with public ops on the saved input and output, and the masks are
// constants, so each is recorded under create_graph and differentiable again.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::DimMask;

/// The arguments every reduction here shares: the dims and keepdim.
struct Reducing {
  std::vector<std::int64_t> dims;  // empty: all
  bool keepdim = false;
  DimMask mask(std::string_view op, const Shape& shape) const {
    return detail::reduced_mask(op, shape, dims);
  }
  TensorMeta meta(std::string_view op, const Tensor& x) const {
    detail::check_floating(op, x);
    return {detail::reduced_shape(x.shape(), mask(op, x.shape()), keepdim), x.dtype()};
  }
  std::string describe() const { return fmt::format("dims=[{}], keepdim={}", fmt::join(dims, ", "), keepdim); }
  /// A gradient of the output's shape, as the keepdim shape (it then broadcasts against x).
  Tensor unsqueezed(std::string_view op, const Tensor& t, const Shape& in_shape) const {
    return reshape(t, detail::keepdim_shape(in_shape, mask(op, in_shape)));
  }
};

/// masked_zero(x, mask): x with 0 where mask is 1 (mask a constant of x's shape), PyTorch's
/// masked_fill(mask, 0). Its VJP is itself applied to grad_out, so the masked elements pass
/// no gradient back, and a division before it then gives 0/0 = nan in the second
/// derivative exactly where PyTorch's does (std and the 2-norm at 0).
struct MaskedZero {
  static constexpr std::string_view name = "masked_zero";
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    detail::check_meta(name, "mask", in[1], in[0].meta());
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[1]);
    return detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      return detail::map_binary_same<T>(in[0], in[1], [](T v, T m) { return m != T(0) ? T(0) : v; });
    });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {apply(MaskedZero{}, {grad_out, ctx.saved(0)}), Tensor()};
  }
  static std::vector<Sample> samples() {
    auto fn = [](const std::vector<Tensor>& in) { return apply(MaskedZero{}, {in[0], in[1]}); };
    return {{"[2, 3]", {detail::sample_tensor({2, 3}, -1, 1, 300),
                        from_vector(std::vector<double>{0, 1, 0, 0, 1, 0}, {2, 3}, DType::f64)}, fn},
            {"[4], nothing masked", {detail::sample_tensor({4}, -1, 1, 299), zeros({4}, DType::f64)}, fn}};
  }
};

/// num / den (den broadcast), then 0 where den = 0: PyTorch's (num / den).masked_fill_(den ==
/// 0, 0) in the gradients of std and the 2-norm.
Tensor div_or_zero(const Tensor& num, const Tensor& den) {
  const Tensor quotient = num / den;
  const Tensor den_is_zero = detail::map_values("masked_zero", den, [](auto v) { return v == 0 ? 1 : 0; });
  return apply(MaskedZero{}, {quotient, detail::broadcast_to(den_is_zero, quotient.shape())});
}

/// x - x̄ over the reduced dims, recorded when grad mode is on.
Tensor centered(const Tensor& x, const DimMask& mask) {
  const auto n = static_cast<double>(detail::reduced_count(x.shape(), mask));
  return x - detail::sum_over(x, mask, true) / n;
}

template <bool Std>
struct Variance {
  static constexpr std::string_view name = Std ? "std" : "var";
  Reducing r;
  std::int64_t correction = 1;
  std::string attributes() const { return fmt::format("{}, correction={}", r.describe(), correction); }
  TensorMeta infer(std::span<const Tensor> in) const { return r.meta(name, in[0]); }
  double dof(const Shape& shape) const {
    return static_cast<double>(detail::reduced_count(shape, r.mask(name, shape)) - correction);
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const DimMask mask = r.mask(name, x.shape());
    const Tensor d = centered(x, mask);
    const Tensor variance = detail::sum_over(d * d, mask, r.keepdim) / std::max(0.0, dof(x.shape()));
    Tensor out = Std ? sqrt(variance) : variance;
    ctx.save(x);
    ctx.save(Std ? out : Tensor());
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    const Tensor d = centered(x, r.mask(name, x.shape()));
    const double n = dof(x.shape());
    if constexpr (Std) return {d * r.unsqueezed(name, div_or_zero(grad_out, ctx.saved(1) * n), x.shape())};
    else return {d * r.unsqueezed(name, grad_out * (2.0 / n), x.shape())};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto with = [](std::vector<std::int64_t> dims, std::int64_t c, bool keep) {
      return [dims, c, keep](const std::vector<Tensor>& in) {
        return Std ? tapegrad::std(in[0], dims, c, keep) : var(in[0], dims, c, keep);
      };
    };
    return {{"all of [3, 4]", {sample_tensor({3, 4}, -1, 1, 301)}, with({}, 1, false)},
            {"dims [0, 2] of [2, 3, 4], correction 0", {sample_tensor({2, 3, 4}, -1, 1, 302)}, with({0, 2}, 0, false)},
            {"dim -1 keepdim of [3, 5]", {sample_tensor({3, 5}, -1, 1, 303)}, with({-1}, 1, true)}};
  }
};

struct LogSumExp {
  static constexpr std::string_view name = "logsumexp";
  Reducing r;
  std::string attributes() const { return r.describe(); }
  TensorMeta infer(std::span<const Tensor> in) const { return r.meta(name, in[0]); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor rows = detail::reduce_rows(in[0], r.mask(name, in[0].shape()));
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t width = rows.shape()[1];
      for (std::int64_t j = 0; j < rows.shape()[0]; ++j) {
        const T* row = rows.data<T>() + j * width;
        T m = -std::numeric_limits<T>::infinity();
        for (std::int64_t k = 0; k < width; ++k) m = std::max(m, row[k]);
        if (std::isinf(m)) m = 0;  // exp(x - m) would be nan for an all ±inf row
        T total = 0;
        for (std::int64_t k = 0; k < width; ++k) total += std::exp(row[k] - m);
        out.data<T>()[j] = std::log(total) + m;
      }
    });
    ctx.save(in[0]);
    ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    const Shape& s = x.shape();
    return {exp(x - r.unsqueezed(name, ctx.saved(1), s)) * r.unsqueezed(name, grad_out, s)};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    return {{"dim 1 of [3, 5]", {sample_tensor({3, 5}, -3, 3, 311)},
             [](const auto& in) { return logsumexp(in[0], {1}); }},
            {"dims [0, -1] keepdim of [2, 3, 4]", {sample_tensor({2, 3, 4}, -3, 3, 312)},
             [](const auto& in) { return logsumexp(in[0], {0, -1}, true); }}};
  }
};

struct Norm {
  static constexpr std::string_view name = "norm";
  static constexpr std::string_view kinks = "x = 0 (p = 1), ties of |x| (p = inf)";
  double p = 2;
  Reducing r;
  std::string attributes() const { return fmt::format("p={}, {}", p, r.describe()); }
  TensorMeta infer(std::span<const Tensor> in) const {
    if (p != 1 && p != 2 && !(std::isinf(p) && p > 0)) {
      throw ValueError(fmt::format("norm: p = {} is not supported: p must be 1, 2 or inf (input {})",
                                   p, in[0].defined() ? to_string(in[0].shape()) : "undefined"));
    }
    return r.meta(name, in[0]);
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const DimMask mask = r.mask(name, x.shape());
    Tensor out = p == 1   ? detail::sum_over(abs(x), mask, r.keepdim)
                 : p == 2 ? sqrt(detail::sum_over(x * x, mask, r.keepdim))
                          : amax(abs(x), r.dims, r.keepdim);
    ctx.save(x);
    ctx.save(out);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    const Shape& s = x.shape();
    // PyTorch masks x / norm, not grad_out / norm: its second derivative is nan in x, not in
    // grad_out, on an all-zero group.
    if (p == 2) return {r.unsqueezed(name, grad_out, s) * div_or_zero(x, r.unsqueezed(name, ctx.saved(1), s))};
    Tensor weights = detail::map_values(name, x, [](auto v) { return detail::sign_of(v); });
    if (p != 1) {
      NoGradGuard constant;
      weights = weights * detail::tie_weights(name, abs(x), r.unsqueezed(name, ctx.saved(1), s), r.mask(name, s));
    }
    return {r.unsqueezed(name, grad_out, s) * weights};
  }
  // Which piece each element took: its sign, and for p = inf whether it is a maximum.
  Tensor branches(std::span<const Tensor> in, const Tensor& out) const {
    const Tensor signs = detail::map_values(name, in[0], [](auto v) { return detail::sign_of(v); });
    if (p != std::numeric_limits<double>::infinity()) return signs;
    const Tensor hit = detail::map_values(name, abs(in[0]), r.unsqueezed(name, out, in[0].shape()),
                                          [](auto v, auto m) { return v == m ? 1 : 0; });
    return signs + hit * 2.0;
  }
  static std::vector<Sample> samples() {
    using detail::sample_away_from_zero;
    auto with = [](double order, std::vector<std::int64_t> dims, bool keep) {
      return [order, dims, keep](const std::vector<Tensor>& in) { return norm(in[0], order, dims, keep); };
    };
    const double inf = std::numeric_limits<double>::infinity();
    return {{"p 1, all of [3, 4]", {sample_away_from_zero({3, 4}, -2, 2, 0.2, 321)}, with(1, {}, false)},
            {"p 2, dim 1 of [3, 5]", {sample_away_from_zero({3, 5}, -2, 2, 0.2, 322)}, with(2, {1}, false)},
            {"p 2, all of [2, 3]", {sample_away_from_zero({2, 3}, -2, 2, 0.2, 323)}, with(2, {}, false)},
            {"p inf, dims [0, 2] keepdim of [2, 3, 4]", {sample_away_from_zero({2, 3, 4}, -2, 2, 0.2, 324)},
             with(inf, {0, 2}, true)}};
  }
};

}  // namespace

Tensor var(const Tensor& x, const std::vector<std::int64_t>& dims, std::int64_t correction, bool keepdim) {
  return apply(Variance<false>{{dims, keepdim}, correction}, {x});
}
Tensor std(const Tensor& x, const std::vector<std::int64_t>& dims, std::int64_t correction, bool keepdim) {
  return apply(Variance<true>{{dims, keepdim}, correction}, {x});
}
Tensor logsumexp(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  return apply(LogSumExp{{dims, keepdim}}, {x});
}
Tensor norm(const Tensor& x, double p, const std::vector<std::int64_t>& dims, bool keepdim) {
  return apply(Norm{p, {dims, keepdim}}, {x});
}

TAPEGRAD_BUILTIN_OPS(reduce_stats, MaskedZero, Variance<false>, Variance<true>, LogSumExp, Norm)

}  // namespace tapegrad
