// layer_norm: x [*, D1, ..., Dk] normalised over its last k dims (normalized_shape), as
// torch.nn.functional.layer_norm. Each of the R = prod(*) rows of M = D1·...·Dk values:
//   mean, var = biased mean and variance of the row,  rstd = 1/sqrt(var + eps)
//   xhat = (x - mean)·rstd,  y = xhat·weight + bias   (weight, bias: normalized_shape, optional)
// VJPs, with g = grad_out and w = weight (1 without affine), sums over the rows:
//   grad_bias   = Σ_rows g
//   grad_weight = Σ_rows g·xhat
//   grad_x      = rstd·(g·w - mean_row(g·w) - xhat·mean_row(g·w·xhat))  (ops/detail/norm.hpp)
// The forward saves x, mean and rstd ([R], as PyTorch saves them) and the weight; the VJP
// recomputes xhat. Recorded for create_graph, the same formulas run as ops with mean and
// rstd recomputed from x. Each thread takes a run of rows; the weight and bias gradients sum
// each thread's rows into a buffer of its own, added up at the end. The row loops are
// compiled for each x86-64 level (autograd/simd.hpp).
#include <omp.h>

#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/norm.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// Rows [begin, end) of the forward, each of m values: mean and rstd saved, y = xhat·w + b.
template <class T>
TAPEGRAD_MULTIVERSION void forward_rows(const T* x, const T* w, const T* b, T* __restrict y, T* mean_out,
                                        T* rstd_out, std::int64_t begin, std::int64_t end, std::int64_t m,
                                        double eps, bool stream) {
  for (std::int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * m;
    const auto [mean, var] = detail::run_mean_var(xr, m);
    const T mean_t = static_cast<T>(mean), rstd = static_cast<T>(1.0 / std::sqrt(var + eps));
    mean_out[r] = mean_t;
    rstd_out[r] = rstd;
    detail::write_run(y + r * m, m, detail::store_for(stream), [=](std::int64_t i) { return (xr[i] - mean_t) * rstd * w[i] + b[i]; });
  }
  if (stream) detail::stream_fence();
}

/// Rows [begin, end) of the VJP: grad_x (when not null), and Σ g·xhat and Σ g added into
/// sum_gxhat and sum_g (when not null). One pass over each row from memory takes the row's
/// sums for grad_x and adds its terms into the columns' sums (a pass of its own for the
/// columns, converting g and x to double again, made these rows 10-14 % slower); a second
/// pass, from cache, writes grad_x.
template <bool kColumns, class T>
TAPEGRAD_MULTIVERSION void backward_rows(const T* g, const T* x, const T* w, const T* mean_r, const T* rstd_r,
                                         std::int64_t begin, std::int64_t end, std::int64_t m,
                                         T* __restrict grad_x, double* __restrict sum_gxhat,
                                         double* __restrict sum_g, detail::Store how) {
  const double inv_m = 1.0 / static_cast<double>(m);
  for (std::int64_t r = begin; r < end; ++r) {
    const T* gr = g + r * m;
    const T* xr = x + r * m;
    const T mean = mean_r[r], rstd = rstd_r[r];
    const double mean_d = static_cast<double>(mean), rs = static_cast<double>(rstd);
    // Σ g·w and Σ g·w·(x - mean) over the row.
    const auto [s1, s2] = detail::lane_sums<2>(m, [&](std::int64_t i) {
      const double gi = static_cast<double>(gr[i]), d = static_cast<double>(xr[i]) - mean_d;
      if constexpr (kColumns) {
        sum_gxhat[i] += gi * d * rs;
        sum_g[i] += gi;
      }
      const double gw = gi * static_cast<double>(w[i]);
      return std::array{gw, gw * d};
    });
    if (grad_x == nullptr) continue;
    const T k1 = static_cast<T>(-rs * rs * rs * s2 * inv_m), k0 = static_cast<T>(-rs * s1 * inv_m);
    detail::write_run(grad_x + r * m, m, how,
                      [=](std::int64_t i) { return rstd * w[i] * gr[i] + k1 * (xr[i] - mean) + k0; });
  }
  if (how == detail::Store::stream) detail::stream_fence();
}

struct LayerNormOp {
  static constexpr std::string_view name = "layer_norm";
  Shape normalized_shape;
  double eps = 1e-5;

  std::string attributes() const {
    return fmt::format("normalized_shape={}, eps={}", normalized_shape, eps);
  }

  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& x = in[0];
    detail::check_floating(name, x);
    const std::size_t k = normalized_shape.size();
    if (k == 0) throw ValueError("layer_norm: normalized_shape must have at least one dim, got []");
    if (x.dim() < k) {
      throw ShapeError(fmt::format("layer_norm: input {} has fewer dims than normalized_shape {}",
                                   x.shape(), normalized_shape));
    }
    Shape trailing;
    for (std::size_t d = x.dim() - k; d < x.dim(); ++d) trailing.push_back(x.shape()[d]);
    if (trailing != normalized_shape) {
      throw ShapeError(fmt::format("layer_norm: normalized_shape {} must equal the last {} dims "
                                   "of input {}, which are {}", normalized_shape, k, x.shape(),
                                   trailing));
    }
    const std::string meaning = fmt::format("normalized_shape, the last {} dims of input {}", k,
                                            x.shape());
    detail::check_norm_parameter(name, "weight", in[1], x, normalized_shape, meaning);
    detail::check_norm_parameter(name, "bias", in[2], x, normalized_shape, meaning);
    return x.meta();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const std::int64_t m = normalized_shape.numel();
    const std::int64_t rows = m > 0 ? x.numel() / m : 0;
    Tensor out = detail::make_tensor(x.meta());
    Tensor mean_r = detail::make_tensor(Shape{rows}, x.dtype());
    Tensor rstd_r = detail::make_tensor(Shape{rows}, x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      // Without affine, a weight of ones and a bias of zeros keep one vectorised loop.
      const std::vector<T> ones(in[1].defined() ? 0 : static_cast<std::size_t>(m), T(1));
      const std::vector<T> zeros(in[2].defined() ? 0 : static_cast<std::size_t>(m), T(0));
      const T* w = in[1].defined() ? in[1].data<T>() : ones.data();
      const T* b = in[2].defined() ? in[2].data<T>() : zeros.data();
      detail::parallel_ranges(rows, x.numel() >= detail::kParallelElements,
                              [&](std::int64_t begin, std::int64_t end, int) {
                                forward_rows(x.data<T>(), w, b, out.data<T>(), mean_r.data<T>(),
                                             rstd_r.data<T>(), begin, end, m, eps,
                                             detail::streams<T>(x.numel()));
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
    const std::int64_t m = normalized_shape.numel(), rows = mean_r.numel();
    const bool need_x = ctx.needs_input_grad(0), need_w = ctx.needs_input_grad(1),
               need_b = ctx.needs_input_grad(2);
    // grad_x added into the sum the engine is making, where there is one.
    const Tensor sum_x = ctx.grad_sum(0);
    Tensor grad_x = sum_x.defined() ? sum_x : need_x ? detail::make_tensor(ctx.input(0)) : Tensor();
    Tensor grad_w = need_w ? detail::make_tensor(ctx.input(1)) : Tensor();
    Tensor grad_b = need_b ? detail::make_tensor(ctx.input(2)) : Tensor();
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const std::vector<T> ones(weight.defined() ? 0 : static_cast<std::size_t>(m), T(1));
      const T* w = weight.defined() ? weight.data<T>() : ones.data();
      const bool parallel = x.numel() >= detail::kParallelElements;
      // Per thread: Σ g·xhat and Σ g over its rows, for grad_weight and grad_bias.
      const bool need_wb = need_w || need_b;
      const std::size_t slot = need_wb ? 2 * static_cast<std::size_t>(m) : 0;
      std::vector<double> partial(slot * static_cast<std::size_t>(parallel ? omp_get_max_threads() : 1));
      detail::parallel_ranges(rows, parallel, [&](std::int64_t begin, std::int64_t end, int thread) {
        double* sum_gxhat = need_wb ? partial.data() + slot * static_cast<std::size_t>(thread) : nullptr;
        const auto rows_of = need_wb ? backward_rows<true, T> : backward_rows<false, T>;
        rows_of(grad_out.data<T>(), x.data<T>(), w, mean_r.data<T>(), rstd_r.data<T>(), begin, end, m,
                need_x ? grad_x.data<T>() : nullptr, sum_gxhat, need_wb ? sum_gxhat + m : nullptr,
                sum_x.defined() ? detail::Store::add : detail::store_for(detail::streams<T>(x.numel())));
      });
      for (std::int64_t i = 0; i < m; ++i) {
        double total_w = 0, total_b = 0;
        for (std::size_t at = 0; at < partial.size(); at += slot) {
          total_w += partial[at + static_cast<std::size_t>(i)];
          total_b += partial[at + static_cast<std::size_t>(m + i)];
        }
        if (need_w) grad_w.data<T>()[i] = static_cast<T>(total_w);
        if (need_b) grad_b.data<T>()[i] = static_cast<T>(total_b);
      }
    });
    return {grad_x, grad_w, grad_b};
  }

  // Recorded for create_graph: the same formulas as ops over the last k dims.
  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Tensor x = ctx.saved(0);
    const std::size_t lead = x.dim() - normalized_shape.size();
    std::vector<std::int64_t> row_dims, lead_dims;
    for (std::size_t d = 0; d < x.dim(); ++d) {
      (d < lead ? lead_dims : row_dims).push_back(static_cast<std::int64_t>(d));
    }
    const detail::RecordedNormStats s = detail::recorded_norm_stats(x, row_dims, eps);
    Tensor grad_x, grad_w, grad_b;
    if (ctx.needs_input_grad(0)) {
      const Tensor weight = ctx.saved(3);
      grad_x = detail::recorded_norm_grad_input(s, weight.defined() ? grad_out * weight : grad_out,
                                                row_dims);
    }
    // With no leading dims there is one row, and nothing to sum over.
    const auto over_rows = [&](const Tensor& t) { return lead == 0 ? t : sum(t, lead_dims); };
    if (ctx.needs_input_grad(1)) grad_w = over_rows(grad_out * s.xhat);
    if (ctx.needs_input_grad(2)) grad_b = over_rows(grad_out);
    return {grad_x, grad_w, grad_b};
  }

  static std::vector<Sample> samples();
};

std::vector<Sample> LayerNormOp::samples() {
  using detail::sample_tensor;
  auto fn = [](Shape shape, bool weight, bool bias) {
    return [shape, weight, bias](const std::vector<Tensor>& in) {
      return layer_norm(in[0], shape, weight ? in[1] : Tensor(),
                        bias ? in[weight ? 2 : 1] : Tensor());
    };
  };
  return {
      {"affine, [3, 5] over [5]",
       {sample_tensor({3, 5}, -2, 2, 401), sample_tensor({5}, 0.5, 1.5, 402),
        sample_tensor({5}, -1, 1, 403)},
       fn({5}, true, true)},
      {"affine, [2, 3, 4] over [3, 4]",
       {sample_tensor({2, 3, 4}, -2, 2, 404), sample_tensor({3, 4}, 0.5, 1.5, 405),
        sample_tensor({3, 4}, -1, 1, 406)},
       fn({3, 4}, true, true)},
      {"no affine, [4, 3]", {sample_tensor({4, 3}, -1, 1, 407)}, fn({3}, false, false)},
      {"weight only, one row [2, 3] over [2, 3]",
       {sample_tensor({2, 3}, -2, 2, 408), sample_tensor({2, 3}, 0.5, 1.5, 409)},
       fn({2, 3}, true, false)},
  };
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  detail::check_norm_eps("layer_norm", eps);
  return apply(LayerNormOp{normalized_shape, eps}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(layer_norm, LayerNormOp)

}  // namespace tapegrad
