// Shape ops. reshape (and flatten, view) give a new handle on the same storage; its VJP
// reshapes grad_out back. permute (and transpose) copy into the new dim order; its VJP
// applies the inverse permutation to grad_out.
#include <algorithm>
#include <numeric>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

/// Resolves a single -1 and checks that the element count is preserved.
Shape resolve_shape(const Shape& from, const Shape& to) {
  Shape out = to;
  std::int64_t known = 1;
  std::size_t infer_at = Shape::kMaxRank;
  for (std::size_t d = 0; d < to.size(); ++d) {
    if (to[d] == -1) {
      if (infer_at != Shape::kMaxRank) {
        throw ShapeError(fmt::format("reshape: only one size may be -1, got {}", to));
      }
      infer_at = d;
    } else if (to[d] < 0) {
      throw ShapeError(fmt::format("reshape: invalid size {} in {}", to[d], to));
    } else if (__builtin_mul_overflow(known, to[d], &known)) {
      throw ShapeError(fmt::format("reshape: the sizes of {} multiply past int64", to));
    }
  }
  const std::int64_t numel = from.numel();
  if (infer_at != Shape::kMaxRank) {
    if (known == 0 || numel % known != 0) {
      throw ShapeError(fmt::format("reshape: cannot reshape {} ({} elements) into {}", from,
                                   numel, to));
    }
    out[infer_at] = numel / known;
  } else if (known != numel) {
    throw ShapeError(fmt::format("reshape: cannot reshape {} ({} elements) into {} ({} elements)",
                                 from, numel, to, known));
  }
  return out;
}

struct Reshape {
  static constexpr std::string_view name = "reshape";
  Shape shape;
  std::string attributes() const { return fmt::format("shape={}", shape); }
  TensorMeta infer(std::span<const Tensor> in) const {
    if (!in[0].defined()) throw ValueError("reshape: input is an undefined tensor");
    return {resolve_shape(in[0].shape(), shape), in[0].dtype()};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return detail::alias(in[0], resolve_shape(in[0].shape(), shape));
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    return {reshape(grad_out, ctx.input(0).shape)};
  }
  static std::vector<Sample> samples() {
    return {{"[2, 3, 4] -> [4, -1]", {detail::sample_tensor({2, 3, 4}, -1, 1, 41)},
             [](const auto& in) { return reshape(in[0], {4, -1}); }}};
  }
};

struct Permute {
  static constexpr std::string_view name = "permute";
  std::vector<std::int64_t> dims;
  std::string attributes() const { return fmt::format("dims=[{}]", fmt::join(dims, ", ")); }

  std::vector<std::size_t> order(const Shape& shape) const {
    if (dims.size() != shape.size()) {
      throw ShapeError(fmt::format("permute: {} dims given for a tensor of shape {}", dims.size(), shape));
    }
    std::vector<std::size_t> p;
    std::vector<bool> seen(shape.size(), false);
    for (std::int64_t d : dims) {
      const std::size_t k = detail::normalize_dim(name, d, shape.size());
      if (seen[k]) throw ValueError(fmt::format("permute: dim {} repeats in [{}]", d, fmt::join(dims, ", ")));
      seen[k] = true;
      p.push_back(k);
    }
    return p;
  }
  TensorMeta infer(std::span<const Tensor> in) const {
    if (!in[0].defined()) throw ValueError("permute: input is an undefined tensor");
    Shape out;
    for (std::size_t k : order(in[0].shape())) out.push_back(in[0].shape()[k]);
    return {out, in[0].dtype()};
  }
  static Tensor permute_data(const Tensor& x, const std::vector<std::size_t>& p) {
    Shape out_shape;
    for (std::size_t k : p) out_shape.push_back(x.shape()[k]);
    Tensor out = detail::make_tensor(out_shape, x.dtype());
    const std::size_t rank = p.size();
    if (rank == 0 || out.numel() == 0) {
      if (rank == 0) out.copy_(x);
      return out;
    }
    // Input strides read in output order. The output is walked row by row (its last dim):
    // each row is a contiguous copy when the last dim stays last, else a strided gather. Rows
    // split across threads in even ranges; a range decomposes its first row's index once and
    // then steps an odometer over the outer dims (no divisions per row: MultiheadAttention's
    // head split copies rows of 32 values).
    std::array<std::int64_t, Shape::kMaxRank> in_stride{}, src{};
    std::int64_t s = 1;
    for (std::size_t d = rank; d-- > 0;) {
      in_stride[d] = s;
      s *= x.shape()[d];
    }
    for (std::size_t d = 0; d < rank; ++d) src[d] = in_stride[p[d]];
    const std::int64_t n = out.numel(), inner = out_shape[rank - 1], step = src[rank - 1];
    const std::int64_t rows = n / inner;
    detail::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      detail::parallel_ranges(rows, n >= detail::kParallelElements, [&](std::int64_t first, std::int64_t last, int) {
        std::array<std::int64_t, Shape::kMaxRank> index{};  // over the outer dims (all but the last)
        std::int64_t rest = first, off = 0;
        for (std::size_t d = rank - 1; d-- > 0;) {
          index[d] = rest % out_shape[d];
          off += index[d] * src[d];
          rest /= out_shape[d];
        }
        for (std::int64_t r = first; r < last; ++r) {
          const T* from = px + off;
          T* to = po + r * inner;
          if (step == 1) {
            std::copy_n(from, inner, to);
          } else {
            for (std::int64_t j = 0; j < inner; ++j) to[j] = from[j * step];
          }
          for (std::size_t d = rank - 1; d-- > 0;) {  // the next row's index and offset
            off += src[d];
            if (++index[d] < out_shape[d]) break;
            off -= index[d] * src[d];
            index[d] = 0;
          }
        }
      });
    });
    return out;
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    return permute_data(in[0], order(in[0].shape()));
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const auto p = order(ctx.input(0).shape);
    std::vector<std::size_t> inverse(p.size());
    for (std::size_t d = 0; d < p.size(); ++d) inverse[p[d]] = d;
    return {permute(grad_out, std::vector<std::int64_t>(inverse.begin(), inverse.end()))};
  }
  static std::vector<Sample> samples() {
    return {{"[2, 3, 4] by [2, 0, 1]", {detail::sample_tensor({2, 3, 4}, -1, 1, 42)},
             [](const auto& in) { return permute(in[0], {2, 0, 1}); }},
            {"transpose [3, 5] dims 0, 1", {detail::sample_tensor({3, 5}, -1, 1, 43)},
             [](const auto& in) { return transpose(in[0], 0, 1); }}};
  }
};

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) { return apply(Reshape{shape}, {x}); }

Tensor flatten(const Tensor& x, std::int64_t start_dim, std::int64_t end_dim) {
  if (!x.defined()) throw ValueError("flatten: input is an undefined tensor");
  if (x.dim() == 0) return reshape(x, {1});
  const std::size_t s = detail::normalize_dim("flatten", start_dim, x.dim());
  const std::size_t e = detail::normalize_dim("flatten", end_dim, x.dim());
  if (s > e) {
    throw ValueError(fmt::format("flatten: start_dim {} comes after end_dim {} for shape {}",
                                 start_dim, end_dim, x.shape()));
  }
  Shape out;
  for (std::size_t d = 0; d < s; ++d) out.push_back(x.shape()[d]);
  std::int64_t merged = 1;
  for (std::size_t d = s; d <= e; ++d) merged *= x.shape()[d];
  out.push_back(merged);
  for (std::size_t d = e + 1; d < x.dim(); ++d) out.push_back(x.shape()[d]);
  return reshape(x, out);
}

Tensor permute(const Tensor& x, const std::vector<std::int64_t>& dims) {
  return apply(Permute{dims}, {x});
}

Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1) {
  if (!x.defined()) throw ValueError("transpose: input is an undefined tensor");
  const std::size_t a = detail::normalize_dim("transpose", dim0, x.dim());
  const std::size_t b = detail::normalize_dim("transpose", dim1, x.dim());
  std::vector<std::int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  if (x.dim() > 0) std::swap(dims[a], dims[b]);
  return permute(x, dims);
}

Tensor Tensor::reshape(const Shape& shape) const { return tapegrad::reshape(*this, shape); }
Tensor Tensor::flatten(std::int64_t start_dim, std::int64_t end_dim) const {
  return tapegrad::flatten(*this, start_dim, end_dim);
}

TAPEGRAD_BUILTIN_OPS(shape, Reshape, Permute)

}  // namespace tapegrad
