// conv_transpose2d: the transposed 2-D convolution, as PyTorch's conv_transpose2d.
//   x [N, Ci, H, W], w [Ci, Co/G, kh, kw], b [Co] -> y [N, Co, OH, OW],
//   OH = (H-1)·stride - 2·pad + dilation·(kh-1) + output_padding + 1 (OW likewise)
//   y[n, o, p·s + i·d - pad, q·s + j·d - pad] += x[n, c, p, q] · w[c, o, i, j]  (o in c's group)
// It is the input gradient of the conv2d that maps y's shape to x's shape with weight w
// (read as [O = Ci, C/G = Co/G, kh, kw]): <conv_transpose2d(x, w), g> = <x, conv2d(g, w)>.
// So, with that conv2d's plan (ops/kernels/conv_plan.hpp) stored on the op:
//   forward  y      = conv2d's input gradient of x          (col2im(Wᵀ · x) per group, + bias)
//   grad_x          = conv2d(grad_y, w)                     (im2col + GEMM)
//   grad_w          = conv2d's weight gradient with grad_y as its input and x as its grad_out
// (grad_x and grad_w from one unfolding of grad_y when both are wanted, on the gemm path). For
// kernel = stride without padding (k2 s2) the windows tile y: im2col and col2im only reorder.
//   grad_b          = Σ_{n, p, q} grad_y
// output_padding adds rows no window writes at the bottom (only the bias reaches them): the
// conv2d sees y's first OH - extra rows, extra = max(0, output_padding - pad), with a bottom
// padding of max(0, pad - output_padding), so that its window count is exactly H.
// Second order: grad_w is an op of its own, conv_transpose2d_weight_grad(grad_y, x); with
// B(g, x, w) = <conv_transpose2d(x, w), g> every VJP is one of conv_transpose2d, conv2d and
// that op, each recorded with explicit VJPs.
#include <algorithm>
#include <cassert>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/conv_plan.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

using detail::Axis;
using detail::ConvGeometry;

std::string pair(const Size2& v) { return fmt::format("[{}, {}]", v[0], v[1]); }

struct ConvTranspose2d {
  static constexpr std::string_view name = "conv_transpose2d";
  ConvTranspose2dOptions opt;
  detail::ConvPlan plan{};  ///< the plan of the conv2d whose input gradient this is
  std::int64_t out_h = 0, out_w = 0;  ///< OH, OW (the conv2d sees plan.g.h.in <= OH rows)

  std::string attributes() const {
    return fmt::format("stride={}, padding={}, output_padding={}, groups={}, dilation={}", pair(opt.stride),
                       pair(opt.padding), pair(opt.output_padding), opt.groups, pair(opt.dilation));
  }

  /// The axis of the conv2d from y (size `out`) to x (size `in`), and OH or OW.
  static std::pair<Axis, std::int64_t> axis(const char* side, std::int64_t in, std::int64_t kernel,
                                            std::int64_t stride, std::int64_t pad, std::int64_t out_pad,
                                            std::int64_t dilation) {
    Axis a{in, kernel, stride, pad, pad, dilation, 0};
    detail::check_window_params(name, side, a);
    if (out_pad < 0 || (out_pad >= stride && out_pad >= dilation)) {
      throw ValueError(fmt::format("conv_transpose2d: output_padding must be non-negative and smaller than "
                                   "either stride or dilation, got {} output_padding={} with stride={} "
                                   "and dilation={}", side, out_pad, stride, dilation));
    }
    const std::int64_t out = (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + out_pad + 1;
    if (in <= 0 || out <= 0) {
      throw ShapeError(fmt::format("conv_transpose2d: output {} would be {}: ({}={} - 1)*stride={} - 2*pad={} + "
                                   "dilation={}*(kernel={}-1) + output_padding={} + 1", side, out, side[0] == 'h' ? "H" : "W",
                                   in, stride, pad, dilation, kernel, out_pad));
    }
    const std::int64_t extra = std::max<std::int64_t>(out_pad - pad, 0);
    Axis conv{out - extra, kernel, stride, pad, std::max<std::int64_t>(pad - out_pad, 0), dilation, 0};
    conv.out = detail::window_count(conv, false);
    assert(conv.out == in);
    return {conv, out};
  }

  ConvGeometry geometry(const Tensor& x, const Tensor& w, const Tensor& b) const {
    detail::check_floating(name, x, "input");
    detail::check_floating(name, w, "weight");
    if (x.dim() != 4 || w.dim() != 4) {
      throw ShapeError(fmt::format("conv_transpose2d: expects input [N, C_in, H, W] and weight [C_in, "
                                   "C_out/groups, kh, kw], got input {} and weight {}", x.shape(), w.shape()));
    }
    if (x.dtype() != w.dtype() || (b.defined() && b.dtype() != x.dtype())) {
      throw DTypeError(fmt::format("conv_transpose2d: input, weight and bias must share one dtype, got {}, "
                                   "{} and {}", x.dtype(), w.dtype(), b.defined() ? dtype_name(b.dtype()) : "no bias"));
    }
    if (opt.groups <= 0) throw ValueError(fmt::format("conv_transpose2d: groups must be positive, got {}", opt.groups));
    ConvGeometry g;
    g.batch = x.shape()[0];
    g.out_channels = x.shape()[1];  // the conv2d's output is x
    g.channels = w.shape()[1] * opt.groups;
    g.groups = opt.groups;
    if (w.shape()[0] != g.out_channels || g.out_channels % g.groups != 0) {
      throw ShapeError(fmt::format("conv_transpose2d: input {} has {} channels; weight {} must have as many "
                                   "in dim 0, divisible by groups={}", x.shape(), g.out_channels, w.shape(), g.groups));
    }
    if (b.defined() && (b.dim() != 1 || b.shape()[0] != g.channels)) {
      throw ShapeError(fmt::format("conv_transpose2d: bias must be [{}] (= weight {} dim 1 x groups={}), got {}",
                                   g.channels, w.shape(), g.groups, b.shape()));
    }
    return g;
  }

  /// Checks the arguments, sets the plan and OH, OW.
  void prepare(const Tensor& x, const Tensor& w, const Tensor& b) {
    ConvGeometry g = geometry(x, w, b);
    std::tie(g.h, out_h) = axis("height", x.shape()[2], w.shape()[2], opt.stride[0], opt.padding[0],
                                opt.output_padding[0], opt.dilation[0]);
    std::tie(g.w, out_w) = axis("width", x.shape()[3], w.shape()[3], opt.stride[1], opt.padding[1],
                                opt.output_padding[1], opt.dilation[1]);
    plan = detail::ConvPlan(g, dtype_size(x.dtype()));
  }

  Shape out_shape() const { return {plan.g.batch, plan.g.channels, out_h, out_w}; }
  bool cropped() const { return plan.g.h.in != out_h || plan.g.w.in != out_w; }

  TensorMeta infer(std::span<const Tensor> in) const {
    ConvTranspose2d copy{opt};
    copy.prepare(in[0], in[1], in[2]);
    return {copy.out_shape(), in[0].dtype()};
  }

  /// The rows and columns of t [N, Co, OH, OW] that the conv2d sees (t itself when all).
  template <class T>
  const T* seen(const Tensor& t, std::vector<T>& buffer) const {
    if (!cropped()) return t.data<T>();
    const ConvGeometry& g = plan.g;
    buffer.resize(static_cast<std::size_t>(g.batch * g.channels * g.plane_in()));
    const T* src = t.data<T>();
    for (std::int64_t plane = 0; plane < g.batch * g.channels; ++plane) {
      for (std::int64_t r = 0; r < g.h.in; ++r) {
        std::copy_n(src + (plane * out_h + r) * out_w, g.w.in, buffer.data() + (plane * g.h.in + r) * g.w.in);
      }
    }
    return buffer.data();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor &x = in[0], &w = in[1], &b = in[2];
    prepare(x, w, b);
    ctx.save(ctx.needs_input_grad(1) ? x : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? w : Tensor());
    // rows of output_padding that the conv2d does not see start at 0 (then get the bias)
    Tensor out = cropped() ? zeros(out_shape(), x.dtype()) : detail::make_tensor({out_shape(), x.dtype()});
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const ConvGeometry& g = plan.g;
      const T* bias = b.defined() ? b.data<T>() : nullptr;
      if (!cropped()) {  // the kernel adds the bias as it goes
        detail::conv_backward<T>(plan, nullptr, nullptr, w.data<T>(), x.data<T>(), out.data<T>(), nullptr, bias);
        return;
      }
      std::vector<T> y(static_cast<std::size_t>(g.batch * g.channels * g.plane_in()));
      detail::conv_backward<T>(plan, nullptr, nullptr, w.data<T>(), x.data<T>(), y.data(), nullptr);
      T* dst = out.data<T>();
      for (std::int64_t plane = 0; plane < g.batch * g.channels; ++plane) {
        for (std::int64_t r = 0; r < g.h.in; ++r) {
          std::copy_n(y.data() + (plane * g.h.in + r) * g.w.in, g.w.in, dst + (plane * out_h + r) * out_w);
        }
        for (std::int64_t i = 0; bias != nullptr && i < out_h * out_w; ++i) dst[plane * out_h * out_w + i] += bias[plane % g.channels];
      }
    });
    return out;
  }

  /// The raw gradients of x (from grad_y and w) and of w (from grad_y and x), as needed.
  std::pair<Tensor, Tensor> grads(const Tensor& x, const Tensor& w, const Tensor& grad_out, const TensorMeta& mx,
                                  const TensorMeta& mw) const {
    Tensor grad_x = w.defined() ? detail::make_tensor(mx) : Tensor();
    Tensor grad_w = x.defined() ? detail::make_tensor(mw) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      std::vector<T> buffer;
      const T* gy = seen<T>(grad_out, buffer);
      if (grad_x.defined() && grad_w.defined() &&  // one unfolding of grad_y for both
          detail::conv_forward_weight_grad<T>(plan, gy, w.data<T>(), grad_x.data<T>(), x.data<T>(), grad_w.data<T>())) {
        return;
      }
      if (grad_x.defined()) detail::conv_forward<T>(plan, gy, w.data<T>(), nullptr, grad_x.data<T>(), nullptr);
      if (grad_w.defined()) {
        detail::conv_backward<T>(plan, gy, nullptr, nullptr, x.data<T>(), nullptr, grad_w.data<T>());
      }
    });
    return {grad_x, grad_w};
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// conv2d(g, w) cut to x's height and width: the x-gradient of conv_transpose2d (the conv2d
/// gives floor(output_padding / stride) more rows when output_padding >= stride).
Tensor input_grad(const Tensor& grad_out, const Tensor& w, const ConvTranspose2d& op) {
  const ConvTranspose2dOptions& o = op.opt;
  Tensor r = conv2d(grad_out, w, Tensor(),
                    {.stride = o.stride, .padding = o.padding, .dilation = o.dilation, .groups = o.groups});
  if (r.shape()[2] != op.plan.g.h.out) r = narrow(r, 2, 0, op.plan.g.h.out);
  if (r.shape()[3] != op.plan.g.w.out) r = narrow(r, 3, 0, op.plan.g.w.out);
  return r;
}

/// conv_transpose2d_weight_grad(grad_y, x) -> grad_w [Ci, Co/G, kh, kw]. VJP for a cotangent
/// c of w's shape: grad_y's is conv_transpose2d(x, c), x's is conv2d(grad_y, c) (cut).
struct ConvTranspose2dWeightGrad {
  static constexpr std::string_view name = "conv_transpose2d_weight_grad";
  ConvTranspose2d of;
  TensorMeta x, w;
  std::string attributes() const { return of.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_meta(name, "grad_out", in[0], {of.out_shape(), x.dtype});
    detail::check_meta(name, "input", in[1], x);
    return w;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(ctx.needs_input_grad(1) ? in[0] : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return of.grads(in[1], Tensor(), in[0], x, w).second;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {ctx.needs_input_grad(0) ? conv_transpose2d(ctx.saved(1), grad_out, Tensor(), of.opt) : Tensor(),
            ctx.needs_input_grad(1) ? input_grad(ctx.saved(0), grad_out, of) : Tensor()};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> ConvTranspose2d::vjp(OpContext& ctx, const Tensor& grad_out) {
  const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1);
  Tensor grad_x, grad_w, grad_b;
  if (is_grad_enabled()) {  // recorded (create_graph): the gradients as ops of their own
    if (need_x) grad_x = input_grad(grad_out, ctx.saved(1), *this);
    if (need_w) grad_w = apply(ConvTranspose2dWeightGrad{*this, ctx.input(0), ctx.input(1)}, {grad_out, ctx.saved(0)});
  } else {
    std::tie(grad_x, grad_w) = grads(ctx.saved(0), ctx.saved(1), grad_out, ctx.input(0), ctx.input(1));
  }
  if (ctx.needs_input_grad(2)) {
    if (is_grad_enabled()) return {grad_x, grad_w, sum(grad_out, {0, 2, 3})};
    grad_b = zeros(ctx.input(2).shape, grad_out.dtype());
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t channels = plan.g.channels, image = channels * out_h * out_w;
      for (std::int64_t n = 0; n < plan.g.batch; ++n) {
        detail::bias_grad(grad_out.data<T>() + n * image, channels, out_h * out_w, grad_b.data<T>());
      }
    });
  }
  return {grad_x, grad_w, grad_b};
}

struct Case {
  const char* label;
  Shape x, w;
  bool bias;
  ConvTranspose2dOptions opt;
};

std::vector<Case> cases() {
  return {
      {"3x3", {2, 3, 4, 5}, {3, 2, 3, 3}, true, {}},
      {"k2 s2 (U-Net up)", {2, 3, 3, 4}, {3, 4, 2, 2}, true, {.stride = 2}},
      {"k3 s1 p1", {1, 2, 4, 3}, {2, 3, 3, 3}, false, {.padding = 1}},
      {"stride (3, 2), pad (1, 0), output_padding (2, 1)", {2, 2, 3, 4}, {2, 3, 3, 2}, true,
       {.stride = {3, 2}, .padding = {1, 0}, .output_padding = {2, 1}}},
      {"groups 2, dilation (2, 1), output_padding < dilation", {1, 4, 3, 3}, {4, 3, 2, 3}, true,
       {.padding = {0, 1}, .output_padding = {1, 0}, .groups = 2, .dilation = {2, 1}}},
      {"depthwise, stride 2", {2, 3, 3, 3}, {3, 1, 3, 2}, true, {.stride = 2, .padding = 1, .groups = 3}},
  };
}

std::vector<Sample> ConvTranspose2d::samples() {
  using detail::sample_tensor;
  std::vector<Sample> out;
  std::uint64_t seed = 600;
  for (const Case& c : cases()) {
    std::vector<Tensor> inputs{sample_tensor(c.x, -1, 1, seed++), sample_tensor(c.w, -1, 1, seed++)};
    if (c.bias) inputs.push_back(sample_tensor({c.w[1] * c.opt.groups}, -1, 1, seed++));
    const ConvTranspose2dOptions opt = c.opt;
    out.push_back({c.label, inputs, [opt](const std::vector<Tensor>& in) {
                     return conv_transpose2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), opt);
                   }});
  }
  return out;
}

std::vector<Sample> ConvTranspose2dWeightGrad::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = 640;
  for (const Case& c : cases()) {
    ConvTranspose2dWeightGrad op{ConvTranspose2d{c.opt}, {c.x, DType::f64}, {c.w, DType::f64}};
    op.of.prepare(detail::make_tensor(op.x), detail::make_tensor(op.w), Tensor());
    out.push_back({c.label,
                   {detail::sample_tensor(op.of.out_shape(), -1, 1, seed), detail::sample_tensor(c.x, -1, 1, seed + 1)},
                   [op](const std::vector<Tensor>& in) { return apply(op, {in[0], in[1]}); }});
    seed += 2;
  }
  return out;
}

}  // namespace

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const ConvTranspose2dOptions& options) {
  if (!options.bias && bias.defined()) {
    throw ValueError(fmt::format("conv_transpose2d: options.bias is false but a bias {} is given", bias.shape()));
  }
  if (x.defined() && x.dim() == 3) {  // unbatched [C, H, W]
    const Shape s = x.shape();
    const Tensor y = apply(ConvTranspose2d{options}, {reshape(x, {1, s[0], s[1], s[2]}), weight, bias});
    return reshape(y, {y.shape()[1], y.shape()[2], y.shape()[3]});
  }
  return apply(ConvTranspose2d{options}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(conv_transpose2d, ConvTranspose2d, ConvTranspose2dWeightGrad)

}  // namespace tapegrad
