#pragma once
// The scatter of a max pool's gradient to its winners, shared by max_pool2d and
// adaptive_max_pool2d: both save the winner of each output as its flat index h*W + w in its
// (n, c) plane, and from there the backward does not depend on how the winners were chosen.
#include "ops/kernels/window.hpp"
#include "tapegrad/tensor.hpp"

namespace tapegrad::detail {

/// grad_x (x's meta) = 0, then grad_x[winner(o)] += grad_out[o] in each plane: the op
/// max_pool2d_backward, whose VJP is its adjoint gather (max_pool2d_gather), so every order
/// stays explicit. g: planes, g.h/g.w in and out; grad_out and indices have the pooled shape.
Tensor scatter_to_winners(const Tensor& grad_out, const Tensor& indices, const PoolGeometry& g,
                          const TensorMeta& x);

}  // namespace tapegrad::detail
