#pragma once
// Shared machinery of the reductions (ops/reduce*.cpp) and the losses: which dims a
// reduction removes, the shapes it produces, a view of the input as rows (one per output
// element), and constant tensors built element by element for VJPs (masks, signs), which
// enter a recorded VJP as constants because they are piecewise constant in the input.
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ops/detail/elementwise.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad::detail {

using DimMask = std::array<bool, Shape::kMaxRank>;

/// Which dims a reduction removes; empty `dims` means all of them.
inline DimMask reduced_mask(std::string_view op, const Shape& shape,
                            const std::vector<std::int64_t>& dims) {
  DimMask mask{};
  if (dims.empty()) {
    mask.fill(true);
    return mask;
  }
  for (std::int64_t d : dims) {
    const std::size_t k = normalize_dim(op, d, shape.size());
    if (shape.empty()) continue;  // dim 0 / -1 of a 0-dim tensor: nothing to reduce
    if (mask[k]) throw ValueError(fmt::format("{}: dim {} appears twice in the dims", op, d));
    mask[k] = true;
  }
  return mask;
}

inline Shape reduced_shape(const Shape& shape, const DimMask& mask, bool keepdim) {
  Shape out;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (!mask[d]) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

inline Shape keepdim_shape(const Shape& shape, const DimMask& mask) {
  return reduced_shape(shape, mask, true);
}

/// A reduction's VJP: grad_out spread back over the reduced dims of in_shape (each input
/// element fed its reduction once). Recorded (create_graph) as a reshape and a
/// broadcasting add, whose own VJPs sum it back.
inline Tensor spread(const Tensor& grad_out, const Shape& in_shape, const DimMask& mask) {
  const Shape keep = keepdim_shape(in_shape, mask);
  if (is_grad_enabled()) return reshape(grad_out, keep) + zeros(in_shape, grad_out.dtype());
  return detail::broadcast_to(detail::alias(grad_out, keep), in_shape);
}

/// How many input elements feed each output element.
inline std::int64_t reduced_count(const Shape& shape, const DimMask& mask) {
  std::int64_t n = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (mask[d]) n *= shape[d];
  }
  return n;
}

/// Calls f(base, stride, n) for every lane along the middle dim of a [outer, n, inner] layout.
template <class F>
void for_each_lane(const DimSplit& s, F f) {
  for (std::int64_t o = 0; o < s.outer; ++o) {
    for (std::int64_t j = 0; j < s.inner; ++j) f(o * s.n * s.inner + j, s.inner, s.n);
  }
}

/// x (not recorded) as a contiguous [kept, reduced] matrix: row j holds the elements that
/// output j (row-major over the kept dims) reduces, so a reduction kernel is a loop over rows.
inline Tensor reduce_rows(const Tensor& x, const DimMask& mask) {
  std::vector<std::int64_t> order;
  for (std::size_t d = 0; d < x.dim(); ++d) {
    if (!mask[d]) order.push_back(static_cast<std::int64_t>(d));
  }
  const auto kept_dims = order.size();
  for (std::size_t d = 0; d < x.dim(); ++d) {
    if (mask[d]) order.push_back(static_cast<std::int64_t>(d));
  }
  std::int64_t kept = 1;
  for (std::size_t d = 0; d < x.dim(); ++d) {
    if (!mask[d]) kept *= x.shape()[d];
  }
  const Tensor moved = kept_dims == 0 || kept_dims == x.dim() ? x : permute(x.detach(), order);
  return reshape(moved.detach(), {kept, reduced_count(x.shape(), mask)});
}

/// A constant (never recorded) tensor of x's shape and dtype: out[i] = f(x[i]).
template <class F>
Tensor map_values(std::string_view op, const Tensor& x, F f) {
  return dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    return map_unary<T>(x.detach(), [f](T v) { return static_cast<T>(f(v)); });
  });
}

/// A constant (never recorded) tensor of a's shape: out = f(a, b) with b broadcast to a.
template <class F>
Tensor map_values(std::string_view op, const Tensor& a, const Tensor& b, F f) {
  return dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    return map_broadcast<T>(a.detach(), b.detach(), a.shape(),
                            [f](T u, T v) { return static_cast<T>(f(u, v)); });
  });
}

/// PyTorch's sgn: -1, 0 or 1 (0 at 0: the gradient of |x| and of the 1-norm at 0).
template <class T>
T sign_of(T v) {
  return static_cast<T>((v > T(0)) - (v < T(0)));
}

/// x summed over the masked dims (all of them for a 0-dim x). Recorded when grad mode is on.
inline Tensor sum_over(const Tensor& x, const DimMask& mask, bool keepdim) {
  std::vector<std::int64_t> dims;
  for (std::size_t d = 0; d < x.dim(); ++d) {
    if (mask[d]) dims.push_back(static_cast<std::int64_t>(d));
  }
  return dims.empty() ? sum(x) : sum(x, dims, keepdim);
}

/// The weights of an extremum's gradient (amax, amin, the inf-norm): [x == out] / count,
/// a constant of x's shape, out given in the keepdim shape. PyTorch splits the gradient
/// evenly among tied extrema (where max(x, dim) sends it to the first one only).
inline Tensor tie_weights(std::string_view op, const Tensor& x, const Tensor& out_keep,
                          const DimMask& mask) {
  const Tensor hit = map_values(op, x, out_keep, [](auto v, auto m) { return v == m ? 1 : 0; });
  return hit / sum_over(hit, mask, true);
}

}  // namespace tapegrad::detail
