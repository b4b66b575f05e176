#pragma once
// Ops that move whole index positions along each dim: output element (i_0, ..., i_n-1) is the
// input element (src_0[i_0], ..., src_n-1[i_n-1]), or a fill value where some src_d[i_d] is -1.
// slice, flip, roll, pad, expand, repeat, index_select and embedding are all of this form, so
// one pair of kernels serves them all:
//   gather_axes:  out[i] = x[src(i)]            (fill where src(i) is -1)
//   scatter_axes: grad_in[j] = Σ_{i: src(i) = j} grad_out[i]   (its adjoint)
// A position read twice (reflect/replicate padding, a repeated index, an expanded dim) gets
// the sum. AxisGather<Kind> and AxisScatter<Kind> are registered ops and each other's VJP, so
// every order of derivative is an explicit, checkable op.
//
// A Kind says what its maps are: `name`, `backward_name`, `indexed` (whether the op takes an
// i64 index tensor as its second input), `attributes()`, `AxisMaps maps(const Shape& in,
// const Tensor& index) const` (which validates its arguments and throws naming the op),
// `Kind backward() const` (the maps the VJP scatters with; embedding drops its padding row
// there) and `static std::vector<AxisCase<Kind>> cases()` (the checker's samples).
#include <cstdint>
#include <string>
#include <vector>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "tapegrad/op.hpp"

namespace tapegrad::detail {

/// For each output dim, the input position it reads (-1: the fill value).
struct AxisMaps {
  Shape in;
  Shape out;
  std::vector<std::vector<std::int64_t>> src;
};

/// 0, 1, ..., n-1: a dim the op leaves alone.
inline std::vector<std::int64_t> identity_map(std::int64_t n) {
  std::vector<std::int64_t> m(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) m[static_cast<std::size_t>(i)] = i;
  return m;
}

/// Maps that leave every dim of `shape` alone; a Kind then replaces the dims it moves.
inline AxisMaps identity_maps(const Shape& shape) {
  AxisMaps m{shape, shape, {}};
  for (std::int64_t n : shape) m.src.push_back(identity_map(n));
  return m;
}

/// Calls f(output offset, input offset or -1) for every output element, in order.
template <class F>
void for_each_mapped(const AxisMaps& m, F f) {
  const std::size_t rank = m.out.size();
  const std::int64_t n = m.out.numel();
  if (n == 0) return;
  if (rank == 0) {
    f(std::int64_t{0}, std::int64_t{0});
    return;
  }
  std::array<std::int64_t, Shape::kMaxRank> stride{};
  std::int64_t s = 1;
  for (std::size_t d = rank; d-- > 0;) {
    stride[d] = s;
    s *= m.in[d];
  }
  const std::vector<std::int64_t>& last = m.src[rank - 1];
  const std::int64_t inner = m.out[rank - 1];
  std::array<std::size_t, Shape::kMaxRank> idx{};
  for (std::int64_t base = 0; base < n; base += inner) {
    std::int64_t off = 0;
    bool valid = true;
    for (std::size_t d = 0; d + 1 < rank; ++d) {
      const std::int64_t p = m.src[d][idx[d]];
      valid = valid && p >= 0;
      off += p * stride[d];
    }
    for (std::int64_t j = 0; j < inner; ++j) {
      const std::int64_t p = last[static_cast<std::size_t>(j)];
      f(base + j, valid && p >= 0 ? off + p : std::int64_t{-1});
    }
    for (std::size_t d = rank - 1; d-- > 0;) {  // odometer over the outer dims
      if (static_cast<std::int64_t>(++idx[d]) < m.out[d]) break;
      idx[d] = 0;
    }
  }
}

/// out[i] = x[src(i)], or `fill` where src(i) is -1. Any dtype.
inline Tensor gather_axes(const Tensor& x, const AxisMaps& m, double fill) {
  Tensor out = make_tensor(m.out, x.dtype());
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T value = static_cast<T>(fill);
    for_each_mapped(m, [&](std::int64_t o, std::int64_t i) { po[o] = i >= 0 ? px[i] : value; });
  });
  return out;
}

/// The adjoint of gather_axes: grad_in[j] = Σ over the outputs that read j of grad_out.
inline Tensor scatter_axes(std::string_view op, const Tensor& grad_out, const AxisMaps& m) {
  Tensor grad_in = zeros(m.in, grad_out.dtype());
  dispatch_floating(grad_out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pg = grad_out.data<T>();
    T* pi = grad_in.data<T>();
    for_each_mapped(m, [&](std::int64_t o, std::int64_t i) {
      if (i >= 0) pi[i] += pg[o];
    });
  });
  return grad_in;
}

/// Throws ValueError when x is undefined.
inline void check_defined(std::string_view op, const Tensor& x, std::string_view what = "input") {
  if (!x.defined()) throw ValueError(fmt::format("{}: {} is an undefined tensor", op, what));
}

/// Throws unless `index` is a defined i64 tensor (the index argument of `op`).
inline void check_index(std::string_view op, const Tensor& index, std::string_view what = "index") {
  if (!index.defined()) throw ValueError(fmt::format("{}: {} is an undefined tensor", op, what));
  if (index.dtype() != DType::i64) {
    throw DTypeError(fmt::format("{}: {} must be an i64 tensor, got {} {}", op, what,
                                 index.dtype(), index.shape()));
  }
}

/// One checker sample of a Kind: the op's input shape, its index (indexed kinds) and fill.
template <class Kind>
struct AxisCase {
  std::string label;
  Kind kind;
  Shape in;
  Tensor index{};
  double fill = 0;
  /// False where the gather's VJP is deliberately not its derivative (embedding's padding
  /// row, PyTorch's rule): such a case samples only the scatter, which is exactly adjoint.
  bool gather_is_differentiable = true;
};

template <class Kind>
struct AxisScatter;

template <class Kind>
struct AxisGather {
  static constexpr std::string_view name = Kind::name;
  Kind kind;
  double fill = 0;
  std::string attributes() const { return kind.attributes(); }
  static Tensor index_of(std::span<const Tensor> in) {
    if constexpr (Kind::indexed) return in[1];
    else return Tensor();
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    check_defined(name, in[0]);
    if constexpr (Kind::indexed) check_index(name, in[1]);
    return {kind.maps(in[0].shape(), index_of(in)).out, in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    if constexpr (Kind::indexed) ctx.save(in[1]);
    return gather_axes(in[0], kind.maps(in[0].shape(), index_of(in)), fill);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const AxisScatter<Kind> back{kind.backward(), ctx.input(0)};
    if constexpr (Kind::indexed) return {apply(back, {grad_out, ctx.saved(0)}), Tensor()};
    else return {apply(back, {grad_out})};
  }
  static std::vector<Sample> samples() {
    std::vector<Sample> out;
    std::uint64_t seed = 500;
    for (const AxisCase<Kind>& c : Kind::cases()) {
      if (!c.gather_is_differentiable) continue;
      const AxisGather op{c.kind, c.fill};
      out.push_back({c.label, {sample_tensor(c.in, -1, 1, seed++), c.index},
                     [op](const std::vector<Tensor>& in) {
                       if constexpr (Kind::indexed) return apply(op, {in[0], in[1]});
                       else return apply(op, {in[0]});
                     }});
      if constexpr (!Kind::indexed) out.back().inputs.pop_back();
    }
    return out;
  }
};

template <class Kind>
struct AxisScatter {
  static constexpr std::string_view name = Kind::backward_name;
  Kind kind;
  TensorMeta input;  // the gather's input
  std::string attributes() const { return kind.attributes(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    if constexpr (Kind::indexed) check_index(name, in[1]);
    check_meta(name, "grad_out",  in[0],
               {kind.maps(input.shape, AxisGather<Kind>::index_of(in)).out, input.dtype});
    return input;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    if constexpr (Kind::indexed) ctx.save(in[1]);
    return scatter_axes(name, in[0], kind.maps(input.shape, AxisGather<Kind>::index_of(in)));
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const AxisGather<Kind> adjoint{kind, 0.0};
    if constexpr (Kind::indexed) return {apply(adjoint, {grad_out, ctx.saved(0)}), Tensor()};
    else return {apply(adjoint, {grad_out})};
  }
  static std::vector<Sample> samples() {
    std::vector<Sample> out;
    std::uint64_t seed = 600;
    for (const AxisCase<Kind>& c : Kind::cases()) {
      const AxisScatter op{c.kind.backward(), {c.in, DType::f64}};
      const Shape out_shape = c.kind.maps(c.in, c.index).out;
      out.push_back({c.label, {sample_tensor(out_shape, -1, 1, seed++), c.index},
                     [op](const std::vector<Tensor>& in) {
                       if constexpr (Kind::indexed) return apply(op, {in[0], in[1]});
                       else return apply(op, {in[0]});
                     }});
      if constexpr (!Kind::indexed) out.back().inputs.pop_back();
    }
    return out;
  }
};

}  // namespace tapegrad::detail
