// glu(x, dim) = a · sigmoid(b), with a the first half of x along dim and b the second: x is
// [..., 2h, ...] along dim, the output [..., h, ...]. With s = sigmoid(b) and g = grad_out:
//   grad_a = g·s,   grad_b = g·a·s·(1 - s),   grad_x = [grad_a, grad_b] along dim.
// The VJP is written with public ops and the two halving ops of this file: glu_half (x -> one
// of its halves) and glu_half_backward (a half -> a full-size tensor with zeros in the other
// half), which are linear and each other's VJP. So glu's VJP is recorded under create_graph
// like any forward and glu is differentiable again, to any order.
#include <algorithm>
#include <cmath>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/math.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// Checks x and dim for an op that halves x along dim; returns the normalised dim.
std::size_t halved_dim(std::string_view op, const Tensor& x, std::int64_t dim) {
  detail::check_floating(op, x);
  if (x.dim() == 0) {
    throw ShapeError(fmt::format("{}: cannot halve a 0-dim tensor (input {} {})", op, x.shape(),
                                 x.dtype()));
  }
  const std::size_t d = detail::normalize_dim(op, dim, x.dim());
  if (x.shape()[d] % 2 != 0) {
    throw ShapeError(fmt::format("{}: dim {} of input {} has size {}, which must be even to be "
                                 "halved", op, dim, x.shape(), x.shape()[d]));
  }
  return d;
}

Shape with_size(Shape shape, std::size_t d, std::int64_t size) {
  shape[d] = size;
  return shape;
}

/// Calls f(full_offset, half_offset, count) for contiguous pieces of half `which` (0 the
/// first, 1 the second) of a tensor split as [outer, 2h, inner] around the halved dim, that
/// together cover the half once; large tensors are split across the threads.
template <class F>
void for_each_half_block(const detail::DimSplit& full, int which, F f) {
  const std::int64_t block = full.n / 2 * full.inner;
  detail::for_blocks(full.outer * block, [&](std::int64_t begin, std::int64_t end) {
    while (begin < end) {
      const std::int64_t o = begin / block, k = begin % block, n = std::min(end - begin, block - k);
      f(o * 2 * block + which * block + k, begin, n);
      begin += n;
    }
  });
}

/// grad_a = g·s and grad_b = g·a·s·(1 - s), s = sigmoid(b), for n elements.
template <class T>
TAPEGRAD_MULTIVERSION void glu_grad(const T* a, const T* b, const T* g, T* __restrict grad_a,
                                    T* __restrict grad_b, std::int64_t n) {
  for (std::int64_t k = 0; k < n; ++k) {
    const T s = detail::num::sigmoid(b[k]);
    grad_a[k] = g[k] * s;
    grad_b[k] = grad_a[k] * a[k] * (T(1) - s);
  }
}

Tensor glu_half(const Tensor& x, std::int64_t dim, int which);
Tensor glu_half_backward(const Tensor& half, std::int64_t dim, int which);

/// One half of x along dim.
struct GluHalf {
  static constexpr std::string_view name = "glu_half";
  std::int64_t dim;
  int which;
  std::string attributes() const { return fmt::format("dim={}, half={}", dim, which); }
  TensorMeta infer(std::span<const Tensor> in) const {
    const std::size_t d = halved_dim(name, in[0], dim);
    return {with_size(in[0].shape(), d, in[0].shape()[d] / 2), in[0].dtype()};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const detail::DimSplit split(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      for_each_half_block(split, which, [&](std::int64_t full, std::int64_t half, std::int64_t n) {
        std::copy(px + full, px + full + n, po + half);
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {glu_half_backward(grad_out, dim, which)};
  }
  static std::vector<Sample> samples();
};

/// A full-size tensor holding `half` as its half `which` along dim, zeros elsewhere.
struct GluHalfBackward {
  static constexpr std::string_view name = "glu_half_backward";
  std::int64_t dim;
  int which;
  std::string attributes() const { return fmt::format("dim={}, half={}", dim, which); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    if (in[0].dim() == 0)
      throw ShapeError(fmt::format("{}: the half must have at least one dim, got []", name));
    const std::size_t d = detail::normalize_dim(name, dim, in[0].dim());
    return {with_size(in[0].shape(), d, in[0].shape()[d] * 2), in[0].dtype()};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& half = in[0];
    const TensorMeta meta = infer(in);
    const detail::DimSplit split(meta.shape, detail::normalize_dim(name, dim, half.dim()));
    Tensor out = zeros(meta.shape, meta.dtype);
    detail::dispatch_floating(half.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* ph = half.data<T>();
      T* po = out.data<T>();
      for_each_half_block(split, which, [&](std::int64_t full, std::int64_t offset, std::int64_t n) {
        std::copy(ph + offset, ph + offset + n, po + full);
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {glu_half(grad_out, dim, which)};
  }
  static std::vector<Sample> samples();
};

Tensor glu_half(const Tensor& x, std::int64_t dim, int which) {
  return apply(GluHalf{dim, which}, {x});
}
Tensor glu_half_backward(const Tensor& half, std::int64_t dim, int which) {
  return apply(GluHalfBackward{dim, which}, {half});
}

struct Glu {
  static constexpr std::string_view name = "glu";
  std::int64_t dim;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    const std::size_t d = halved_dim(name, in[0], dim);
    return {with_size(in[0].shape(), d, in[0].shape()[d] / 2), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const detail::DimSplit split(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    Tensor out = detail::make_tensor(infer(in));
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      const std::int64_t block = split.n / 2 * split.inner;
      for_each_half_block(split, 0, [&](std::int64_t full, std::int64_t half, std::int64_t n) {
        detail::map_loop(px + full, px + full + block, po + half, n,
                         [](T a, T b) { return a * detail::num::sigmoid(b); });
      });
    });
    ctx.save(x);
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const Tensor x = ctx.saved(0);
    if (!is_grad_enabled()) return {raw_vjp(x, grad_out)};
    const Tensor a = glu_half(x, dim, 0);
    const Tensor s = sigmoid(glu_half(x, dim, 1));
    const Tensor grad_a = grad_out * s;
    const Tensor grad_b = grad_a * a * rsub(s, 1.0);
    return {glu_half_backward(grad_a, dim, 0) + glu_half_backward(grad_b, dim, 1)};
  }
  // The same gradient in one pass over x, grad_out and grad_x (not recorded).
  Tensor raw_vjp(const Tensor& x, const Tensor& grad_out) const {
    const detail::DimSplit split(x.shape(), detail::normalize_dim(name, dim, x.dim()));
    Tensor grad_x = detail::make_tensor(x.meta());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      const T* pg = grad_out.data<T>();
      T* pa = grad_x.data<T>();
      const std::int64_t block = split.n / 2 * split.inner;
      for_each_half_block(split, 0, [&](std::int64_t full, std::int64_t half, std::int64_t n) {
        glu_grad(px + full, px + full + block, pg + half, pa + full, pa + full + block, n);
      });
    });
    return grad_x;
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto call = [](std::int64_t d) {
      return [d](const std::vector<Tensor>& in) { return glu(in[0], d); };
    };
    return {{"[2, 4, 3], dim=1", {sample_tensor({2, 4, 3}, -2, 2, 41)}, call(1)},
            {"[3, 2], dim=-1", {sample_tensor({3, 2}, -2, 2, 42)}, call(-1)},
            {"[4, 3], dim=0", {sample_tensor({4, 3}, -2, 2, 43)}, call(0)}};
  }
};

std::vector<Sample> GluHalf::samples() {
  std::vector<Sample> out;
  for (int which : {0, 1}) {
    out.push_back({fmt::format("[2, 4, 3], dim=1, half={}", which),
                   {detail::sample_tensor({2, 4, 3}, -2, 2, 44)},
                   [which](const std::vector<Tensor>& in) { return glu_half(in[0], 1, which); }});
  }
  return out;
}

std::vector<Sample> GluHalfBackward::samples() {
  std::vector<Sample> out;
  for (int which : {0, 1}) {
    out.push_back({fmt::format("[2, 2, 3], dim=-2, half={}", which),
                   {detail::sample_tensor({2, 2, 3}, -2, 2, 45)},
                   [which](const std::vector<Tensor>& in) {
                     return glu_half_backward(in[0], -2, which);
                   }});
  }
  return out;
}

}  // namespace

Tensor glu(const Tensor& x, std::int64_t dim) { return apply(Glu{dim}, {x}); }

TAPEGRAD_BUILTIN_OPS(glu, Glu, GluHalf, GluHalfBackward)

}  // namespace tapegrad
