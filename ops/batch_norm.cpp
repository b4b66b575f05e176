// batch_norm ([N, C] or [N, C, L]) and batch_norm2d ([N, C, H, W]): per-channel normalisation,
// as torch.nn.functional.batch_norm. One op for both; x is read as [N, C, P] with P the product
// of the dims after C (1, L or H·W).
//   training: mean_c, var_c = biased mean and variance of x[:, c] over M = N·P values;
//   eval:     mean_c, var_c = running_mean[c], running_var[c].
//   invstd_c = 1/sqrt(var_c + eps),  xhat = (x - mean_c)·invstd_c,  y = weight_c·xhat + bias_c
// In training the running statistics move towards the batch ones (PyTorch's update, with the
// unbiased variance M/(M-1)·var_c):  running = (1 - momentum)·running + momentum·batch.
// VJPs, per channel, with g = grad_out and w = weight (1 without affine):
//   grad_bias   = Σ g
//   grad_weight = Σ g·xhat
//   grad_x      = w·invstd·g                                         (eval: mean, var constant)
//   grad_x      = w·invstd/M · (M·g - Σ g - xhat·Σ g·xhat)           (training: mean and var
//                 depend on x; ops/detail/norm.hpp writes it as a·g + k1·(x - mean) + k0)
// The forward saves x (no larger than xhat, which it never allocates), mean and invstd; the
// VJP recomputes xhat. Recorded for create_graph, the same formulas run as ops on x, with
// mean and invstd recomputed from x in training, so that second derivatives see how they
// depend on x. Both forward and VJP are three steps: per-channel sums, per-channel
// coefficients, an element-wise pass (channel_passes). With H·W > 1 on one thread each channel
// goes through all three while its values are in cache, so that x (and grad_out) come from
// memory once; on several, each thread reads the part of x it most likely wrote itself.
#include <algorithm>
#include <array>
#include <cmath>

#include <omp.h>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/norm.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// x as [N, C, P].
struct ChannelLayout {
  std::int64_t n, c, plane;
  explicit ChannelLayout(const Shape& s) : n(s[0]), c(s[1]), plane(1) {
    for (std::size_t d = 2; d < s.size(); ++d) plane *= s[d];
  }
};

// The loops over x [N, C, P]. With P > 1 a channel is N runs of P contiguous values: one
// thread takes the channels one by one, several threads each a consecutive share of the runs
// (channel_passes). With P = 1 ([N, C]) a channel is a column: the rows are read
// in order and the inner loops run across the channels, so that they vectorise.

/// Channels [begin, end) of x [N, C, P] with P != 1, each in three steps while its values are
/// still in cache: {s1, s2} = Σ sums(i, ch) over the flat indices i of its elements (in
/// double; 0 without `with_sums`), then coefficients(ch, s1, s2), then write(offset, ch) for
/// each of its N runs of P.
template <class Sums, class Coefficients, class Write>
TAPEGRAD_MULTIVERSION void fused_channels(const ChannelLayout& l, std::int64_t begin, std::int64_t end,
                                          bool with_sums, Sums sums, Coefficients coefficients, Write write) {
  for (std::int64_t ch = begin; ch < end; ++ch) {
    double s1 = 0, s2 = 0;
    for (std::int64_t b = 0; with_sums && b < l.n; ++b) {
      const std::int64_t run = (b * l.c + ch) * l.plane;
      const auto [r1, r2] = detail::lane_sums<2>(l.plane, [&](std::int64_t i) { return sums(run + i, ch); });
      s1 += r1;
      s2 += r2;
    }
    coefficients(ch, s1, s2);
    for (std::int64_t b = 0; b < l.n; ++b) write((b * l.c + ch) * l.plane, ch);
  }
}

/// Runs [begin, end) of x [N, C, P] (run r: channel r mod C of image r div C, P contiguous
/// values), P != 1: s1[ch], s2[ch] += the sums(i, ch) of each run's elements, in double.
template <class Sums>
TAPEGRAD_MULTIVERSION void run_sums(const ChannelLayout& l, std::int64_t begin, std::int64_t end, Sums sums, double* s1,
                                    double* s2) {
  for (std::int64_t r = begin; r < end; ++r) {
    const std::int64_t ch = r % l.c;
    const auto [r1, r2] = detail::lane_sums<2>(l.plane, [&](std::int64_t i) { return sums(r * l.plane + i, ch); });
    s1[ch] += r1;
    s2[ch] += r2;
  }
}

/// The three steps of fused_channels over every channel of x [N, C, P]. With P != 1 on one
/// thread, channel by channel; on several, each thread takes a consecutive share of the runs
/// (the share of x an element-wise op gives it, where the op before most likely wrote it),
/// sums them per channel, the threads' sums are added in thread order, and each thread writes
/// its runs. Split by channels, half of what a thread read came from the other core's cache,
/// which on a two-CCD host is as slow as memory (a 4 MB read 2-4x slower than from this
/// core's own L2/L3): in a ResNet-18 step at two threads batch norm then took 1.34x the CPU
/// time it takes at one; split by runs, 0.82x. With P = 1 ([N, C]) a channel is a column:
/// the sums run down the rows in order, vectorised across the channels, then write_row(b)
/// writes row b of the output, the rows split across the threads. Without `with_sums`,
/// s1 = s2 = 0 and x is not read for them.
template <class Sums, class Coefficients, class Write, class WriteRow>
void channel_passes(const ChannelLayout& l, bool with_sums, Sums sums, Coefficients coefficients,
                    Write write, WriteRow write_row) {
  const std::int64_t c = l.c;
  const bool parallel = l.n * c * l.plane >= detail::kParallelElements;
  if (l.plane != 1 && (!parallel || omp_get_max_threads() == 1)) {
    fused_channels(l, 0, c, with_sums, sums, coefficients, write);
    return;
  }
  if (l.plane != 1) {
    const std::int64_t runs = l.n * c, team = omp_get_max_threads();
    std::vector<double> partial(static_cast<std::size_t>(2 * team * c));
#pragma omp parallel num_threads(team)
    {
      const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const std::int64_t begin = runs * t / threads, end = runs * (t + 1) / threads;
      double* mine = partial.data() + 2 * t * c;
      if (with_sums) run_sums(l, begin, end, sums, mine, mine + c);
#pragma omp barrier
#pragma omp for schedule(static)
      for (std::int64_t ch = 0; ch < c; ++ch) {
        double s1 = 0, s2 = 0;
        for (std::int64_t k = 0; k < threads; ++k) {
          s1 += partial[static_cast<std::size_t>(2 * k * c + ch)];
          s2 += partial[static_cast<std::size_t>((2 * k + 1) * c + ch)];
        }
        coefficients(ch, s1, s2);
      }
      for (std::int64_t r = begin; r < end; ++r) write(r * l.plane, r % c);
      detail::stream_fence();  // write may have used streaming stores
    }
    return;
  }
  std::vector<double> sum1(static_cast<std::size_t>(c)), sum2(sum1.size());
  for (std::int64_t b = 0; with_sums && b < l.n; ++b) {
#pragma omp simd
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const std::array<double, 2> t = sums(b * c + ch, ch);
      sum1[ch] += t[0];
      sum2[ch] += t[1];
    }
  }
  for (std::int64_t ch = 0; ch < c; ++ch) coefficients(ch, sum1[ch], sum2[ch]);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t b = 0; b < l.n; ++b) write_row(b);
}

/// Image: batch_norm2d, x [N, C, H, W]; otherwise batch_norm, x [N, C] or [N, C, L].
template <bool Image>
struct BatchNormOp {
  static constexpr std::string_view name = Image ? "batch_norm2d" : "batch_norm";
  Tensor running_mean;  // [C] or undefined; updated in place by a training forward
  Tensor running_var;
  bool training = false;
  double momentum = 0.1;
  double eps = 1e-5;

  std::string attributes() const {
    return fmt::format("training={}, momentum={}, eps={}", training, momentum, eps);
  }

  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& x = in[0];
    detail::check_floating(name, x);
    if (Image && x.dim() != 4) {
      throw ShapeError(fmt::format("batch_norm2d: expects input [N, C, H, W], got {}", x.shape()));
    }
    if (!Image && x.dim() != 2 && x.dim() != 3) {
      throw ShapeError(fmt::format("batch_norm: expects input [N, C] or [N, C, L], got {} "
                                   "(batch_norm2d takes [N, C, H, W])", x.shape()));
    }
    const Shape channels{x.shape()[1]};
    const std::string meaning = fmt::format("one value per channel of input {}", x.shape());
    detail::check_norm_parameter(name, "weight", in[1], x, channels, meaning);
    detail::check_norm_parameter(name, "bias", in[2], x, channels, meaning);
    detail::check_norm_parameter(name, "running_mean", running_mean, x, channels, meaning);
    detail::check_norm_parameter(name, "running_var", running_var, x, channels, meaning);
    if (running_mean.defined() != running_var.defined()) {
      throw ValueError(fmt::format("{}: running_mean and running_var must both be given or both "
                                   "be undefined", name));
    }
    if (!training && !running_mean.defined()) {
      throw ValueError(fmt::format("{}: evaluation mode (training=false) needs running_mean and "
                                   "running_var", name));
    }
    const ChannelLayout l(x.shape());
    if (training && l.n * l.plane <= 1) {
      throw ValueError(fmt::format("{}: training needs more than 1 value per channel, got input "
                                   "{} ({} = {})", name, x.shape(), Image ? "N·H·W" : "N·L",
                                   l.n * l.plane));
    }
    return x.meta();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const Tensor& weight = in[1];
    const Tensor& bias = in[2];
    const ChannelLayout l(x.shape());
    const auto c = static_cast<std::size_t>(l.c);
    const double m = static_cast<double>(l.n * l.plane);
    Tensor out = detail::make_tensor(x.meta());
    Tensor mean_c = detail::make_tensor(Shape{l.c}, x.dtype());
    Tensor invstd = detail::make_tensor(Shape{l.c}, x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* py = out.data<T>();
      const bool stream = detail::streams<T>(x.numel());
      // In training, one pass over x, each channel's values shifted by the channel's first
      // value s: var = Σ(x - s)²/M - (Σ(x - s)/M)² cancels only as much as |mean - s| is
      // large against the spread, which for a value drawn from the channel it rarely is.
      std::vector<double> first(c), batch_mean(c), batch_var(c);
      for (std::size_t k = 0; training && k < c; ++k) first[k] = static_cast<double>(px[k * static_cast<std::size_t>(l.plane)]);
      const double* base = first.data();
      // y = (x - mean)·scale + shift per channel.
      std::vector<T> scale(c), shift(c, T(0));
      T* mean_t = mean_c.data<T>();
      channel_passes(
          l, training,
          [px, base](std::int64_t i, std::int64_t ch) {
            const double d = static_cast<double>(px[i]) - base[ch];
            return std::array{d, d * d};
          },
          [&](std::int64_t ch, double sum, double sum_squares) {
            const auto k = static_cast<std::size_t>(ch);
            if (training) {
              const double shifted_mean = sum / m;
              batch_mean[k] = first[k] + shifted_mean;
              batch_var[k] = std::max(0.0, sum_squares / m - shifted_mean * shifted_mean);
            } else {
              batch_mean[k] = static_cast<double>(running_mean.data<T>()[k]);
              batch_var[k] = static_cast<double>(running_var.data<T>()[k]);
            }
            const double is = 1.0 / std::sqrt(batch_var[k] + eps);
            mean_t[k] = static_cast<T>(batch_mean[k]);
            invstd.data<T>()[k] = static_cast<T>(is);
            scale[k] = static_cast<T>((weight.defined() ? static_cast<double>(weight.data<T>()[k]) : 1.0) * is);
            if (bias.defined()) shift[k] = bias.data<T>()[k];
          },
          [&](std::int64_t off, std::int64_t ch) {
            detail::run_normalize(px + off, py + off, l.plane, mean_t[ch], scale[ch], shift[ch], detail::store_for(stream));
          },
          [&](std::int64_t b) {
            const std::int64_t off = b * l.c;
#pragma omp simd
            for (std::int64_t ch = 0; ch < l.c; ++ch) py[off + ch] = (px[off + ch] - mean_t[ch]) * scale[ch] + shift[ch];
          });
      if (training && running_mean.defined()) {
        // Through copy_, so the running statistics' version() records the update.
        Tensor new_mean = detail::make_tensor(running_mean.meta());
        Tensor new_var = detail::make_tensor(running_var.meta());
        const double unbias = m / (m - 1);
        for (std::size_t k = 0; k < c; ++k) {
          new_mean.data<T>()[k] = static_cast<T>((1 - momentum) * static_cast<double>(running_mean.data<T>()[k]) +
                                                 momentum * batch_mean[k]);
          new_var.data<T>()[k] = static_cast<T>((1 - momentum) * static_cast<double>(running_var.data<T>()[k]) +
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
    const ChannelLayout l(ctx.input(0).shape);
    const auto c = static_cast<std::size_t>(l.c);
    const double m = static_cast<double>(l.n * l.plane);
    const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1),
               need_b = ctx.needs_input_grad(2);
    Tensor grad_x = need_x ? detail::make_tensor(ctx.input(0)) : Tensor();
    Tensor grad_w = need_w ? detail::make_tensor(ctx.input(1)) : Tensor();
    Tensor grad_b = need_b ? detail::make_tensor(ctx.input(2)) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      const T* px = x.data<T>();
      const T* mean = mean_c.data<T>();
      T* gx = need_x ? grad_x.data<T>() : nullptr;
      const bool stream = detail::streams<T>(x.numel());
      std::vector<double> mean_d(c);
      for (std::size_t k = 0; k < c; ++k) mean_d[k] = static_cast<double>(mean[k]);
      const double* md = mean_d.data();
      // grad_x = a·g + k1·(x - mean) + k0 per channel (ops/detail/norm.hpp).
      std::vector<T> a(c), k1(c), k0(c);
      channel_passes(
          l, true,
          [g, px, md](std::int64_t i, std::int64_t ch) {
            const double gi = static_cast<double>(g[i]);
            return std::array{gi, gi * (static_cast<double>(px[i]) - md[ch])};
          },
          // sum_g = Σ g and sum_gc = Σ g·(x - mean); Σ g·xhat = invstd·sum_gc.
          [&](std::int64_t ch, double sum_g, double sum_gc) {
            const auto k = static_cast<std::size_t>(ch);
            const double is = static_cast<double>(invstd.data<T>()[k]);
            if (need_w) grad_w.data<T>()[k] = static_cast<T>(sum_gc * is);
            if (need_b) grad_b.data<T>()[k] = static_cast<T>(sum_g);
            const double scale = (weight.defined() ? static_cast<double>(weight.data<T>()[k]) : 1.0) * is;
            a[k] = static_cast<T>(scale);
            k1[k] = static_cast<T>(training ? -scale * is * is * sum_gc / m : 0.0);
            k0[k] = static_cast<T>(training ? -scale * sum_g / m : 0.0);
          },
          [&](std::int64_t off, std::int64_t ch) {
            if (gx != nullptr) detail::run_grad_input(g + off, px + off, gx + off, l.plane, a[ch], mean[ch], k1[ch], k0[ch], detail::store_for(stream));
          },
          [&](std::int64_t b) {
            const std::int64_t off = b * l.c;
            if (gx == nullptr) return;
#pragma omp simd
            for (std::int64_t ch = 0; ch < l.c; ++ch) {
              gx[off + ch] = a[ch] * g[off + ch] + k1[ch] * (px[off + ch] - mean[ch]) + k0[ch];
            }
          });
    });
    return {grad_x, grad_w, grad_b};
  }

  // Recorded for create_graph: the same formulas as ops on x [N, C, *] and per-channel
  // [1, C, 1, ...] statistics, which in training are functions of x again.
  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Tensor x = ctx.saved(0);
    std::vector<std::int64_t> dims = {0};
    Shape per_channel{1, x.shape()[1]};
    for (std::size_t d = 2; d < x.dim(); ++d) {
      dims.push_back(static_cast<std::int64_t>(d));
      per_channel.push_back(1);
    }
    detail::RecordedNormStats s;
    if (training) {
      s = detail::recorded_norm_stats(x, dims, eps);
    } else {
      s.rstd = reshape(ctx.saved(2), per_channel);
      s.xhat = (x - reshape(ctx.saved(1), per_channel)) * s.rstd;
    }
    Tensor grad_x, grad_w, grad_b;
    if (ctx.needs_input_grad(0)) {
      const Tensor weight = ctx.saved(3);
      const Tensor gw = weight.defined() ? grad_out * reshape(weight, per_channel) : grad_out;
      grad_x = training ? detail::recorded_norm_grad_input(s, gw, dims) : gw * s.rstd;
    }
    if (ctx.needs_input_grad(1)) grad_w = sum(grad_out * s.xhat, dims);
    if (ctx.needs_input_grad(2)) grad_b = sum(grad_out, dims);
    return {grad_x, grad_w, grad_b};
  }

  static std::vector<Sample> samples();
};

template <bool Image>
std::vector<Sample> BatchNormOp<Image>::samples() {
  using detail::sample_tensor;
  auto stats = [](std::int64_t c, std::uint64_t seed) {
    return std::pair{sample_tensor({c}, -0.5, 0.5, seed, false),
                     sample_tensor({c}, 0.5, 2.0, seed + 1, false)};
  };
  auto training_fn = [](bool affine) {
    return [affine](const std::vector<Tensor>& in) {
      const Tensor w = affine ? in[1] : Tensor(), b = affine ? in[2] : Tensor();
      return Image ? batch_norm2d(in[0], Tensor(), Tensor(), w, b, true)
                   : batch_norm(in[0], Tensor(), Tensor(), w, b, true);
    };
  };
  const Shape affine_shape = Image ? Shape{2, 3, 4, 5} : Shape{5, 3};
  const Shape plain_shape = Image ? Shape{3, 3, 1, 2} : Shape{3, 3, 4};
  const Shape eval_shape = Image ? Shape{2, 3, 3, 2} : Shape{2, 3, 3};
  const auto running = stats(3, 331);
  const Tensor rm = running.first, rv = running.second;
  return {
      {fmt::format("training, affine, {}", affine_shape),
       {sample_tensor(affine_shape, -2, 2, 321), sample_tensor({3}, 0.5, 1.5, 322),
        sample_tensor({3}, -1, 1, 323)},
       training_fn(true)},
      {fmt::format("training, no affine, {}", plain_shape),
       {sample_tensor(plain_shape, -1, 1, 324)}, training_fn(false)},
      {fmt::format("eval, running statistics, {}", eval_shape),
       {sample_tensor(eval_shape, -2, 2, 325), sample_tensor({3}, 0.5, 1.5, 326),
        sample_tensor({3}, -1, 1, 327)},
       [rm, rv](const std::vector<Tensor>& in) {
         return Image ? batch_norm2d(in[0], rm, rv, in[1], in[2], false)
                      : batch_norm(in[0], rm, rv, in[1], in[2], false);
       }},
  };
}

template <bool Image>
Tensor apply_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                        const Tensor& weight, const Tensor& bias, bool training, double momentum,
                        double eps) {
  constexpr std::string_view name = BatchNormOp<Image>::name;
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw ValueError(fmt::format("{}: momentum must be in [0, 1], got {}", name, momentum));
  }
  detail::check_norm_eps(name, eps);
  return apply(BatchNormOp<Image>{running_mean, running_var, training, momentum, eps},
               {x, weight, bias});
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  return apply_batch_norm<false>(x, running_mean, running_var, weight, bias, training, momentum,
                                 eps);
}

Tensor batch_norm2d(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& weight, const Tensor& bias, bool training, double momentum,
                    double eps) {
  return apply_batch_norm<true>(x, running_mean, running_var, weight, bias, training, momentum,
                                eps);
}

TAPEGRAD_BUILTIN_OPS(batch_norm, BatchNormOp<false>, BatchNormOp<true>)

}  // namespace tapegrad
