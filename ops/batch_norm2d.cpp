// batch_norm2d: per-channel normalisation of x [N, C, H, W], as torch.nn.functional.batch_norm.
//   training: mean_c, var_c = biased mean and variance of x[:, c] over M = N·H·W values;
//   eval:     mean_c, var_c = running_mean[c], running_var[c].
//   invstd_c = 1/sqrt(var_c + eps),  xhat = (x - mean_c)·invstd_c,  y = weight_c·xhat + bias_c
// In training the running statistics move towards the batch ones (PyTorch's update, with the
// unbiased variance M/(M-1)·var_c):  running = (1 - momentum)·running + momentum·batch.
// VJPs, per channel, with g = grad_out and w = weight (1 without affine):
//   grad_bias   = Σ g
//   grad_weight = Σ g·xhat
//   grad_x      = w·invstd·g                                         (eval: mean, var constant)
//   grad_x      = w·invstd/M · (M·g - Σ g - xhat·Σ g·xhat)           (training: mean and var
//                 depend on x; this is the three-term form of the chain rule through both)
// The forward saves x (no larger than xhat, which it never allocates), mean and invstd; the
// VJP recomputes xhat. Recorded for create_graph, the same formulas run as ops on x, with
// mean and invstd recomputed from x in training, so that second derivatives see how they
// depend on x.
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

struct BatchNorm2d {
  static constexpr std::string_view name = "batch_norm2d";
  Tensor running_mean;  // [C] or undefined; updated in place by a training forward
  Tensor running_var;
  bool training = false;
  double momentum = 0.1;
  double eps = 1e-5;

  std::string attributes() const {
    return fmt::format("training={}, momentum={}, eps={}", training, momentum, eps);
  }

  void check_channel_vector(const Tensor& x, const Tensor& t, const char* what) const {
    if (!t.defined()) return;
    const std::int64_t c = x.shape()[1];
    if (t.dim() != 1 || t.shape()[0] != c) {
      throw ShapeError(fmt::format("batch_norm2d: {} must be [{}] (one value per channel of "
                                   "input {}), got {}", what, c, x.shape(), t.shape()));
    }
    if (t.dtype() != x.dtype()) {
      throw DTypeError(fmt::format("batch_norm2d: {} is {} but input is {}; convert with .to()",
                                   what, t.dtype(), x.dtype()));
    }
  }

  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& x = in[0];
    detail::check_floating(name, x);
    if (x.dim() != 4) {
      throw ShapeError(fmt::format("batch_norm2d: expects input [N, C, H, W], got {}", x.shape()));
    }
    check_channel_vector(x, in[1], "weight");
    check_channel_vector(x, in[2], "bias");
    check_channel_vector(x, running_mean, "running_mean");
    check_channel_vector(x, running_var, "running_var");
    if (running_mean.defined() != running_var.defined()) {
      throw ValueError("batch_norm2d: running_mean and running_var must both be given or both "
                       "be undefined");
    }
    if (!training && !running_mean.defined()) {
      throw ValueError("batch_norm2d: evaluation mode (training=false) needs running_mean and "
                       "running_var");
    }
    const std::int64_t m = x.shape()[0] * x.shape()[2] * x.shape()[3];
    if (training && m <= 1) {
      throw ValueError(fmt::format("batch_norm2d: training needs more than 1 value per channel, "
                                   "got input {} (N·H·W = {})", x.shape(), m));
    }
    return x.meta();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const Tensor& weight = in[1];
    const Tensor& bias = in[2];
    const std::int64_t n = x.shape()[0], c = x.shape()[1], plane = x.shape()[2] * x.shape()[3];
    const std::int64_t m = n * plane;
    Tensor out = detail::make_tensor(x.meta());
    Tensor mean_c = detail::make_tensor(Shape{c}, x.dtype());
    Tensor invstd = detail::make_tensor(Shape{c}, x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      std::vector<double> batch_mean(static_cast<std::size_t>(c)), batch_var(batch_mean.size());
      for (std::int64_t ch = 0; ch < c; ++ch) {
        double mean = 0, var = 0;
        if (training) {
          // Two passes in double: the one-pass E[x²] - E[x]² cancels badly.
          for (std::int64_t b = 0; b < n; ++b) {
            const T* src = px + (b * c + ch) * plane;
            for (std::int64_t i = 0; i < plane; ++i) mean += static_cast<double>(src[i]);
          }
          mean /= static_cast<double>(m);
          for (std::int64_t b = 0; b < n; ++b) {
            const T* src = px + (b * c + ch) * plane;
            for (std::int64_t i = 0; i < plane; ++i) {
              const double d = static_cast<double>(src[i]) - mean;
              var += d * d;
            }
          }
          var /= static_cast<double>(m);
        } else {
          mean = static_cast<double>(running_mean.data<T>()[ch]);
          var = static_cast<double>(running_var.data<T>()[ch]);
        }
        batch_mean[static_cast<std::size_t>(ch)] = mean;
        batch_var[static_cast<std::size_t>(ch)] = var;
        const double is = 1.0 / std::sqrt(var + eps);
        mean_c.data<T>()[ch] = static_cast<T>(mean);
        invstd.data<T>()[ch] = static_cast<T>(is);
        const double w = weight.defined() ? static_cast<double>(weight.data<T>()[ch]) : 1.0;
        const double bb = bias.defined() ? static_cast<double>(bias.data<T>()[ch]) : 0.0;
        for (std::int64_t b = 0; b < n; ++b) {
          const std::int64_t off = (b * c + ch) * plane;
          for (std::int64_t i = 0; i < plane; ++i) {
            const double h = (static_cast<double>(px[off + i]) - mean) * is;
            py[off + i] = static_cast<T>(w * h + bb);
          }
        }
      }
      if (training && running_mean.defined()) {
        // Through copy_, so the running statistics' version() records the update.
        Tensor new_mean = detail::make_tensor(running_mean.meta());
        Tensor new_var = detail::make_tensor(running_var.meta());
        const T* rm = running_mean.data<T>();
        const T* rv = running_var.data<T>();
        const double unbias = static_cast<double>(m) / static_cast<double>(m - 1);
        for (std::int64_t ch = 0; ch < c; ++ch) {
          const auto k = static_cast<std::size_t>(ch);
          new_mean.data<T>()[ch] = static_cast<T>((1 - momentum) * static_cast<double>(rm[ch]) +
                                                  momentum * batch_mean[k]);
          new_var.data<T>()[ch] = static_cast<T>((1 - momentum) * static_cast<double>(rv[ch]) +
                                                 momentum * batch_var[k] * unbias);
        }
        running_mean.copy_(new_mean);
        running_var.copy_(new_var);
      }
    });
    ctx.save(x);
    ctx.save(mean_c);
    ctx.save(invstd);
    ctx.save(ctx.needs_input_grad(0) ? weight : Tensor());
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const Tensor x = ctx.saved(0);
    const Tensor mean_c = ctx.saved(1);
    const Tensor invstd = ctx.saved(2);
    const Tensor weight = ctx.saved(3);
    const Shape& s = ctx.input(0).shape;
    const std::int64_t n = s[0], c = s[1], plane = s[2] * s[3];
    const double m = static_cast<double>(n * plane);
    const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1),
               need_b = ctx.needs_input_grad(2);
    Tensor grad_x = need_x ? detail::make_tensor(ctx.input(0)) : Tensor();
    Tensor grad_w = need_w ? detail::make_tensor(ctx.input(1)) : Tensor();
    Tensor grad_b = need_b ? detail::make_tensor(ctx.input(2)) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      const T* px = x.data<T>();
      for (std::int64_t ch = 0; ch < c; ++ch) {
        const double mean = static_cast<double>(mean_c.data<T>()[ch]);
        const double is = static_cast<double>(invstd.data<T>()[ch]);
        auto xhat = [&](std::int64_t i) { return (static_cast<double>(px[i]) - mean) * is; };
        double sum_g = 0, sum_gh = 0;
        for (std::int64_t b = 0; b < n; ++b) {
          const std::int64_t off = (b * c + ch) * plane;
          for (std::int64_t i = 0; i < plane; ++i) {
            sum_g += static_cast<double>(g[off + i]);
            sum_gh += static_cast<double>(g[off + i]) * xhat(off + i);
          }
        }
        if (need_w) grad_w.data<T>()[ch] = static_cast<T>(sum_gh);
        if (need_b) grad_b.data<T>()[ch] = static_cast<T>(sum_g);
        if (!need_x) continue;
        const double w = weight.defined() ? static_cast<double>(weight.data<T>()[ch]) : 1.0;
        const double scale = w * is;
        T* gx = grad_x.data<T>();
        for (std::int64_t b = 0; b < n; ++b) {
          const std::int64_t off = (b * c + ch) * plane;
          for (std::int64_t i = 0; i < plane; ++i) {
            const double gi = static_cast<double>(g[off + i]);
            gx[off + i] = static_cast<T>(
                training ? scale / m * (m * gi - sum_g - xhat(off + i) * sum_gh) : scale * gi);
          }
        }
      }
    });
    return {grad_x, grad_w, grad_b};
  }

  // Recorded for create_graph: the same formulas as ops on x [N, C, H, W] and per-channel
  // [1, C, 1, 1] statistics, which in training are functions of x again.
  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Tensor x = ctx.saved(0);
    const std::int64_t c = x.shape()[1];
    const std::vector<std::int64_t> dims = {0, 2, 3};
    const Shape per_channel = {1, c, 1, 1};
    Tensor mean_c = reshape(ctx.saved(1), per_channel);
    Tensor invstd = reshape(ctx.saved(2), per_channel);
    if (training) {
      mean_c = mean(x, dims, true);
      invstd = pow(mean(pow(x - mean_c, 2.0), dims, true) + eps, -0.5);
    }
    const Tensor xhat = (x - mean_c) * invstd;
    Tensor grad_x, grad_w, grad_b;
    if (ctx.needs_input_grad(0)) {
      const Tensor weight = ctx.saved(3);
      const Tensor scale = weight.defined() ? reshape(weight, per_channel) * invstd : invstd;
      grad_x = training ? scale * (grad_out - mean(grad_out, dims, true) -
                                   xhat * mean(grad_out * xhat, dims, true))
                        : scale * grad_out;
    }
    if (ctx.needs_input_grad(1)) grad_w = sum(grad_out * xhat, dims);
    if (ctx.needs_input_grad(2)) grad_b = sum(grad_out, dims);
    return {grad_x, grad_w, grad_b};
  }

  static std::vector<Sample> samples();
};

std::vector<Sample> BatchNorm2d::samples() {
  using detail::sample_tensor;
  auto stats = [](std::uint64_t seed) {
    return std::pair{sample_tensor({3}, -0.5, 0.5, seed, false),
                     sample_tensor({3}, 0.5, 2.0, seed + 1, false)};
  };
  const auto [rm, rv] = stats(331);
  return {
      {"training, affine, [2, 3, 4, 5]",
       {sample_tensor({2, 3, 4, 5}, -2, 2, 321), sample_tensor({3}, 0.5, 1.5, 322),
        sample_tensor({3}, -1, 1, 323)},
       [](const std::vector<Tensor>& in) {
         return batch_norm2d(in[0], Tensor(), Tensor(), in[1], in[2], true);
       }},
      {"training, no affine, [3, 3, 1, 2]", {sample_tensor({3, 3, 1, 2}, -1, 1, 324)},
       [](const std::vector<Tensor>& in) {
         return batch_norm2d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true);
       }},
      {"eval, running statistics, [2, 3, 3, 2]",
       {sample_tensor({2, 3, 3, 2}, -2, 2, 325), sample_tensor({3}, 0.5, 1.5, 326),
        sample_tensor({3}, -1, 1, 327)},
       [rm = rm, rv = rv](const std::vector<Tensor>& in) {
         return batch_norm2d(in[0], rm, rv, in[1], in[2], false);
       }},
  };
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& weight, const Tensor& bias, bool training, double momentum,
                    double eps) {
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw ValueError(fmt::format("batch_norm2d: momentum must be in [0, 1], got {}", momentum));
  }
  if (!(eps >= 0.0 && std::isfinite(eps))) {
    throw ValueError(fmt::format("batch_norm2d: eps must be finite and >= 0, got {}", eps));
  }
  return apply(BatchNorm2d{running_mean, running_var, training, momentum, eps}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(batch_norm2d, BatchNorm2d)

}  // namespace tapegrad
