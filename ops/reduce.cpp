// Reductions: sum and mean (over all elements or over dims, keepdim) and max over a dim.
//   sum:  out[j] = Σ_{i ↦ j} x[i]            grad_input[i] = grad_out[j]
//   mean: out[j] = Σ_{i ↦ j} x[i] / count     grad_input[i] = grad_out[j] / count
//   max:  out[j] = x[argmax_j]               grad_input[argmax_j] = grad_out[j], 0 elsewhere
// where i ↦ j maps an input index to the output index with the reduced dims dropped.
// max takes the first maximum in index order, and NaN counts as the maximum (PyTorch).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/reduce.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

using detail::DimMask;
using detail::keepdim_shape;
using detail::reduced_mask;
using detail::reduced_shape;

using detail::spread;

/// Sums x over the masked dims into a tensor of `out_shape` (same element count as the
/// keepdim shape). The dims are collapsed into runs that are all summed or all kept (an
/// NCHW sum over {0, 2, 3} is three runs: N summed, C kept, H·W summed), so the innermost
/// run is a contiguous loop; contiguous sums of f32 accumulate in double.
template <class T>
Tensor sum_kernel(const Tensor& x, const DimMask& mask,
                  const Shape& out_shape) {
  using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
  Tensor out = detail::make_tensor(out_shape, x.dtype());
  T* po = out.data<T>();
  std::fill_n(po, out.numel(), T(0));
  const T* px = x.data<T>();
  const Shape& s = x.shape();
  const std::int64_t n = x.numel();
  if (n == 0) return out;
  std::vector<std::int64_t> run;
  std::vector<bool> summed;
  for (std::size_t d = 0; d < s.size(); ++d) {
    if (s[d] == 1) continue;  // a dim of size 1 moves nothing
    if (!run.empty() && summed.back() == mask[d]) {
      run.back() *= s[d];
    } else {
      run.push_back(s[d]);
      summed.push_back(mask[d]);
    }
  }
  if (run.empty()) {
    po[0] = px[0];
    return out;
  }
  const std::size_t outer_runs = run.size() - 1;
  const std::int64_t inner = run.back();
  std::vector<std::int64_t> idx(outer_runs, 0);
  std::int64_t kept = 0;  // row-major index over the kept outer runs
  for (const T* src = px; src < px + n; src += inner) {
    if (summed.back()) {
      Acc acc = 0;
      for (std::int64_t j = 0; j < inner; ++j) acc += src[j];
      po[kept] += static_cast<T>(acc);
    } else {
      T* dst = po + kept * inner;
      for (std::int64_t j = 0; j < inner; ++j) dst[j] += src[j];
    }
    for (std::size_t k = outer_runs; k-- > 0;) {
      if (++idx[k] < run[k]) break;
      idx[k] = 0;
    }
    kept = 0;
    for (std::size_t k = 0; k < outer_runs; ++k) {
      if (!summed[k]) kept = kept * run[k] + idx[k];
    }
  }
  return out;
}

struct Sum {
  static constexpr std::string_view name = "sum";
  std::vector<std::int64_t> dims;  // empty: all
  bool keepdim = false;
  std::string attributes() const {
    return dims.empty() ? std::string() : fmt::format("dims=[{}], keepdim={}", fmt::join(dims, ", "), keepdim);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    if (!in[0].defined()) throw ValueError("sum: input is an undefined tensor");
    const auto mask = reduced_mask(name, in[0].shape(), dims);
    return {reduced_shape(in[0].shape(), mask, keepdim), in[0].dtype()};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const auto mask = reduced_mask(name, in[0].shape(), dims);
    const Shape out_shape = reduced_shape(in[0].shape(), mask, keepdim);
    return detail::dispatch_all(in[0].dtype(), [&](auto tag) {
      return sum_kernel<decltype(tag)>(in[0], mask, out_shape);
    });
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Shape& in_shape = ctx.input(0).shape;
    return {spread(grad_out, in_shape, reduced_mask(name, in_shape, dims))};
  }
  static std::vector<Sample> samples();
};

struct Mean {
  static constexpr std::string_view name = "mean";
  std::vector<std::int64_t> dims;
  bool keepdim = false;
  std::string attributes() const {
    return dims.empty() ? std::string() : fmt::format("dims=[{}], keepdim={}", fmt::join(dims, ", "), keepdim);
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    const auto mask = reduced_mask(name, in[0].shape(), dims);
    return {reduced_shape(in[0].shape(), mask, keepdim), in[0].dtype()};
  }
  static double count(const Shape& shape, const DimMask& mask) {
    return static_cast<double>(detail::reduced_count(shape, mask));
  }
  // The mean of an empty selection is nan (0/0), as in PyTorch.
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const auto mask = reduced_mask(name, in[0].shape(), dims);
    const Tensor total = dims.empty() ? sum(in[0]) : sum(in[0], dims, keepdim);
    return total / count(in[0].shape(), mask);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Shape& in_shape = ctx.input(0).shape;
    const auto mask = reduced_mask(name, in_shape, dims);
    return {spread(grad_out / count(in_shape, mask), in_shape, mask)};
  }
  static std::vector<Sample> samples();
};

struct Max {
  static constexpr std::string_view name = "max";
  static constexpr std::string_view kinks = "ties along dim";
  std::int64_t dim;
  bool keepdim = false;
  std::string attributes() const { return fmt::format("dim={}, keepdim={}", dim, keepdim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    const std::size_t d = detail::normalize_dim(name, dim, in[0].dim());
    if (!in[0].shape().empty() && in[0].shape()[d] == 0) {
      throw ShapeError(fmt::format("max: cannot reduce dim {} of size 0 (shape {})", dim,
                                   in[0].shape()));
    }
    DimMask mask{};
    mask[d] = true;
    return {reduced_shape(in[0].shape(), mask, keepdim), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const TensorMeta meta = infer(in);
    const auto [outer, n, inner] = detail::DimSplit(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    Tensor values = detail::make_tensor(meta);
    Tensor indices = detail::make_tensor(meta.shape, DType::i64);
    auto* pi = indices.data<std::int64_t>();
    detail::dispatch_floating(x.dtype(), name, [&, outer = outer, n = n, inner = inner](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* pv = values.data<T>();
      for (std::int64_t o = 0; o < outer; ++o) {
        for (std::int64_t j = 0; j < inner; ++j) {
          const T* base = px + o * n * inner + j;
          std::int64_t best = 0;
          for (std::int64_t k = 1; k < n && !std::isnan(base[best * inner]); ++k) {
            const T v = base[k * inner];
            if (v > base[best * inner] || std::isnan(v)) best = k;
          }
          pv[o * inner + j] = base[best * inner];
          pi[o * inner + j] = best;
        }
      }
    });
    ctx.save(indices);
    ctx.add_extra_output(indices);
    return values;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  // For the gradient checker: the winners, which decide where the gradient goes.
  Tensor branches(std::span<const Tensor> in, const Tensor&) const {
    OpContext ctx(nullptr);
    Max{*this}.forward(ctx, in);
    return ctx.take_extras()[0];
  }
  static std::vector<Sample> samples();
};

/// max's VJP and its adjoint along `dim` of a tensor of meta `in`, each the other's VJP,
/// with the winners' indices (i64, max's output shape) a constant input:
///   max_backward (scatter): grad_in[..., idx, ...] = grad_out; every other element 0
///   max_gather:             out = c[..., idx, ...]
template <bool Scatter>
struct WinnersAlongDim {
  static constexpr std::string_view name = Scatter ? "max_backward" : "max_gather";
  Max max;
  TensorMeta input;  // max's input
  std::string attributes() const { return max.attributes(); }
  TensorMeta reduced() const {
    DimMask mask{};
    mask[detail::normalize_dim(name, max.dim, input.shape.size())] = true;
    return {reduced_shape(input.shape, mask, max.keepdim), input.dtype};
  }
  TensorMeta infer(std::span<const Tensor> args) const {
    detail::check_meta(name, "values", args[0], Scatter ? reduced() : input);
    detail::check_meta(name, "the winners' indices", args[1], {reduced().shape, DType::i64});
    return Scatter ? input : reduced();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> args) {
    ctx.save(args[1]);
    const auto [outer, n, inner] = detail::DimSplit(input.shape, detail::normalize_dim(name, max.dim, input.shape.size()));
    Tensor out = Scatter ? zeros(input.shape, input.dtype) : detail::make_tensor(reduced());
    detail::dispatch_floating(input.dtype, name, [&, outer = outer, n = n, inner = inner](auto tag) {
      using T = decltype(tag);
      const T* src = args[0].data<T>();
      const std::int64_t* pi = args[1].data<std::int64_t>();
      T* dst = out.data<T>();
      for (std::int64_t o = 0; o < outer; ++o) {
        for (std::int64_t j = 0; j < inner; ++j) {
          const std::int64_t r = o * inner + j, full = (o * n + pi[r]) * inner + j;
          if constexpr (Scatter) dst[full] = src[r];
          else dst[r] = src[full];
        }
      }
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {apply(WinnersAlongDim<!Scatter>{max, input}, {grad_out, ctx.saved(0)}), Tensor()};
  }
  static std::vector<Sample> samples();
};

std::vector<Tensor> Max::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(WinnersAlongDim<true>{*this, ctx.input(0)}, {grad_out, ctx.saved(0)})};
}

std::vector<Sample> Sum::samples() {
  using detail::sample_tensor;
  return {
      {"all of [3, 4]", {sample_tensor({3, 4}, -1, 1, 31)}, [](const auto& in) { return sum(in[0]); }},
      {"dims [0, 2] of [2, 3, 4]", {sample_tensor({2, 3, 4}, -1, 1, 32)},
       [](const auto& in) { return sum(in[0], {0, 2}); }},
      {"dim -1 keepdim of [2, 3, 4]", {sample_tensor({2, 3, 4}, -1, 1, 33)},
       [](const auto& in) { return sum(in[0], {-1}, true); }},
  };
}

std::vector<Sample> Mean::samples() {
  using detail::sample_tensor;
  return {
      {"all of [3, 4]", {sample_tensor({3, 4}, -1, 1, 34)}, [](const auto& in) { return mean(in[0]); }},
      {"dim 1 keepdim of [2, 3, 4]", {sample_tensor({2, 3, 4}, -1, 1, 35)},
       [](const auto& in) { return mean(in[0], {1}, true); }},
  };
}

// Distinct values (a shuffled arange) keep the samples away from ties, where max has a kink.
Tensor distinct(const Shape& s) {
  Tensor t = arange(static_cast<double>(s.numel()), DType::f64);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = std::fmod(p[i] * 7.0, static_cast<double>(t.numel())) * 0.1;
  return t.reshape(s).detach().set_requires_grad(true);
}

std::vector<Sample> Max::samples() {
  return {
      {"dim 1 of [3, 5]", {distinct({3, 5})}, [](const auto& in) { return max(in[0], 1).values; }},
      {"dim 0 keepdim of [4, 2, 3]", {distinct({4, 2, 3})},
       [](const auto& in) { return max(in[0], 0, true).values; }},
  };
}

template <bool Scatter>
std::vector<Sample> WinnersAlongDim<Scatter>::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = Scatter ? 60 : 70;
  for (const auto& [label, shape, m] : {std::tuple{"dim 1 of [3, 5]", Shape{3, 5}, Max{1, false}},
                                        std::tuple{"dim 0 keepdim of [4, 2, 3]", Shape{4, 2, 3}, Max{0, true}}}) {
    const WinnersAlongDim op{m, {shape, DType::f64}};
    const Tensor indices = tapegrad::max(distinct(shape).detach(), m.dim, m.keepdim).indices;
    const Shape values = Scatter ? op.reduced().shape : shape;
    out.push_back({label, {detail::sample_tensor(values, -1, 1, seed++), indices},
                   [op](const std::vector<Tensor>& in) { return apply(op, {in[0], in[1]}); }});
  }
  return out;
}

/// x, or a bool x as i64: the sum of a mask counts its true elements.
Tensor counted(const Tensor& x) { return x.defined() && x.dtype() == DType::boolean ? x.to(DType::i64) : x; }

}  // namespace

// A bool tensor sums as i64 (it counts the true elements), as PyTorch.
Tensor sum(const Tensor& x) { return apply(Sum{}, {counted(x)}); }
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  if (dims.empty()) {
    throw ValueError("sum: the list of dims is empty; call sum(x) to sum every element");
  }
  return apply(Sum{dims, keepdim}, {counted(x)});
}
Tensor mean(const Tensor& x) { return apply(Mean{}, {x}); }
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  if (dims.empty()) {
    throw ValueError("mean: the list of dims is empty; call mean(x) to average every element");
  }
  return apply(Mean{dims, keepdim}, {x});
}
MaxResult max(const Tensor& x, std::int64_t dim, bool keepdim) {
  auto outs = apply_with_extras(Max{dim, keepdim}, {x});
  return {outs[0], outs[1]};
}

TAPEGRAD_BUILTIN_OPS(reduce, Sum, Mean, Max, WinnersAlongDim<true>, WinnersAlongDim<false>)

}  // namespace tapegrad
