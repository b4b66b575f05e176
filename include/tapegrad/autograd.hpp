#pragma once
/// \file
/// Backward, functional gradients, and the switches that control recording.
#include <cstdint>
#include <optional>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad {

/// Backpropagates from `output` (see Tensor::backward).
void backward(const Tensor& output, const Tensor& grad_output = Tensor(),
              std::optional<bool> retain_graph = {}, bool create_graph = false);

struct GradOptions {
  /// Keep the saved tensors for another backward; by default, whether create_graph is set.
  std::optional<bool> retain_graph = {};
  /// Record the VJPs, so that the returned gradients carry a graph and can be
  /// differentiated again (grad of grad, Hessian-vector products, gradient penalties).
  /// Throws GraphError at an op whose VJP is not differentiable (`differentiable_vjp`).
  bool create_graph = false;
  /// An input the outputs do not depend on gets an undefined Tensor instead of an error.
  bool allow_unused = false;
};

/// d(sum_i <outputs[i], grad_outputs[i]>)/d(inputs[j]) for each input, as in
/// torch.autograd.grad, without touching any tensor's grad(). `grad_outputs` may be empty
/// (every output must then hold one element) and may themselves require grad. Inputs may
/// be leaves or intermediate tensors; one the outputs do not depend on is a GraphError
/// unless `allow_unused`.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, const GradOptions& options);

/// The first-order shorthand: grad(outputs, inputs, grad_outputs, {retain_graph}), except
/// that an input the outputs do not depend on gets an all-zero gradient.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {},
                         bool retain_graph = false);

/// True when ops applied on this thread are recorded (the default).
bool is_grad_enabled();

/// Inside its scope nothing is recorded on this thread's tape.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// Inside its scope ops are recorded again on this thread, even within a NoGradGuard (as
/// torch.enable_grad): for a function that computes a gradient of its own.
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

/// Anomaly detection: inside its scope (on this thread), backward checks every gradient a
/// VJP returns and throws GraphError at the first NaN or Inf, naming the op whose VJP
/// produced it and the op that made the input it belongs to. Costs one pass over every
/// gradient: for debugging, not for training.
class AnomalyGuard {
 public:
  AnomalyGuard();
  ~AnomalyGuard();
  AnomalyGuard(const AnomalyGuard&) = delete;
  AnomalyGuard& operator=(const AnomalyGuard&) = delete;

 private:
  bool previous_;
};

/// True inside an AnomalyGuard on this thread.
bool is_anomaly_enabled();

/// Number of op records alive on all tapes (each recorded op is one record until the
/// tensors that can reach it are gone). A training loop must keep this flat.
std::int64_t live_tape_records();

}  // namespace tapegrad
