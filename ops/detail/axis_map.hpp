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
// there), `static std::vector<AxisCase<Kind>> cases()` (the checker's samples) and, optional,
// `static constexpr bool view = true` when backward() keeps the maps, so that the gather of a
// contiguous block (an alias of the input) is an OpDefinition `view`.
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

/// The maps of taking positions first, first + step, ... (count of them) along dim d of a
/// tensor of shape `in`: a slice, or with step 1 a narrow.
inline AxisMaps strided_maps(const Shape& in, std::size_t d, std::int64_t first, std::int64_t count,
                             std::int64_t step = 1) {
  AxisMaps m = identity_maps(in);
  m.out[d] = count;
  m.src[d].resize(static_cast<std::size_t>(count));
  for (std::int64_t k = 0; k < count; ++k) m.src[d][static_cast<std::size_t>(k)] = first + k * step;
  return m;
}

/// A stretch of the last dim's map: outputs [begin, begin + length) of a row read the inputs
/// [from, from + length) of the row they map to, or the fill value where from is -1. A slice or
/// a pad is one to three runs per row; a flip is a run per element.
struct Run {
  std::int64_t begin = 0, length = 0, from = -1;
};

inline std::vector<Run> runs_of(const std::vector<std::int64_t>& map) {
  std::vector<Run> runs;
  for (std::size_t j = 0; j < map.size(); ++j) {
    const std::int64_t p = std::max<std::int64_t>(map[j], -1);
    if (!runs.empty()) {
      Run& r = runs.back();
      if (p < 0 ? r.from < 0 : r.from >= 0 && p == r.from + r.length) {
        ++r.length;
        continue;
      }
    }
    runs.push_back({static_cast<std::int64_t>(j), 1, p});
  }
  return runs;
}

/// Whether no position of the dim is read twice: rows that read different positions of
/// such dims write different rows of a scatter, so they may run on different threads.
inline bool injective(const std::vector<std::int64_t>& map, std::int64_t size) {
  std::vector<bool> seen(static_cast<std::size_t>(size));
  for (std::int64_t p : map) {
    if (p < 0) continue;
    if (seen[static_cast<std::size_t>(p)]) return false;
    seen[static_cast<std::size_t>(p)] = true;
  }
  return true;
}

/// Calls f(output offset, input offset or -1) for the first element of every row (the last
/// dim) of m's output: the input offset is that of the row it reads, -1 where one of the
/// outer dims maps to the fill value. Rows are split across threads when `parallel`.
template <class F>
void for_each_row(const AxisMaps& m, bool parallel, F f) {
  const std::size_t rank = m.out.size();
  const std::int64_t inner = m.out[rank - 1];
  if (inner == 0 || m.out.numel() == 0) return;
  std::array<std::int64_t, Shape::kMaxRank> stride{};
  std::int64_t s = 1;
  for (std::size_t d = rank; d-- > 0;) {
    stride[d] = s;
    s *= m.in[d];
  }
  auto rows = [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      std::int64_t off = 0;
      bool valid = true;
      for (std::int64_t d = static_cast<std::int64_t>(rank) - 2, rest = r; d >= 0; --d) {
        const auto k = static_cast<std::size_t>(d);
        const std::int64_t p = m.src[k][static_cast<std::size_t>(rest % m.out[k])];
        rest /= m.out[k];
        valid = valid && p >= 0;
        off += p * stride[k];
      }
      f(r * inner, valid ? off : std::int64_t{-1});
    }
  };
  const std::int64_t n_rows = m.out.numel() / inner;
  if (!parallel || m.out.numel() < kParallelElements) return rows(0, n_rows);
  parallel_blocks(n_rows, std::max<std::int64_t>(1, kBlockElements / inner), rows);
}

/// Where m's output lies in its input, in elements, when it is one contiguous block of it
/// (whole inner dims, one consecutive range of a dim, size 1 outside: a narrow or chunk along
/// the first dim that is not 1, say), else -1. Such a gather is a view.
inline std::int64_t contiguous_block(const AxisMaps& m) {
  std::int64_t offset = 0, stride = 1;
  bool whole = true;  // the dims inside the current one are whole
  for (std::size_t d = m.out.size(); d-- > 0;) {
    const std::vector<std::int64_t>& src = m.src[d];
    if (src.empty() || src[0] < 0 || (!whole && src.size() != 1)) return -1;
    for (std::size_t j = 1; j < src.size(); ++j) {
      if (src[j] != src[0] + static_cast<std::int64_t>(j)) return -1;
    }
    offset += src[0] * stride;
    whole = whole && m.out[d] == m.in[d];
    stride *= m.in[d];
  }
  return offset;
}

/// out[i] = x[src(i)], or `fill` where src(i) is -1. Any dtype.
inline Tensor gather_axes(const Tensor& x, const AxisMaps& m, double fill) {
  Tensor out = make_tensor(m.out, x.dtype());
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T value = static_cast<T>(fill);
    if (m.out.empty()) {
      po[0] = px[0];
      return;
    }
    const std::vector<std::int64_t>& last = m.src.back();
    const std::vector<Run> runs = runs_of(last);
    const bool by_runs = runs.size() * 4 <= last.size();  // else element by element (flip)
    // Streaming rows end with a fence each: only rows of a page or more amortise it.
    const bool streaming = by_runs && streams<T>(out.numel()) &&
                           static_cast<std::int64_t>(last.size() * sizeof(T)) >= 4096;
    for_each_row(m, true, [&](std::int64_t o, std::int64_t i) {
      if (i < 0) {
        std::fill_n(po + o, last.size(), value);
      } else if (!by_runs) {
        for (std::size_t j = 0; j < last.size(); ++j) po[o + j] = last[j] >= 0 ? px[i + last[j]] : value;
      } else {
        for (const Run& r : runs) {
          if (r.from < 0) std::fill_n(po + o + r.begin, r.length, value);
          else if (streaming) stream_copy(px + i + r.from, po + o + r.begin, r.length);
          else std::copy_n(px + i + r.from, r.length, po + o + r.begin);
        }
        if (streaming) stream_fence();
      }
    });
  });
  return out;
}

/// into[i] += x[src(i)] where src(i) is not -1: a gather added into a gradient being summed
/// (OpContext::grad_sum). Floating dtypes.
inline void add_gathered(std::string_view op, Tensor into, const Tensor& x, const AxisMaps& m) {
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = into.data<T>();
    if (m.out.empty()) {
      po[0] += px[0];
      return;
    }
    const std::vector<std::int64_t>& last = m.src.back();
    const std::vector<Run> runs = runs_of(last);
    const bool by_runs = runs.size() * 4 <= last.size();  // else element by element (flip)
    for_each_row(m, true, [&](std::int64_t o, std::int64_t i) {
      if (i < 0) return;
      if (!by_runs) {
        for (std::size_t j = 0; j < last.size(); ++j) {
          if (last[j] >= 0) po[o + j] += px[i + last[j]];
        }
        return;
      }
      for (const Run& r : runs) {
        if (r.from >= 0) add_into(po + o + r.begin, px + i + r.from, r.length);
      }
    });
  });
}

/// The adjoint of gather_axes: grad_in[j] = Σ over the outputs that read j of grad_out;
/// added into `into` instead when that is defined (OpContext::grad_sum).
inline Tensor scatter_axes(std::string_view op, const Tensor& grad_out, const AxisMaps& m,
                           const Tensor& into = Tensor()) {
  Tensor grad_in = into.defined() ? into : zeros(m.in, grad_out.dtype());
  dispatch_floating(grad_out.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pg = grad_out.data<T>();
    T* pi = grad_in.data<T>();
    if (m.out.empty()) {
      pi[0] += pg[0];
      return;
    }
    const std::vector<Run> runs = runs_of(m.src.back());
    bool parallel = true;
    for (std::size_t d = 0; d + 1 < m.src.size(); ++d) parallel = parallel && injective(m.src[d], m.in[d]);
    for_each_row(m, parallel, [&](std::int64_t o, std::int64_t i) {
      if (i < 0) return;
      for (const Run& r : runs) {
        if (r.from >= 0) add_into(pi + i + r.from, pg + o + r.begin, r.length);
      }
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
  static constexpr bool view = [] {
    if constexpr (requires { Kind::view; }) return Kind::view;
    else return false;
  }();
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
    const AxisMaps maps = kind.maps(in[0].shape(), index_of(in));
    const std::int64_t block = contiguous_block(maps);
    if (block >= 0) return alias(in[0], maps.out, block);
    return gather_axes(in[0], maps, fill);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const AxisScatter<Kind> back{kind.backward(), ctx.input(0)};
    const Tensor index = Kind::indexed ? ctx.saved(0) : Tensor();
    if (Tensor sum = ctx.grad_sum(0); sum.defined()) {  // the scatter, added into sum
      scatter_axes(name, grad_out, back.kind.maps(back.input.shape, index), sum);
      if constexpr (Kind::indexed) return {sum, Tensor()};
      else return {sum};
    }
    if constexpr (Kind::indexed) return {apply(back, {grad_out, index}), Tensor()};
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
    const Tensor index = Kind::indexed ? ctx.saved(0) : Tensor();
    if (Tensor sum = ctx.grad_sum(0); sum.defined()) {  // the gather, added into sum
      add_gathered(name, sum, grad_out, kind.maps(input.shape, index));
      if constexpr (Kind::indexed) return {sum, Tensor()};
      else return {sum};
    }
    if constexpr (Kind::indexed) return {apply(adjoint, {grad_out, index}), Tensor()};
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
