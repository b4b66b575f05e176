// group_norm: x [N, C, *] with its C channels in G = num_groups groups of C/G, as
// torch.nn.functional.group_norm. Each (sample n, group j) is a row of M = C/G·P values
// (P = prod(*)), contiguous in x:
//   mean, var = biased mean and variance of the row,  rstd = 1/sqrt(var + eps)
//   xhat = (x - mean)·rstd,  y = xhat·weight_c + bias_c   (weight, bias: [C], optional)
// VJPs, with g = grad_out and w = weight (1 without affine):
//   grad_bias_c   = Σ_{n, P} g
//   grad_weight_c = Σ_{n, P} g·xhat
//   grad_x        = rstd·(g·w - mean_row(g·w) - xhat·mean_row(g·w·xhat))  (ops/detail/norm.hpp)
// The forward saves x, mean and rstd ([N, G], as PyTorch saves them) and the weight; the VJP
// recomputes xhat. Recorded for create_graph, the same formulas run as ops on x viewed as
// [N, G, M], with mean and rstd recomputed from x. Each thread takes a run of rows, keeping
// their per-channel sums Σ g and Σ g·(x - mean), from which grad_weight and grad_bias are
// added up. The row loops are compiled for each x86-64 level (autograd/simd.hpp).
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/norm.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// x [N, C, *] as N·G rows of C/G channels of P values.
struct GroupLayout {
  std::int64_t n, c, groups, channels_per_group, plane;
  GroupLayout(const Shape& s, std::int64_t num_groups)
      : n(s[0]), c(s[1]), groups(num_groups), channels_per_group(s[1] / num_groups), plane(1) {
    for (std::size_t d = 2; d < s.size(); ++d) plane *= s[d];
  }
  std::int64_t rows() const { return n * groups; }
  std::int64_t row_size() const { return channels_per_group * plane; }
};

/// Rows [begin, end) of the forward: mean and rstd saved, y = xhat·w_c + b_c (w, b may be null).
template <class T>
TAPEGRAD_MULTIVERSION void forward_rows(const GroupLayout& l, const T* x, const T* w, const T* b,
                                        T* __restrict y, T* mean_out, T* rstd_out, std::int64_t begin,
                                        std::int64_t end, double eps, bool stream) {
  const std::int64_t m = l.row_size(), plane = l.plane;
  for (std::int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * m;
    const auto [mean, var] = m > 0 ? detail::run_mean_var(xr, m) : std::array{0.0, 0.0};
    const double rstd = 1.0 / std::sqrt(var + eps);
    mean_out[r] = static_cast<T>(mean);
    rstd_out[r] = static_cast<T>(rstd);
    for (std::int64_t j = 0; j < l.channels_per_group; ++j) {
      const std::int64_t ch = r % l.groups * l.channels_per_group + j;
      const double scale = (w != nullptr ? static_cast<double>(w[ch]) : 1.0) * rstd;
      detail::run_normalize(xr + j * plane, y + r * m + j * plane, plane, static_cast<T>(mean),
                            static_cast<T>(scale), b != nullptr ? b[ch] : T(0), detail::store_for(stream));
    }
  }
  if (stream) detail::stream_fence();
}

/// Rows [begin, end) of the VJP: per (n, c), sum_g = Σ g and sum_gc = Σ g·(x - mean) over its
/// P values, and grad_x when not null.
template <class T>
TAPEGRAD_MULTIVERSION void backward_rows(const GroupLayout& l, const T* g, const T* x, const T* w,
                                         const T* mean_r, const T* rstd_r, std::int64_t begin,
                                         std::int64_t end, double* sum_g, double* sum_gc,
                                         T* __restrict grad_x, detail::Store how) {
  const std::int64_t m = l.row_size(), plane = l.plane, cpg = l.channels_per_group;
  for (std::int64_t r = begin; r < end; ++r) {
    const double mean = static_cast<double>(mean_r[r]), rstd = static_cast<double>(rstd_r[r]);
    const std::int64_t first = r * cpg;  // n·C + the group's first channel
    double s1 = 0, s2 = 0;  // Σ g·w and Σ g·w·(x - mean) over the row
    for (std::int64_t j = 0; j < cpg; ++j) {
      const std::int64_t off = r * m + j * plane;
      const auto [sg, sgc] = detail::run_sum_and_centered_dot(g + off, x + off, plane, mean);
      sum_g[first + j] = sg;
      sum_gc[first + j] = sgc;
      const double wj = w != nullptr ? static_cast<double>(w[(first + j) % l.c]) : 1.0;
      s1 += wj * sg;
      s2 += wj * sgc;
    }
    if (grad_x == nullptr || m == 0) continue;
    const double k1 = -rstd * rstd * rstd * s2 / static_cast<double>(m);
    const double k0 = -rstd * s1 / static_cast<double>(m);
    for (std::int64_t j = 0; j < cpg; ++j) {
      const std::int64_t off = r * m + j * plane;
      const double wj = w != nullptr ? static_cast<double>(w[(first + j) % l.c]) : 1.0;
      detail::run_grad_input(g + off, x + off, grad_x + off, plane, static_cast<T>(wj * rstd),
                             static_cast<T>(mean), static_cast<T>(k1), static_cast<T>(k0), how);
    }
  }
  if (how == detail::Store::stream) detail::stream_fence();
}

struct GroupNormOp {
  static constexpr std::string_view name = "group_norm";
  std::int64_t num_groups;
  double eps = 1e-5;

  std::string attributes() const { return fmt::format("num_groups={}, eps={}", num_groups, eps); }

  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& x = in[0];
    detail::check_floating(name, x);
    if (x.dim() < 2) {
      throw ShapeError(fmt::format("group_norm: expects input [N, C, *], got {}", x.shape()));
    }
    const std::int64_t c = x.shape()[1];
    if (c % num_groups != 0) {
      throw ShapeError(fmt::format("group_norm: the C={} channels of input {} must be divisible "
                                   "by num_groups={} ({} % {} = {})", c, x.shape(), num_groups, c,
                                   num_groups, c % num_groups));
    }
    const std::string meaning = fmt::format("one value per channel of input {}", x.shape());
    detail::check_norm_parameter(name, "weight", in[1], x, Shape{c}, meaning);
    detail::check_norm_parameter(name, "bias", in[2], x, Shape{c}, meaning);
    return x.meta();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const GroupLayout l(x.shape(), num_groups);
    Tensor out = detail::make_tensor(x.meta());
    Tensor mean_r = detail::make_tensor(Shape{l.n, l.groups}, x.dtype());
    Tensor rstd_r = detail::make_tensor(Shape{l.n, l.groups}, x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* w = in[1].defined() ? in[1].data<T>() : nullptr;
      const T* b = in[2].defined() ? in[2].data<T>() : nullptr;
      detail::parallel_ranges(l.rows(), x.numel() >= detail::kParallelElements,
                              [&](std::int64_t begin, std::int64_t end, int) {
                                forward_rows(l, x.data<T>(), w, b, out.data<T>(), mean_r.data<T>(),
                                             rstd_r.data<T>(), begin, end, eps, detail::streams<T>(x.numel()));
                              });
    });
    ctx.save(x);
    ctx.save(mean_r);
    ctx.save(rstd_r);
    ctx.save(ctx.needs_input_grad(0) ? in[1] : Tensor());
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const Tensor x = ctx.saved(0);
    const Tensor mean_r = ctx.saved(1);
    const Tensor rstd_r = ctx.saved(2);
    const Tensor weight = ctx.saved(3);
    const GroupLayout l(ctx.input(0).shape, num_groups);
    const std::int64_t c = l.c;
    const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1),
               need_b = ctx.needs_input_grad(2);
    // grad_x added into the sum the engine is making, where there is one.
    const Tensor sum_x = ctx.grad_sum(0);
    Tensor grad_x = sum_x.defined() ? sum_x : need_x ? detail::make_tensor(ctx.input(0)) : Tensor();
    Tensor grad_w = need_w ? detail::make_tensor(ctx.input(1)) : Tensor();
    Tensor grad_b = need_b ? detail::make_tensor(ctx.input(2)) : Tensor();
    // Per (n, c): Σ g and Σ g·(x - mean) over its P values.
    std::vector<double> sum_g(static_cast<std::size_t>(l.n * c)), sum_gc(sum_g.size());
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::parallel_ranges(l.rows(), x.numel() >= detail::kParallelElements,
                              [&](std::int64_t begin, std::int64_t end, int) {
                                backward_rows(l, grad_out.data<T>(), x.data<T>(),
                                              weight.defined() ? weight.data<T>() : nullptr,
                                              mean_r.data<T>(), rstd_r.data<T>(), begin, end, sum_g.data(),
                                              sum_gc.data(), need_x ? grad_x.data<T>() : nullptr,
                                              sum_x.defined() ? detail::Store::add
                                                              : detail::store_for(detail::streams<T>(x.numel())));
                              });
      for (std::int64_t ch = 0; ch < c; ++ch) {
        double total_w = 0, total_b = 0;
        for (std::int64_t b = 0; b < l.n; ++b) {
          const auto at = static_cast<std::size_t>(b * c + ch);
          const auto row = b * l.groups + ch / l.channels_per_group;
          total_w += sum_gc[at] * static_cast<double>(rstd_r.data<T>()[row]);
          total_b += sum_g[at];
        }
        if (need_w) grad_w.data<T>()[ch] = static_cast<T>(total_w);
        if (need_b) grad_b.data<T>()[ch] = static_cast<T>(total_b);
      }
    });
    return {grad_x, grad_w, grad_b};
  }

  // Recorded for create_graph: the same formulas as ops on x viewed as [N, G, M].
  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Tensor x = ctx.saved(0);
    const GroupLayout l(x.shape(), num_groups);
    const Shape rows{l.n, l.groups, l.row_size()};
    Shape per_channel{1, l.c};
    std::vector<std::int64_t> channel_sum_dims = {0};
    for (std::size_t d = 2; d < x.dim(); ++d) {
      per_channel.push_back(1);
      channel_sum_dims.push_back(static_cast<std::int64_t>(d));
    }
    const detail::RecordedNormStats s = detail::recorded_norm_stats(reshape(x, rows), {2}, eps);
    Tensor grad_x, grad_w, grad_b;
    if (ctx.needs_input_grad(0)) {
      const Tensor weight = ctx.saved(3);
      const Tensor gw = weight.defined() ? grad_out * reshape(weight, per_channel) : grad_out;
      grad_x = reshape(detail::recorded_norm_grad_input(s, reshape(gw, rows), {2}), x.shape());
    }
    if (ctx.needs_input_grad(1)) grad_w = sum(grad_out * reshape(s.xhat, x.shape()), channel_sum_dims);
    if (ctx.needs_input_grad(2)) grad_b = sum(grad_out, channel_sum_dims);
    return {grad_x, grad_w, grad_b};
  }

  static std::vector<Sample> samples();
};

std::vector<Sample> GroupNormOp::samples() {
  using detail::sample_tensor;
  auto fn = [](std::int64_t groups, bool affine) {
    return [groups, affine](const std::vector<Tensor>& in) {
      return group_norm(in[0], groups, affine ? in[1] : Tensor(), affine ? in[2] : Tensor());
    };
  };
  return {
      {"2 groups of 3, affine, [2, 6, 3]",
       {sample_tensor({2, 6, 3}, -2, 2, 501), sample_tensor({6}, 0.5, 1.5, 502),
        sample_tensor({6}, -1, 1, 503)},
       fn(2, true)},
      {"2 groups of 2, affine, [2, 4, 2, 3]",
       {sample_tensor({2, 4, 2, 3}, -2, 2, 504), sample_tensor({4}, 0.5, 1.5, 505),
        sample_tensor({4}, -1, 1, 506)},
       fn(2, true)},
      {"1 group, no affine, [3, 2, 3]", {sample_tensor({3, 2, 3}, -1, 1, 507)}, fn(1, false)},
      {"a group per channel, affine, [2, 3, 4]",
       {sample_tensor({2, 3, 4}, -2, 2, 508), sample_tensor({3}, 0.5, 1.5, 509),
        sample_tensor({3}, -1, 1, 510)},
       fn(3, true)},
  };
}

}  // namespace

Tensor group_norm(const Tensor& x, std::int64_t num_groups, const Tensor& weight,
                  const Tensor& bias, double eps) {
  if (num_groups <= 0) {
    throw ValueError(fmt::format("group_norm: num_groups must be positive, got {}", num_groups));
  }
  detail::check_norm_eps("group_norm", eps);
  return apply(GroupNormOp{num_groups, eps}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(group_norm, GroupNormOp)

}  // namespace tapegrad
