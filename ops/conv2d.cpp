// conv2d: 2-D cross-correlation (the kernel is not flipped), as PyTorch's conv2d.
//   x [N, C, H, W], w [O, C/G, kh, kw], b [O] -> y [N, O, OH, OW]
//   y[n, o, p, q] = b[o] + Σ_{c in o's group, i, j} x[n, c, p·s + i·d - pad, q·s + j·d - pad] · w[o, c, i, j]
// Per image and group this is one GEMM on the unfolded input: y_g = W_g · im2col(x_g).
// VJPs (per image and group):
//   grad_x_g = col2im(W_gᵀ · grad_y_g): each input element collects grad_y × w from exactly
//              the windows that read it; elements no window reads (stride remainders) get 0.
//   grad_W_g = Σ_n grad_y_g · im2col(x_g)ᵀ
//   grad_b   = Σ_{n, p, q} grad_y
// How it runs (depthwise, direct, banded or GEMM paths, the batch split across threads, what
// the forward keeps for the VJP) is decided once, by the ConvPlan the forward stores on the op
// (ops/kernels/conv_plan.hpp); the forward and the gradients are dispatches to its loops.
// Second order: grad_x and grad_W are ops of their own, conv2d_input_grad(grad_y, W) (a
// transposed convolution) and conv2d_weight_grad(x, grad_y) (a correlation). All three are
// the same bilinear form <conv2d(x, W), grad_y> = <x, input_grad(grad_y, W)> =
// <W, weight_grad(x, grad_y)>, so each one's VJP is made of the other two.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/conv_plan.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

using detail::ConvGeometry;

std::string pair(const std::array<std::int64_t, 2>& v) { return fmt::format("[{}, {}]", v[0], v[1]); }

struct Conv2d {
  static constexpr std::string_view name = "conv2d";
  Conv2dOptions opt;
  detail::ConvPlan plan{};  // set by forward, read by the VJP and the gradient ops

  std::string attributes() const {
    const char* mode = opt.padding_mode == ConvPadding::same ? "same" : "valid";
    return fmt::format("stride={}, padding={}, dilation={}, groups={}", pair(opt.stride),
                       opt.padding_mode == ConvPadding::explicit_sizes ? pair(opt.padding) : mode,
                       pair(opt.dilation), opt.groups);
  }

  ConvGeometry geometry(const Tensor& x, const Tensor& w, const Tensor& b) const {
    detail::check_floating(name, x, "input");
    detail::check_floating(name, w, "weight");
    if (x.dim() != 4 || w.dim() != 4) {
      throw ShapeError(fmt::format("conv2d: expects input [N, C, H, W] and weight [O, C/groups, "
                                   "kh, kw], got input {} and weight {}", x.shape(), w.shape()));
    }
    if (x.dtype() != w.dtype() || (b.defined() && b.dtype() != x.dtype())) {
      throw DTypeError(fmt::format("conv2d: input, weight and bias must share one dtype, got {}, "
                                   "{} and {}", x.dtype(), w.dtype(),
                                   b.defined() ? dtype_name(b.dtype()) : "no bias"));
    }
    ConvGeometry r;
    r.batch = x.shape()[0];
    r.channels = x.shape()[1];
    r.out_channels = w.shape()[0];
    r.groups = opt.groups;
    if (r.groups <= 0) throw ValueError(fmt::format("conv2d: groups must be positive, got {}", r.groups));
    if (r.channels % r.groups != 0 || r.out_channels % r.groups != 0) {
      throw ShapeError(fmt::format("conv2d: groups={} must divide both the input channels ({}) "
                                   "and the output channels ({})", r.groups, r.channels, r.out_channels));
    }
    if (w.shape()[1] * r.groups != r.channels) {
      throw ShapeError(fmt::format("conv2d: input {} has {} channels but weight {} expects "
                                   "{} (= {} per group x groups={})", x.shape(), r.channels,
                                   w.shape(), w.shape()[1] * r.groups, w.shape()[1], r.groups));
    }
    if (b.defined() && (b.dim() != 1 || b.shape()[0] != r.out_channels)) {
      throw ShapeError(fmt::format("conv2d: bias must be [{}], got {}", r.out_channels, b.shape()));
    }
    r.h = {x.shape()[2], w.shape()[2], opt.stride[0], opt.padding[0], opt.padding[0], opt.dilation[0], 0};
    r.w = {x.shape()[3], w.shape()[3], opt.stride[1], opt.padding[1], opt.padding[1], opt.dilation[1], 0};
    if (opt.padding_mode != ConvPadding::explicit_sizes) {
      for (detail::Axis* a : {&r.h, &r.w}) {
        a->pad_begin = a->pad_end = 0;
        detail::check_window_params(name, a == &r.h ? "height" : "width", *a);
        if (opt.padding_mode == ConvPadding::same) {
          if (a->stride != 1) {
            throw ValueError(fmt::format("conv2d: padding='same' needs stride 1, got stride {}",
                                         pair(opt.stride)));
          }
          const std::int64_t total = a->dilation * (a->kernel - 1);
          a->pad_begin = total / 2;  // the odd one goes at the bottom/right, as PyTorch does
          a->pad_end = total - a->pad_begin;
        }
      }
    }
    detail::resolve_axis(name, "height", r.h, false);
    detail::resolve_axis(name, "width", r.w, false);
    return r;
  }

  TensorMeta infer(std::span<const Tensor> in) const {
    const ConvGeometry r = geometry(in[0], in[1], in[2]);
    return {{r.batch, r.out_channels, r.h.out, r.w.out}, in[0].dtype()};
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    const Tensor& b = in[2];
    plan = detail::ConvPlan(geometry(x, w, b), dtype_size(x.dtype()));
    const ConvGeometry& g = plan.g;
    // x is saved whenever the weight needs a gradient, for a recorded VJP
    // (conv2d_weight_grad reads x); the raw VJP reads the kept unfolded input when there is one.
    const bool keep = ctx.needs_input_grad(1) && plan.keeps_unfolded;
    Tensor kept = keep ? detail::make_tensor({Shape(plan.kept_shape()), x.dtype()}) : Tensor();
    ctx.save(ctx.needs_input_grad(1) ? x : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? w : Tensor());
    ctx.save(kept);
    Tensor out = detail::make_tensor({{g.batch, g.out_channels, g.h.out, g.w.out}, x.dtype()});
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::conv_forward(plan, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, out.data<T>(),
                           keep ? kept.data<T>() : nullptr);
    });
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);

  /// The raw gradients: grad_x from grad_y and w (when need_x), grad_W from grad_y and x or
  /// its kept unfolded form (when need_w), added into sum_w when that is defined
  /// (OpContext::grad_sum: a weight's grad() after zero_grad).
  std::pair<Tensor, Tensor> grads(const Tensor& x, const Tensor& w, const Tensor& kept,
                                  const Tensor& grad_out, const TensorMeta& mx,
                                  const TensorMeta& mw, bool need_x, bool need_w,
                                  const Tensor& sum_w = Tensor()) const {
    // A Winograd input gradient runs on its own first, so that its transformed weight (16 MiB
    // for 512 × 512 channels) is given back before grad_W is allocated: ResNet-18's peak
    // memory is there, at the start of the backward.
    const bool input_first = need_x && need_w && plan.input_grad == detail::ConvPath::winograd;
    Tensor grad_x = need_x ? detail::make_tensor(mx) : Tensor();
    Tensor grad_w;
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      auto in = [](const Tensor& t) -> const T* { return t.defined() ? t.data<T>() : nullptr; };
      auto out = [](Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
      const T* gy = grad_out.data<T>();
      if (input_first) detail::conv_backward(plan, in(x), in(kept), in(w), gy, out(grad_x), static_cast<T*>(nullptr));
      if (need_w) grad_w = sum_w.defined() ? sum_w : detail::make_tensor(mw);
      detail::conv_backward(plan, in(x), in(kept), in(w), gy, input_first ? nullptr : out(grad_x), out(grad_w),
                            static_cast<const T*>(nullptr), sum_w.defined());
    });
    return {grad_x, grad_w};
  }

  /// grad_b [O] = grad_y summed over N, OH, OW; added into sum_b when that is defined.
  Tensor bias_grad(const Tensor& grad_out, const TensorMeta& mb, const Tensor& sum_b = Tensor()) const {
    Tensor grad_b = sum_b.defined() ? sum_b : zeros(mb.shape, grad_out.dtype());
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const ConvGeometry& g = plan.g;
      for (std::int64_t n = 0; n < g.batch; ++n) {
        detail::bias_grad(grad_out.data<T>() + n * g.out_channels * g.plane_out(), g.out_channels, g.plane_out(),
                          grad_b.data<T>());
      }
    });
    return grad_b;
  }

  static std::vector<Sample> samples();
};

/// What conv2d_input_grad and conv2d_weight_grad share: the conv2d (options and forward
/// geometry) whose gradient they are, and the shapes of its tensors.
struct ConvGrad {
  Conv2d conv;
  TensorMeta x, w;
  TensorMeta y() const {
    const ConvGeometry& g = conv.plan.g;
    return {{g.batch, g.out_channels, g.h.out, g.w.out}, x.dtype};
  }
  std::string attributes() const { return conv.attributes(); }
};

/// conv2d_input_grad(grad_y, W) -> grad_x. VJP: grad_y's is conv2d(c, W); W's is
/// conv2d_weight_grad(c, grad_y).
struct Conv2dInputGrad {
  static constexpr std::string_view name = "conv2d_input_grad";
  ConvGrad of;
  std::string attributes() const { return of.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "grad_out", in[0], of.y());
    detail::check_meta(name, "weight", in[1], of.w);
    return of.x;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return of.conv.grads({}, in[1], {}, in[0], of.x, of.w, true, false).first;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// conv2d_weight_grad(x, grad_y) -> grad_W. VJP: x's is conv2d_input_grad(grad_y, C);
/// grad_y's is conv2d(x, C).
struct Conv2dWeightGrad {
  static constexpr std::string_view name = "conv2d_weight_grad";
  ConvGrad of;
  std::string attributes() const { return of.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "input", in[0], of.x);
    detail::check_meta(name, "grad_out", in[1], of.y());
    return of.w;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return of.conv.grads(in[0], {}, {}, in[1], of.x, of.w, false, true).second;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {ctx.needs_input_grad(0) ? apply(Conv2dInputGrad{of}, {ctx.saved(1), grad_out}) : Tensor(),
            ctx.needs_input_grad(1) ? conv2d(ctx.saved(0), grad_out, Tensor(), of.conv.opt) : Tensor()};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> Conv2dInputGrad::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {ctx.needs_input_grad(0) ? conv2d(grad_out, ctx.saved(1), Tensor(), of.conv.opt) : Tensor(),
          ctx.needs_input_grad(1) ? apply(Conv2dWeightGrad{of}, {grad_out, ctx.saved(0)}) : Tensor()};
}

std::vector<Tensor> Conv2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  const TensorMeta& mx = ctx.input(0);
  const TensorMeta& mw = ctx.input(1);
  const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1);
  Tensor grad_x, grad_w;
  if (is_grad_enabled()) {  // recorded (create_graph): the gradients as ops of their own
    const ConvGrad of{*this, mx, mw};
    if (need_x) grad_x = apply(Conv2dInputGrad{of}, {grad_out, ctx.saved(1)});
    if (need_w) grad_w = apply(Conv2dWeightGrad{of}, {ctx.saved(0), grad_out});
  } else {
    std::tie(grad_x, grad_w) = grads(ctx.saved(0), ctx.saved(1), ctx.saved(2), grad_out, mx, mw, need_x, need_w,
                                     ctx.grad_sum(1));
  }
  Tensor grad_b;
  if (ctx.needs_input_grad(2)) {
    grad_b = is_grad_enabled() ? sum(grad_out, {0, 2, 3}) : bias_grad(grad_out, ctx.input(2), ctx.grad_sum(2));
  }
  return {grad_x, grad_w, grad_b};
}

struct ConvCase {
  const char* label;
  Shape x, w;
  bool bias;
  Conv2dOptions opt;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 pad 1", {2, 3, 5, 6}, {4, 3, 3, 3}, true, {}},
      {"2x3 kernel, stride (2, 1), pad (1, 0), dilation (1, 2)", {2, 2, 7, 8}, {3, 2, 2, 3}, true,
       {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}},
      {"groups 2, no bias", {1, 4, 5, 5}, {6, 2, 3, 3}, false, {.padding = {1, 1}, .groups = 2}},
      {"groups 3, stride 2 with remainders", {2, 3, 7, 6}, {3, 1, 2, 2}, true, {.stride = {3, 2}, .groups = 3}},
      {"depthwise x2 multiplier", {2, 3, 6, 5}, {6, 1, 3, 3}, true, {.padding = {1, 2}, .groups = 3}},
      {"1x1 pointwise", {2, 4, 3, 5}, {3, 4, 1, 1}, true, {}},
      {"input exactly the receptive field", {1, 2, 3, 4}, {2, 2, 3, 4}, true, {}},
      {"W of 1", {2, 2, 5, 1}, {3, 2, 3, 1}, true, {.padding = {2, 0}}},
      {"padding same, even kernel", {1, 2, 5, 6}, {2, 2, 2, 4}, true, {.dilation = {2, 1}, .padding_mode = ConvPadding::same}},
      {"padding valid", {1, 2, 5, 6}, {2, 2, 3, 2}, false, {.padding_mode = ConvPadding::valid}},
  };
}

std::vector<Sample> Conv2d::samples() {
  using detail::sample_tensor;
  std::vector<Sample> out;
  std::uint64_t seed = 200;
  for (const ConvCase& c : conv_cases()) {
    std::vector<Tensor> inputs{sample_tensor(c.x, -1, 1, seed++), sample_tensor(c.w, -1, 1, seed++)};
    if (c.bias) inputs.push_back(sample_tensor({c.w[0]}, -1, 1, seed++));
    const Conv2dOptions opt = c.opt;
    out.push_back({c.label, inputs, [opt](const std::vector<Tensor>& in) {
                     return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), opt);
                   }});
  }
  return out;
}

/// The gradient ops' samples, one per conv2d case: Op applied to random values of the
/// shapes it reads (`first`, `second`: x, w or y, picked from the case's ConvGrad).
template <class Op, class Pick>
std::vector<Sample> grad_samples(Pick pick, std::uint64_t seed) {
  std::vector<Sample> out;
  for (const ConvCase& c : conv_cases()) {
    ConvGrad of{Conv2d{c.opt}, {c.x, DType::f64}, {c.w, DType::f64}};
    of.conv.plan = detail::ConvPlan(of.conv.geometry(detail::make_tensor(of.x), detail::make_tensor(of.w), Tensor()),
                                    dtype_size(DType::f64));
    const auto [first, second] = pick(of);
    out.push_back({c.label,
                   {detail::sample_tensor(first.shape, -1, 1, seed), detail::sample_tensor(second.shape, -1, 1, seed + 1)},
                   [of](const std::vector<Tensor>& in) { return apply(Op{of}, {in[0], in[1]}); }});
    seed += 2;
  }
  return out;
}

std::vector<Sample> Conv2dInputGrad::samples() {
  return grad_samples<Conv2dInputGrad>([](const ConvGrad& grad) { return std::pair{grad.y(), grad.w}; }, 250);
}

std::vector<Sample> Conv2dWeightGrad::samples() {
  return grad_samples<Conv2dWeightGrad>([](const ConvGrad& grad) { return std::pair{grad.x, grad.y()}; }, 280);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options) {
  if (!options.bias && bias.defined()) {
    throw ValueError(fmt::format("conv2d: options.bias is false but a bias {} is given",
                                 bias.shape()));
  }
  if (x.defined() && x.dim() == 3) {  // unbatched [C, H, W]
    Shape s = x.shape();
    const Tensor y = apply(Conv2d{options}, {reshape(x, {1, s[0], s[1], s[2]}), weight, bias});
    return reshape(y, {y.shape()[1], y.shape()[2], y.shape()[3]});
  }
  return apply(Conv2d{options}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(conv2d, Conv2d, Conv2dInputGrad, Conv2dWeightGrad)

}  // namespace tapegrad
