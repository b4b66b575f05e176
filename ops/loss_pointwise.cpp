// Element-wise losses of an input and a target of one shape, reduced by none, mean or sum
// (kl_div also by batchmean); g below is grad_out as each element's gradient (÷ count for
// mean). With d = input - target:
//   l1_loss:        |d|                                       grad_input = sgn(d) · g (0 at d = 0)
//   smooth_l1_loss: |d| < beta: d² / (2 beta), else |d| - beta / 2;  beta = 0 is l1_loss
//   huber_loss:     |d| < delta: d² / 2, else delta (|d| - delta / 2)
//     grad_input = d / beta · g (d · g) inside, sgn(d) · g (delta sgn(d) · g) outside; the
//     pieces agree at the boundary. Their second derivative there is 0, as PyTorch's
//     double backward (which tests |d| < beta strictly); grad_target the same of -d.
//     PyTorch's kernel tests d <= -beta first, so smooth_l1_loss with beta = 0 has gradient
//     -g at d = 0 (not l1_loss's 0): we follow it.
//   binary_cross_entropy_with_logits (x logits, t target, p pos_weight, w weight):
//     w · [(1 - t) x + (1 + (p - 1) t) · softplus(-x)], softplus(-x) = m + log(e^-m + e^(-x-m))
//     with m = max(-x, 0), PyTorch's stable form;
//     grad_x = w · ((p t + 1 - t) σ(x) - p t) · g,  grad_t = w · (-x + (p - 1) softplus(-x)) · g
//   kl_div (x log-probabilities, t target):  t (log t - x), 0 where t = 0 (xlogy), or with
//     log_target e^t (t - x);  grad_x = -t · g or -e^t · g;
//     grad_t = (log t + t/t - x) · g (nan at t = 0, as PyTorch 1.13's xlogy gives) or
//     e^t (t - x + 1) · g.
// Every VJP is public ops on the saved input and target with constant masks, so it is
// recorded under create_graph and differentiable again.
#include <cmath>

#include "ops/detail/loss.hpp"
#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::loss_grad;

enum class Distance { l1, smooth_l1, huber };

template <Distance Kind>
struct DistanceLoss {
  static constexpr std::string_view name =
      Kind == Distance::l1 ? "l1_loss" : Kind == Distance::smooth_l1 ? "smooth_l1_loss" : "huber_loss";
  static constexpr std::string_view kinks = "input - target = 0 and |input - target| = beta (delta)";
  Reduction reduction;
  double beta = 0;  // smooth_l1's beta, huber's delta; l1 has no quadratic piece
  std::string attributes() const {
    return fmt::format("reduction={}, {}={}", detail::reduction_name(reduction),
                       Kind == Distance::huber ? "delta" : "beta", beta);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_loss_pair(name, in[0], in[1]);
    if (Kind == Distance::smooth_l1 && !(beta >= 0)) {
      throw ValueError(fmt::format("smooth_l1_loss: beta must be >= 0, got {} (input {})", beta, in[0].shape()));
    }
    if (Kind == Distance::huber && !(beta > 0)) {
      throw ValueError(fmt::format("huber_loss: delta must be > 0, got {} (input {})", beta, in[0].shape()));
    }
    return {reduction == Reduction::none ? in[0].shape() : Shape{}, in[0].dtype()};
  }
  /// The loss of one difference; beta = 0 leaves only the linear piece.
  double value(double d) const {
    const double a = std::abs(d);
    if (a >= beta) return Kind == Distance::huber ? beta * (a - 0.5 * beta) : a - 0.5 * beta;
    return Kind == Distance::huber ? 0.5 * d * d : 0.5 * d * d / beta;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    ctx.save(in[1]);
    const DistanceLoss op = *this;
    return detail::reduce_loss(detail::map_values(name, in[0] - in[1], [op](auto d) { return op.value(d); }), reduction);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor d = ctx.saved(0) - ctx.saved(1);
    // f'(d) = slope · d inside (|d| < beta), scale · sgn(d) outside: two constant masks.
    const double slope = Kind == Distance::huber ? 1.0 : 1.0 / beta, scale = Kind == Distance::huber ? beta : 1.0;
    const double b = beta;
    const Tensor inside = detail::map_values(name, d, [b, slope](auto v) { return std::abs(v) < b ? slope : 0.0; });
    auto outside = [&](const Tensor& diff) {
      return detail::map_values(name, diff, [b, scale](auto v) {
        if (Kind == Distance::l1) return scale * static_cast<double>(detail::sign_of(v));
        return v <= -b ? -scale : v >= b ? scale : 0.0;  // PyTorch's order: -1 at 0 when beta = 0
      });
    };
    const Tensor g = loss_grad(grad_out, reduction, d.numel());
    // PyTorch differentiates the target by the same rule with the roles swapped (target -
    // input), which differs from -grad_input only at d = 0 with beta = 0: both get -g there.
    Tensor grad_input, grad_target;
    if (ctx.needs_input_grad(0)) grad_input = (d * inside + outside(d)) * g;
    if (ctx.needs_input_grad(1)) grad_target = (neg(d) * inside + outside(neg(d))) * g;
    return {grad_input, grad_target};
  }
  static std::vector<Sample> samples() {
    // input = target + d with every |d| away from 0 and from beta = 1 (the kinks).
    auto pair = [](std::uint64_t seed) {
      const Tensor target = detail::sample_tensor({2, 3}, -1, 1, seed);
      const Tensor d = from_vector(std::vector<double>{0.3, -0.4, 1.6, -2.1, 0.7, -1.3}, {2, 3}, DType::f64);
      return std::vector<Tensor>{(target.detach() + d).set_requires_grad(true), target};
    };
    auto with = [](Reduction r) {
      return [r](const std::vector<Tensor>& in) {
        if constexpr (Kind == Distance::l1) return l1_loss(in[0], in[1], r);
        else if constexpr (Kind == Distance::smooth_l1) return smooth_l1_loss(in[0], in[1], r, 1.0);
        else return huber_loss(in[0], in[1], r, 1.0);
      };
    };
    return {{"[2, 3] mean", pair(401), with(Reduction::mean)},
            {"[2, 3] sum", pair(402), with(Reduction::sum)},
            {"[2, 3] none", pair(403), with(Reduction::none)}};
  }
};

/// softplus(-x) = log(1 + e^-x) without overflow: m + log(e^-m + e^(-x-m)), m = max(-x, 0).
Tensor softplus_of_neg(const Tensor& x) {
  const Tensor m = relu(neg(x));
  return m + log(exp(neg(m)) + exp(neg(x) - m));
}

struct BceWithLogits {
  static constexpr std::string_view name = "binary_cross_entropy_with_logits";
  Tensor weight, pos_weight;  // constants, undefined when absent
  Reduction reduction;
  std::string attributes() const {
    return fmt::format("reduction={}, weight={}, pos_weight={}", detail::reduction_name(reduction),
                       weight.defined(), pos_weight.defined());
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_loss_pair(name, in[0], in[1]);
    for (const auto& [what, t] : {std::pair{"weight", weight}, std::pair{"pos_weight", pos_weight}}) {
      detail::check_loss_constant(name, what, t, in[0].dtype());
      if (t.defined() && detail::broadcast_shapes(name, t.shape(), in[0].shape()) != in[0].shape()) {
        throw ShapeError(fmt::format("{}: {} {} must broadcast to the input's shape {}", name, what,
                                     t.shape(), in[0].shape()));
      }
    }
    return {reduction == Reduction::none ? in[0].shape() : Shape{}, in[0].dtype()};
  }
  Tensor weighted(const Tensor& l) const { return weight.defined() ? l * weight : l; }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor &x = in[0], &t = in[1];
    ctx.save(x);
    ctx.save(t);
    const Tensor log_weight = pos_weight.defined() ? (pos_weight - 1.0) * t + 1.0 : Tensor();
    const Tensor sp = softplus_of_neg(x);
    return detail::reduce_loss(weighted((1.0 - t) * x + (log_weight.defined() ? log_weight * sp : sp)), reduction);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0), t = ctx.saved(1);
    const Tensor g = loss_grad(grad_out, reduction, x.numel());
    Tensor grad_x, grad_t;
    if (ctx.needs_input_grad(0)) {
      const Tensor pt = pos_weight.defined() ? pos_weight * t : t;
      grad_x = weighted(((pt + 1.0 - t) * sigmoid(x) - pt) * g);
    }
    if (ctx.needs_input_grad(1)) {
      grad_t = neg(x);
      if (pos_weight.defined()) grad_t = grad_t + (pos_weight - 1.0) * softplus_of_neg(x);
      grad_t = weighted(grad_t * g);
    }
    return {grad_x, grad_t};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    const Tensor w = sample_tensor({3}, 0.5, 1.5, 411, false), pw = sample_tensor({3}, 0.5, 2.5, 412, false);
    auto with = [](Tensor wt, Tensor pwt, Reduction r) {
      return [wt, pwt, r](const std::vector<Tensor>& in) {
        return binary_cross_entropy_with_logits(in[0], in[1], wt, pwt, r);
      };
    };
    auto args = [](std::uint64_t seed) {
      return std::vector<Tensor>{sample_tensor({4, 3}, -3, 3, seed), sample_tensor({4, 3}, 0, 1, seed + 1)};
    };
    return {{"[4, 3] mean", args(413), with({}, {}, Reduction::mean)},
            {"[4, 3] sum, weight and pos_weight [3]", args(415), with(w, pw, Reduction::sum)},
            {"[4, 3] none, pos_weight [3]", args(417), with({}, pw, Reduction::none)}};
  }
};

struct KlDiv {
  static constexpr std::string_view name = "kl_div";
  KlDivReduction reduction;
  bool log_target = false;
  static std::string_view reduction_name(KlDivReduction r) {
    switch (r) {
      case KlDivReduction::none: return "none";
      case KlDivReduction::batchmean: return "batchmean";
      case KlDivReduction::sum: return "sum";
      case KlDivReduction::mean: return "mean";
    }
    return "?";
  }
  std::string attributes() const {
    return fmt::format("reduction={}, log_target={}", reduction_name(reduction), log_target);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_loss_pair(name, in[0], in[1]);
    return {reduction == KlDivReduction::none ? in[0].shape() : Shape{}, in[0].dtype()};
  }
  /// What each element's loss is divided by: numel for mean, the batch (dim 0) for batchmean.
  static double divisor(KlDivReduction r, const Shape& shape) {
    if (r == KlDivReduction::mean) return static_cast<double>(shape.numel());
    if (r == KlDivReduction::batchmean && !shape.empty()) return static_cast<double>(shape[0]);
    return 1.0;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor &x = in[0], &t = in[1];
    ctx.save(x);
    ctx.save(t);
    const bool lt = log_target;
    const Tensor l = detail::map_values(name, t, x, [lt](auto tv, auto xv) {
      if (lt) return std::exp(tv) * (tv - xv);
      return (tv == 0 ? decltype(tv)(0) : tv * std::log(tv)) - tv * xv;  // xlogy(t, t) - t x
    });
    if (reduction == KlDivReduction::none) return l;
    return sum(l) / divisor(reduction, x.shape());
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0), t = ctx.saved(1);
    const Tensor g = reduction == KlDivReduction::none ? grad_out : grad_out / divisor(reduction, x.shape());
    const Tensor et = log_target ? exp(t) : Tensor();
    Tensor grad_x, grad_t;
    if (ctx.needs_input_grad(0)) grad_x = neg(log_target ? et : t) * g;
    if (ctx.needs_input_grad(1)) grad_t = (log_target ? et * (t - x + 1.0) : log(t) + t / t - x) * g;
    return {grad_x, grad_t};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto args = [](std::uint64_t seed, double low, double high) {
      return std::vector<Tensor>{sample_tensor({3, 4}, -3, -0.1, seed), sample_tensor({3, 4}, low, high, seed + 1)};
    };
    auto with = [](KlDivReduction r, bool lt) {
      return [r, lt](const std::vector<Tensor>& in) { return kl_div(in[0], in[1], r, lt); };
    };
    return {{"[3, 4] batchmean", args(421, 0.1, 1), with(KlDivReduction::batchmean, false)},
            {"[3, 4] none", args(423, 0.1, 1), with(KlDivReduction::none, false)},
            {"[3, 4] mean, log_target", args(425, -3, 0), with(KlDivReduction::mean, true)}};
  }
};

}  // namespace

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return apply(DistanceLoss<Distance::l1>{reduction, 0.0}, {input, target});
}
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  return apply(DistanceLoss<Distance::smooth_l1>{reduction, beta}, {input, target});
}
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction, double delta) {
  return apply(DistanceLoss<Distance::huber>{reduction, delta}, {input, target});
}
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const Tensor& weight,
                                        const Tensor& pos_weight, Reduction reduction) {
  return apply(BceWithLogits{weight, pos_weight, reduction}, {input, target});
}
Tensor kl_div(const Tensor& input, const Tensor& target, KlDivReduction reduction, bool log_target) {
  return apply(KlDiv{reduction, log_target}, {input, target});
}

TAPEGRAD_BUILTIN_OPS(loss_pointwise, DistanceLoss<Distance::l1>, DistanceLoss<Distance::smooth_l1>,
                     DistanceLoss<Distance::huber>, BceWithLogits, KlDiv)

}  // namespace tapegrad
