#pragma once
/// \file
/// Optimizers (SGD, Adam, AdamW), learning-rate schedulers (StepLR, CosineAnnealingLR) and
/// gradient clipping, with PyTorch 1.13's update rules.
/// \code
///   nn::SGD opt(model->parameters(), {.lr = 0.05, .momentum = 0.9});
///   nn::StepLR sched(opt, 5, 0.5);
///   for (epoch ...) { for (batch ...) { opt.zero_grad(); loss.backward(); opt.step(); } sched.step(); }
/// \endcode
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::nn {


/// Base of the optimizers: one group of parameters and one learning rate.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// Applies one update to every parameter that has a gradient (others are skipped), without
  /// recording and in place (the parameters keep their storage).
  virtual void step() = 0;
  /// Sets every parameter's accumulated gradient to zero.
  void zero_grad();
  double lr() const { return lr_; }
  /// Throws ValueError unless lr >= 0 (and finite).
  void set_lr(double lr);
  const std::vector<Tensor>& parameters() const { return params_; }

  /// The optimizer's state as named tensors, for checkpoints: "lr" (0-dim f64) and, per
  /// parameter index i that has state, "i.<key>" (e.g. "0.momentum_buffer", "3.exp_avg",
  /// "3.step" as a 0-dim i64). The tensors are copies.
  NamedTensors state() const;
  /// Replaces the state with `state` (as returned by state()), all or nothing: throws
  /// ValueError on an unknown name or index, a missing companion entry, ShapeError/DTypeError
  /// when a tensor does not match its parameter, before changing anything.
  void load_state(const NamedTensors& state);

 protected:
  Optimizer(std::vector<Tensor> params, double lr, const char* name);
  /// The state keys this optimizer keeps per parameter ("step" is a 0-dim i64 counter, the
  /// others have the parameter's shape and dtype); all are present once a parameter has one.
  virtual std::vector<std::string> state_keys() const = 0;
  /// Per-parameter state, keyed as state_keys(); empty until the parameter's first update.
  std::vector<std::vector<std::pair<std::string, Tensor>>> state_;
  /// The state tensor `key` of parameter i (which must exist).
  Tensor& slot(std::size_t i, const std::string& key);
  std::vector<Tensor> params_;
  double lr_;
  const char* name_;
};

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// Stochastic gradient descent, as torch.optim.SGD:
///   g = grad + weight_decay·p
///   buf = g (first step), else momentum·buf + (1 - dampening)·g       (when momentum != 0)
///   g = nesterov ? g + momentum·buf : buf
///   p -= lr·g
/// State: "momentum_buffer". Throws ValueError on negative lr, momentum or weight_decay, and
/// on nesterov without momentum > 0 and dampening = 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& options = {});
  void step() override;

 private:
  std::vector<std::string> state_keys() const override;
  SGDOptions options_;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  /// Adam: L2 penalty added to the gradient. AdamW: decoupled decay (default 1e-2 there).
  double weight_decay = 0.0;
  bool amsgrad = false;
};

/// Adam, as torch.optim.Adam (t counts this parameter's steps):
///   g = grad + weight_decay·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
///   v̂ = amsgrad ? max_v = max(max_v, v) : v
///   p -= lr/(1-β1^t) · m / (√v̂/√(1-β2^t) + eps)
/// State: "step", "exp_avg", "exp_avg_sq" (and "max_exp_avg_sq" with amsgrad). Throws
/// ValueError on lr < 0, betas outside [0, 1), eps < 0 or weight_decay < 0.
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& options = {});
  void step() override;

 protected:
  Adam(std::vector<Tensor> params, const AdamOptions& options, bool decoupled, const char* name);

 private:
  std::vector<std::string> state_keys() const override;
  AdamOptions options_;
  bool decoupled_;
};

/// AdamW, as torch.optim.AdamW: p *= 1 - lr·weight_decay, then Adam's update without the
/// L2 term. Default weight_decay 1e-2.
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, const AdamOptions& options = {.weight_decay = 1e-2});
};

// ---- learning-rate schedulers ----------------------------------------------------------------

/// Sets the optimizer's lr from an epoch counter: construction sets epoch 0 (and records the
/// optimizer's lr as base_lr); each step() advances one epoch.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  void step();
  /// The lr set by the last step (or the constructor).
  double last_lr() const { return optimizer_->lr(); }
  std::int64_t last_epoch() const { return epoch_; }
  /// Jumps to `epoch` (e.g. when resuming) and sets the lr for it.
  void set_epoch(std::int64_t epoch);
  double base_lr() const { return base_lr_; }

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  virtual double lr_at(std::int64_t epoch) const = 0;
  Optimizer* optimizer_;
  double base_lr_;
  std::int64_t epoch_ = 0;
};

/// lr = base_lr · gamma^floor(epoch / step_size), as torch.optim.lr_scheduler.StepLR.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 private:
  double lr_at(std::int64_t epoch) const override;
  std::int64_t step_size_;
  double gamma_;
};

/// lr = eta_min + (base_lr - eta_min)·(1 + cos(π·epoch/T_max))/2, the closed form of
/// torch.optim.lr_scheduler.CosineAnnealingLR.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min = 0.0);

 private:
  double lr_at(std::int64_t epoch) const override;
  std::int64_t t_max_;
  double eta_min_;
};

/// Rescales the gradients of `params` in place so that their joint norm (the norm of the
/// per-tensor norms; norm_type may be infinity) is at most max_norm, as
/// torch.nn.utils.clip_grad_norm_: every gradient is multiplied by
/// min(1, max_norm/(total + 1e-6)). Parameters without a gradient are ignored. Returns the
/// total norm before clipping. Throws ValueError on max_norm < 0 or norm_type <= 0.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm,
                       double norm_type = 2.0);

}  // namespace tapegrad::nn
