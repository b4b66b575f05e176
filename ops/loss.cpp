// Losses.
//   nll_loss: logp [N, C], target [N] (i64 in [0, C)):  l_n = -logp[n, target[n]],
//     reduced by mean (Σ l_n / N), sum, or none ([N]).
//     grad_logp[n, target[n]] = -grad_out (/ N for mean), 0 elsewhere.
//   mse_loss: l = (a - b)², reduced likewise; grad_a = 2(a - b)·grad_out (/ numel for mean),
//     grad_b = -grad_a.
//   cross_entropy = nll_loss(log_softmax(logits, 1), target).
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

std::string_view reduction_name(Reduction r) {
  switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
  }
  return "?";
}

struct NllLoss {
  static constexpr std::string_view name = "nll_loss";
  Reduction reduction;
  std::string attributes() const { return fmt::format("reduction={}", reduction_name(reduction)); }
  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& logp = in[0];
    const Tensor& target = in[1];
    detail::check_floating(name, logp, "logp");
    if (!target.defined() || target.dtype() != DType::i64) {
      throw DTypeError(fmt::format("nll_loss: target must be an i64 tensor of class indices, got {}",
                                   target.defined() ? fmt::format("{} {}", target.shape(), target.dtype())
                                                    : std::string("undefined")));
    }
    if (logp.dim() != 2 || target.dim() != 1 || target.shape()[0] != logp.shape()[0]) {
      throw ShapeError(fmt::format("nll_loss: expects logp [N, C] and target [N], got logp {} "
                                   "and target {}", logp.shape(), target.shape()));
    }
    const std::int64_t classes = logp.shape()[1];
    const auto* t = target.data<std::int64_t>();
    for (std::int64_t n = 0; n < target.numel(); ++n) {
      if (t[n] < 0 || t[n] >= classes) {
        throw ValueError(fmt::format("nll_loss: target[{}] = {} is not a class index in [0, {})",
                                     n, t[n], classes));
      }
    }
    return {reduction == Reduction::none ? target.shape() : Shape{}, logp.dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& logp = in[0];
    const Tensor& target = in[1];
    ctx.save(target);
    const std::int64_t batch = logp.shape()[0], classes = logp.shape()[1];
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(logp.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* p = logp.data<T>();
      const auto* t = target.data<std::int64_t>();
      T* o = out.data<T>();
      T total = 0;
      for (std::int64_t n = 0; n < batch; ++n) {
        const T l = -p[n * classes + t[n]];
        if (reduction == Reduction::none) o[n] = l;
        total += l;
      }
      // The mean over an empty batch is nan (0/0), as in PyTorch.
      if (reduction == Reduction::sum) o[0] = total;
      if (reduction == Reduction::mean) o[0] = total / static_cast<T>(batch);
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& m = ctx.input(0);
    const Tensor target = ctx.saved(0);
    const std::int64_t batch = m.shape[0], classes = m.shape[1];
    if (is_grad_enabled()) {  // recorded (create_graph): -grad_out at the targets, as ops
      Tensor onehot = zeros(m.shape, m.dtype);  // a constant: 1 at each target
      detail::dispatch_floating(m.dtype, name, [&](auto tag) {
        using T = decltype(tag);
        T* p = onehot.data<T>();
        const auto* t = target.data<std::int64_t>();
        for (std::int64_t n = 0; n < batch; ++n) p[n * classes + t[n]] = T(1);
      });
      const Tensor g = reduction == Reduction::none   ? reshape(grad_out, {batch, 1})
                       : reduction == Reduction::mean ? grad_out / static_cast<double>(batch)
                                                      : grad_out;
      return {-(onehot * g), Tensor()};
    }
    Tensor grad = zeros(m.shape, m.dtype);
    detail::dispatch_floating(m.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      const auto* t = target.data<std::int64_t>();
      T* pg = grad.data<T>();
      const T scale = reduction == Reduction::mean ? T(1) / static_cast<T>(batch) : T(1);
      for (std::int64_t n = 0; n < batch; ++n) {
        pg[n * classes + t[n]] = -(reduction == Reduction::none ? g[n] : g[0] * scale);
      }
    });
    return {grad, Tensor()};
  }
  static std::vector<Sample> samples() {
    const Tensor target = from_vector(std::vector<std::int64_t>{2, 0, 4, 2}, {4});
    auto with = [target](Reduction r) {
      return [target, r](const std::vector<Tensor>& in) { return nll_loss(in[0], target, r); };
    };
    auto logp = [] { return detail::sample_tensor({4, 5}, -3, 0, 91); };
    return {{"[4, 5] mean", {logp()}, with(Reduction::mean)},
            {"[4, 5] sum", {logp()}, with(Reduction::sum)},
            {"[4, 5] none", {logp()}, with(Reduction::none)},
            {"cross_entropy [4, 5]", {detail::sample_tensor({4, 5}, -3, 3, 92)},
             [target](const std::vector<Tensor>& in) { return cross_entropy(in[0], target); }}};
  }
};

struct MseLoss {
  static constexpr std::string_view name = "mse_loss";
  Reduction reduction;
  std::string attributes() const { return fmt::format("reduction={}", reduction_name(reduction)); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_same_floating(name, in[0], in[1]);
    if (in[0].shape() != in[1].shape()) {
      throw ShapeError(fmt::format("mse_loss: input {} and target {} must have the same shape",
                                   in[0].shape(), in[1].shape()));
    }
    return {reduction == Reduction::none ? in[0].shape() : Shape{}, in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor diff = in[0] - in[1];
    // The inputs, not diff: a VJP recorded for create_graph must see how diff depends on them.
    ctx.save(in[0]);
    ctx.save(in[1]);
    const Tensor sq = diff * diff;
    if (reduction == Reduction::none) return sq;
    return reduction == Reduction::sum ? sum(sq) : mean(sq);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor diff = ctx.saved(0) - ctx.saved(1);
    const double scale = reduction == Reduction::mean ? 2.0 / static_cast<double>(diff.numel()) : 2.0;
    const Tensor grad_a = diff * grad_out * scale;  // grad_out broadcasts when reduced
    return {ctx.needs_input_grad(0) ? grad_a : Tensor(),
            ctx.needs_input_grad(1) ? neg(grad_a) : Tensor()};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto with = [](Reduction r) {
      return [r](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1], r); };
    };
    return {{"[3, 4] mean", {sample_tensor({3, 4}, -1, 1, 93), sample_tensor({3, 4}, -1, 1, 94)}, with(Reduction::mean)},
            {"[3, 4] none", {sample_tensor({3, 4}, -1, 1, 95), sample_tensor({3, 4}, -1, 1, 96)}, with(Reduction::none)}};
  }
};

}  // namespace

Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction) {
  return apply(NllLoss{reduction}, {logp, target});
}
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
  if (!logits.defined() || logits.dim() != 2) {
    throw ShapeError(fmt::format("cross_entropy: expects logits [N, C], got {}",
                                 logits.defined() ? to_string(logits.shape()) : "undefined"));
  }
  return nll_loss(log_softmax(logits, 1), target, reduction);
}
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction) {
  return apply(MseLoss{reduction}, {a, b});
}

TAPEGRAD_BUILTIN_OPS(loss, NllLoss, MseLoss)

}  // namespace tapegrad
