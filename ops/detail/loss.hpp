#pragma once
// Shared by the losses (ops/loss.cpp, ops/loss_pointwise.cpp): the reduction of an
// element-wise loss and the matching scale of grad_out in its VJP.
#include <string_view>

#include "ops/detail/elementwise.hpp"

namespace tapegrad::detail {

inline std::string_view reduction_name(Reduction r) {
  switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
  }
  return "?";
}

/// The element-wise loss `l` reduced as asked (none keeps its shape).
inline Tensor reduce_loss(const Tensor& l, Reduction r) {
  if (r == Reduction::none) return l;
  return r == Reduction::sum ? sum(l) : mean(l);
}

/// grad_out as the gradient of each element of an element-wise loss of `count` elements: itself
/// for none (same shape) and sum (0-dim: it broadcasts), divided by count for mean.
inline Tensor loss_grad(const Tensor& grad_out, Reduction r, std::int64_t count) {
  return r == Reduction::mean ? grad_out / static_cast<double>(count) : grad_out;
}

/// Throws unless input and target are floating tensors of one dtype and one shape.
inline void check_loss_pair(std::string_view op, const Tensor& input, const Tensor& target) {
  check_floating(op, input, "input");
  check_floating(op, target, "target");
  if (input.dtype() != target.dtype()) {
    throw DTypeError(fmt::format("{}: input {} {} and target {} {} must have one dtype", op,
                                 input.shape(), input.dtype(), target.shape(), target.dtype()));
  }
  if (input.shape() != target.shape()) {
    throw ShapeError(fmt::format("{}: input {} and target {} must have the same shape", op,
                                 input.shape(), target.shape()));
  }
}

/// Throws unless an optional constant (a loss's class weight, pos_weight) is undefined, or a
/// floating tensor of `dtype` that does not require grad: PyTorch 1.13 defines no gradient
/// for it, and a silent zero would be wrong.
inline void check_loss_constant(std::string_view op, std::string_view what, const Tensor& t,
                                DType dtype) {
  if (!t.defined()) return;
  check_floating(op, t, what);
  if (t.dtype() != dtype) {
    throw DTypeError(fmt::format("{}: {} {} {} must have the input's dtype {}", op, what,
                                 t.shape(), t.dtype(), dtype));
  }
  if (t.requires_grad()) {
    throw ValueError(fmt::format("{}: {} {} requires grad, but the loss is not differentiable "
                                 "in it (as in PyTorch); pass {}.detach()", op, what, t.shape(),
                                 what));
  }
}

}  // namespace tapegrad::detail
