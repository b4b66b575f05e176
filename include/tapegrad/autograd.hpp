#pragma once
/// \file
/// Backward, functional gradients, and the switches that control recording.
#include <cstdint>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad {

/// Backpropagates from `output` (see Tensor::backward).
void backward(const Tensor& output, const Tensor& grad_output = Tensor(),
              bool retain_graph = false);

/// Returns d(sum_i <outputs[i], grad_outputs[i]>)/d(inputs[j]) for each input, without
/// touching any tensor's grad(). `grad_outputs` may be empty (every output must then hold
/// one element). An input the outputs do not depend on gets an all-zero gradient.
/// Inputs may be leaves or intermediate tensors.
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
