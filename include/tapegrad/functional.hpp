#pragma once
/// \file
/// Functional transforms built on create_graph, as torch.autograd.functional: vjp, jvp,
/// hvp, jacobian, hessian. `fn` maps the inputs to one tensor; the floating inputs are the
/// variables (integer inputs, such as targets, are passed through). Every op fn records
/// must have a differentiable VJP for jvp, hvp and hessian (GraphError names the one that
/// has not).
///
/// Without create_graph the results are plain tensors; with it they carry a graph back to
/// the inputs (for a further derivative, e.g. a meta-learning outer loop).
#include <vector>

#include "tapegrad/gradcheck.hpp"
#include "tapegrad/tensor.hpp"

namespace tapegrad {

struct FunctionalResult {
  Tensor output;                 ///< fn(inputs)
  std::vector<Tensor> results;   ///< one per input (undefined for an integer input)
};

/// vᵀ·J: the gradient of <fn(inputs), v> with respect to each input. v: fn's output shape
/// (may be undefined when fn returns one element).
FunctionalResult vjp(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                     const Tensor& v = Tensor(), bool create_graph = false);

/// J·t, forward mode, by the double-VJP trick: with u a dummy upstream gradient that
/// requires grad, g(u) = Jᵀ·u is linear in u, so d<g(u), t>/du = J·t. Costs two backward
/// passes. tangents: one per input (undefined for an input that does not move).
/// results holds one tensor: J·t, of fn's output shape.
FunctionalResult jvp(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& tangents, bool create_graph = false);

/// H·v for a scalar fn: the gradient of <∇fn, v>. v: one per input.
FunctionalResult hvp(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& v, bool create_graph = false);

/// The Jacobian of fn with respect to each input, shaped [output dims..., input dims...];
/// one backward per output element (small outputs).
std::vector<Tensor> jacobian(const TensorFunction& fn, const std::vector<Tensor>& inputs);

/// The Hessian of a scalar fn: hessian[i][j] = d²fn / d inputs[i] d inputs[j], shaped
/// [input i dims..., input j dims...]; one backward per element of the gradient.
std::vector<std::vector<Tensor>> hessian(const TensorFunction& fn, const std::vector<Tensor>& inputs);

}  // namespace tapegrad
