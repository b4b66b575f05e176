// Losses.
//   nll_loss: logp [N, C, d1, ..., dk] (k >= 0), target [N, d1, ..., dk] (i64 in [0, C), or
//     ignore_index), class weights w [C] (1 when absent). Each target entry n (over N and the
//     d's, "a row") has c_n = w[target[n]], 0 when ignored, and l_n = -c_n · logp[n, target[n]]
//     (the class read along dim 1), reduced by mean (Σ l_n / Σ c_n: PyTorch's weighted mean,
//     nan when every row is ignored), sum, or none (target's shape). An unbatched logp [C]
//     takes a 0-dim target, as in PyTorch. grad_logp[n, target[n]] = -c_n · grad_out (/ Σ c_n
//     for mean), 0 elsewhere: the op nll_loss_backward, whose VJP is nll_loss.
//   mse_loss: l = (a - b)², reduced likewise; grad_a = 2(a - b)·grad_out (/ numel for mean),
//     grad_b = -grad_a.
//   cross_entropy = nll_loss(log_softmax(logits, 1), target) · (1 - ε) + ε / C · smooth with
//     label smoothing ε (the class dim is 0 for logits [C]), where
//     smooth_n = -Σ_c w_c · logp[n, c] (0 for an ignored row),
//     reduced like nll_loss: its mean divides by the same Σ c_n (PyTorch 1.13's formula).
#include <string>
#include <utility>
#include <vector>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/loss.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::reduction_name;

/// nll_loss's layout: logp [N, C, d1, ..., dk] seen as [N, C, S] with S = d1·…·dk, a [C]
/// logp as [1, C, 1]. Row r = n·S + s of the target reads its class c at (n, c, s).
struct NllLayout {
  std::int64_t classes = 1, inner = 1;
  explicit NllLayout(const Shape& logp) {
    classes = logp.size() == 1 ? logp[0] : logp[1];
    for (std::size_t d = 2; d < logp.size(); ++d) inner *= logp[d];
  }
  std::int64_t at(std::int64_t row, std::int64_t c) const {
    return (row / inner) * classes * inner + c * inner + row % inner;
  }
};

/// The target shape a logp shape takes: [N, d1, ..., dk] for [N, C, d1, ..., dk]; [] for [C].
Shape nll_target_shape(const Shape& logp) {
  Shape target;
  for (std::size_t d = 0; d < logp.size(); ++d) {
    if (d != 1 && logp.size() > 1) target.push_back(logp[d]);
  }
  return target;
}

/// `target[i, j, ...]` for the flat index `flat` of a target of `shape` (`target` when 0-dim).
std::string target_entry(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> index(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape.empty() ? std::string("target") : fmt::format("target[{}]", fmt::join(index, ", "));
}

/// The checks of nll_loss's arguments, naming `op`: the function the user called.
void check_nll_args(std::string_view op, const Tensor& logp, const Tensor& target,
                    const Tensor& weight, std::int64_t ignore_index) {
  detail::check_floating(op, logp, "input");
  if (!target.defined() || target.dtype() != DType::i64) {
    throw DTypeError(fmt::format("{}: target must be an i64 tensor of class indices, got {}", op,
                                 target.defined() ? fmt::format("{} {}", target.shape(), target.dtype())
                                                  : std::string("undefined")));
  }
  if (logp.dim() == 0) {
    throw ShapeError(fmt::format("{}: expects input [N, C, d1, ...] or [C], got a 0-dim input "
                                 "(target {})", op, target.shape()));
  }
  const Shape expected = nll_target_shape(logp.shape());
  if (target.shape() != expected) {
    throw ShapeError(fmt::format("{}: target must be {} for input {} (input [N, C, d1, ...] takes "
                                 "target [N, d1, ...], input [C] a 0-dim target), got target {}",
                                 op, expected, logp.shape(), target.shape()));
  }
  const std::int64_t classes = NllLayout(logp.shape()).classes;
  detail::check_loss_constant(op, "weight", weight, logp.dtype());
  if (weight.defined() && weight.shape() != Shape{classes}) {
    throw ShapeError(fmt::format("{}: weight must be [C] = [{}] (one per class of input {}), got {}",
                                 op, classes, logp.shape(), weight.shape()));
  }
  const auto* t = target.data<std::int64_t>();
  for (std::int64_t n = 0; n < target.numel(); ++n) {
    if (t[n] != ignore_index && (t[n] < 0 || t[n] >= classes)) {
      throw ValueError(fmt::format("{}: {} = {} is not a class index in [0, {}) nor "
                                   "ignore_index = {} (input {})", op, target_entry(target.shape(), n), t[n], classes,
                                   ignore_index, logp.shape()));
    }
  }
}

/// Each row's weight c_n: the target class's weight (1 without weights), 0 when ignored.
std::vector<double> row_weights(const Tensor& target, const Tensor& weight, std::int64_t ignore_index) {
  const auto* t = target.data<std::int64_t>();
  std::vector<double> c(static_cast<std::size_t>(target.numel()), 0.0);
  const Tensor w = weight.defined() ? weight.to(DType::f64) : Tensor();
  for (std::size_t n = 0; n < c.size(); ++n) {
    if (t[n] != ignore_index) c[n] = w.defined() ? w.data<double>()[t[n]] : 1.0;
  }
  return c;
}

double total(const std::vector<double>& c) {
  double s = 0;
  for (double v : c) s += v;
  return s;
}

struct NllLoss {
  static constexpr std::string_view name = "nll_loss";
  NllLossOptions options;
  std::string attributes() const {
    return fmt::format("reduction={}, ignore_index={}, weight={}", reduction_name(options.reduction),
                       options.ignore_index, options.weight.defined());
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    check_nll_args(name, in[0], in[1], options.weight, options.ignore_index);
    return {options.reduction == Reduction::none ? in[1].shape() : Shape{}, in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& logp = in[0];
    const Tensor& target = in[1];
    ctx.save(target);
    const NllLayout layout(logp.shape());
    const std::int64_t rows = target.numel();
    const std::vector<double> c = row_weights(target, options.weight, options.ignore_index);
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(logp.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* p = logp.data<T>();
      const auto* t = target.data<std::int64_t>();
      T* o = out.data<T>();
      T sum_loss = 0;
      for (std::int64_t n = 0; n < rows; ++n) {
        // An ignored row is skipped, never read: its target need not be a class.
        const T l = t[n] == options.ignore_index ? T(0) : -static_cast<T>(c[static_cast<std::size_t>(n)]) * p[layout.at(n, t[n])];
        if (options.reduction == Reduction::none) o[n] = l;
        sum_loss += l;
      }
      // The mean over an empty or wholly ignored batch is nan (0/0), as in PyTorch.
      if (options.reduction == Reduction::sum) o[0] = sum_loss;
      if (options.reduction == Reduction::mean) o[0] = sum_loss / static_cast<T>(total(c));
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples() {
    const Tensor target = from_vector(std::vector<std::int64_t>{2, 0, 4, 2}, {4});
    const Tensor ignored = from_vector(std::vector<std::int64_t>{2, -100, 4, 1}, {4});
    const Tensor weight = detail::sample_tensor({5}, 0.5, 1.5, 97, false);
    const Tensor target_2x3 = from_vector(std::vector<std::int64_t>{4, -100, 0, 2, 2, 1}, {2, 3});
    const Tensor target_2x2x2 = from_vector(std::vector<std::int64_t>{3, 1, 0, 4, 1, 2, 2, 0}, {2, 2, 2});
    const Tensor target_0d = from_vector(std::vector<std::int64_t>{3}, {});
    auto with = [](Tensor t, NllLossOptions o) {
      return [t, o](const std::vector<Tensor>& in) { return nll_loss(in[0], t, o); };
    };
    auto ce = [](Tensor t, CrossEntropyOptions o) {
      return [t, o](const std::vector<Tensor>& in) { return cross_entropy(in[0], t, o); };
    };
    auto logp = [] { return detail::sample_tensor({4, 5}, -3, 0, 91); };
    auto logits = [] { return detail::sample_tensor({4, 5}, -3, 3, 92); };
    return {{"[4, 5] mean", {logp()}, with(target, {})},
            {"[4, 5] sum", {logp()}, with(target, {.reduction = Reduction::sum})},
            {"[4, 5] none", {logp()}, with(target, {.reduction = Reduction::none})},
            {"[4, 5] mean, weight, a row ignored", {logp()}, with(ignored, {.weight = weight})},
            {"cross_entropy [4, 5]", {logits()}, ce(target, {})},
            {"cross_entropy [4, 5] weight, ignore_index, label smoothing", {logits()},
             ce(ignored, {.weight = weight, .label_smoothing = 0.2})},
            {"cross_entropy [4, 5] none, label smoothing", {logits()},
             ce(target, {.reduction = Reduction::none, .label_smoothing = 0.1})},
            {"[2, 5, 3] none", {detail::sample_tensor({2, 5, 3}, -3, 0, 191)}, with(target_2x3, {.reduction = Reduction::none})},
            {"[2, 5, 2, 2] mean, weight, ignore_index", {detail::sample_tensor({2, 5, 2, 2}, -3, 0, 192)},
             with(target_2x2x2, {.weight = weight, .ignore_index = 1})},
            {"[5] with a 0-dim target", {detail::sample_tensor({5}, -3, 0, 193)}, with(target_0d, {})},
            {"cross_entropy [2, 5, 3] sum, weight, ignore_index, label smoothing", {detail::sample_tensor({2, 5, 3}, -3, 3, 194)},
             ce(target_2x3, {.weight = weight, .reduction = Reduction::sum, .label_smoothing = 0.2})},
            {"cross_entropy [2, 5, 2, 2] mean, weight, ignore_index 1, label smoothing",
             {detail::sample_tensor({2, 5, 2, 2}, -3, 3, 195)},
             ce(target_2x2x2, {.weight = weight, .ignore_index = 1, .label_smoothing = 0.1})},
            {"cross_entropy [5] with a 0-dim target, label smoothing", {detail::sample_tensor({5}, -3, 3, 196)},
             ce(target_0d, {.reduction = Reduction::none, .label_smoothing = 0.3})}};
  }
};

/// nll_loss's VJP, linear in grad_out: grad_logp[n, target[n]] = -c_n · grad_out (/ Σ c_n for
/// mean; grad_out[n] for none), 0 elsewhere. Its adjoint, and so its VJP, is nll_loss itself
/// applied to the upstream gradient; that is PyTorch's double backward too, which makes the
/// second derivative in grad_out nan for a wholly ignored mean (0/0) as in PyTorch.
struct NllLossBackward {
  static constexpr std::string_view name = "nll_loss_backward";
  NllLossOptions options;
  TensorMeta input;  // nll_loss's logp
  std::string attributes() const { return NllLoss{options}.attributes(); }
  TensorMeta infer(std::span<const Tensor> args) const {
    const Shape target = nll_target_shape(input.shape);
    detail::check_meta(name, "grad_out", args[0], {options.reduction == Reduction::none ? target : Shape{}, input.dtype});
    detail::check_meta(name, "target", args[1], {target, DType::i64});
    return input;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> args) {
    const Tensor &grad_out = args[0], &target = args[1];
    ctx.save(target);
    const NllLayout layout(input.shape);
    const std::int64_t rows = target.numel();
    const std::vector<double> c = row_weights(target, options.weight, options.ignore_index);
    const double scale = options.reduction == Reduction::mean ? 1.0 / total(c) : 1.0;
    const std::int64_t row_stride = options.reduction == Reduction::none ? 1 : 0;
    Tensor grad = zeros(input.shape, input.dtype);
    detail::dispatch_floating(input.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      T* p = grad.data<T>();
      const T* g = grad_out.data<T>();
      const auto* t = target.data<std::int64_t>();
      for (std::int64_t n = 0; n < rows; ++n) {
        if (t[n] == options.ignore_index) continue;
        p[layout.at(n, t[n])] = -static_cast<T>(c[static_cast<std::size_t>(n)] * scale) * g[n * row_stride];
      }
    });
    return grad;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {nll_loss(grad_out, ctx.saved(0), options), Tensor()};
  }
  static std::vector<Sample> samples() {
    const Tensor target = from_vector(std::vector<std::int64_t>{2, -100, 4, 1}, {4});
    const Tensor weight = detail::sample_tensor({5}, 0.5, 1.5, 98, false);
    std::vector<Sample> out;
    std::uint64_t seed = 99;
    const Tensor target_2x2 = from_vector(std::vector<std::int64_t>{0, -100, 4, 3}, {2, 2});
    for (const NllLossOptions& o : {NllLossOptions{.weight = weight}, NllLossOptions{.reduction = Reduction::none}}) {
      for (const auto& [input, t] : {std::pair{Shape{4, 5}, target}, std::pair{Shape{2, 5, 2}, target_2x2}}) {
        const NllLossBackward op{o, {input, DType::f64}};
        out.push_back({fmt::format("{} {}, a row ignored", input, reduction_name(o.reduction)),
                       {detail::sample_tensor(op.options.reduction == Reduction::none ? t.shape() : Shape{}, -1, 1, seed++), t},
                       [op](const std::vector<Tensor>& in) { return apply(op, {in[0], in[1]}); }});
      }
    }
    return out;
  }
};

std::vector<Tensor> NllLoss::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(NllLossBackward{options, ctx.input(0)}, {grad_out, ctx.saved(0)}), Tensor()};
}

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
  return nll_loss(logp, target, NllLossOptions{.reduction = reduction});
}
Tensor nll_loss(const Tensor& logp, const Tensor& target, const NllLossOptions& options) {
  return apply(NllLoss{options}, {logp, target});
}
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
  return cross_entropy(logits, target, CrossEntropyOptions{.reduction = reduction});
}
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options) {
  check_nll_args("cross_entropy", logits, target, options.weight, options.ignore_index);
  const double eps = options.label_smoothing;
  if (!(eps >= 0 && eps <= 1)) {
    throw ValueError(fmt::format("cross_entropy: label_smoothing must be in [0, 1], got {} (logits {})",
                                 eps, logits.shape()));
  }
  const std::int64_t class_dim = logits.dim() == 1 ? 0 : 1;
  const Tensor logp = log_softmax(logits, class_dim);
  const Tensor nll = nll_loss(logp, target, {options.weight, options.ignore_index, options.reduction});
  if (eps == 0) return nll;
  const std::int64_t classes = logits.shape()[static_cast<std::size_t>(class_dim)];
  Shape weight_shape;  // the weights along the class dim, broadcast over the others
  for (std::size_t d = 0; d < logits.dim(); ++d) weight_shape.push_back(d == static_cast<std::size_t>(class_dim) ? classes : 1);
  const std::vector<double> c = row_weights(target, options.weight, options.ignore_index);
  std::vector<double> kept(c.size());
  for (std::size_t n = 0; n < c.size(); ++n) kept[n] = target.data<std::int64_t>()[n] == options.ignore_index ? 0.0 : 1.0;
  const Tensor per_class = options.weight.defined() ? logp * reshape(options.weight, weight_shape) : logp;
  const Tensor rows = neg(sum(per_class, {class_dim})) * from_vector(kept, target.shape(), DType::f64).to(logits.dtype());
  const Tensor smooth = options.reduction == Reduction::none  ? rows
                        : options.reduction == Reduction::sum ? sum(rows)
                                                              : sum(rows) / total(c);
  return nll * (1.0 - eps) + smooth * (eps / static_cast<double>(classes));
}
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction) {
  return apply(MseLoss{reduction}, {a, b});
}

TAPEGRAD_BUILTIN_OPS(loss, NllLoss, NllLossBackward, MseLoss)

}  // namespace tapegrad
