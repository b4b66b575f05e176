#pragma once
/// \file
/// Optimizers (SGD, Adam, AdamW) with parameter groups, learning-rate schedulers (StepLR,
/// CosineAnnealingLR) and gradient clipping, with PyTorch 1.13's update rules.
/// \code
///   nn::SGD opt(model->parameters(), {.lr = 0.05, .momentum = 0.9});
///   nn::StepLR sched(opt, 5, 0.5);
///   for (epoch ...) { for (batch ...) { opt.zero_grad(); loss.backward(); opt.step(); } sched.step(); }
/// \endcode
/// Parameter groups give parts of a model their own options, as torch.optim's list of dicts;
/// the usual use leaves biases and normalisation weights (the 1-D parameters) undecayed:
/// \code
///   std::vector<tapegrad::Tensor> decay, no_decay;
///   for (const auto& p : model->parameters()) (p.dim() <= 1 ? no_decay : decay).push_back(p);
///   nn::AdamW opt({{.params = decay}, {.params = no_decay, .weight_decay = 0.0}},
///                 {.lr = 1e-3, .weight_decay = 0.05});
///   opt.param_groups()[1].options().lr = 1e-4;          // per group, between steps
///   opt.add_param_group({.params = head->parameters(), .lr = 1e-2});
/// \endcode
/// A group's unset fields take the defaults (the second argument); schedulers scale every
/// group's lr; state() and checkpoints keep each group's options.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::nn {


/// Base of the optimizers: parameters in one or more groups, each with its own options, and
/// the per-parameter state. Schedulers, checkpoints and training loops use this interface;
/// the typed group options are on BasicOptimizer (`sgd.param_groups()[1].options()`).
///
/// Before any update, step() checks every parameter (all or nothing, ValueError/ShapeError
/// naming the optimizer, the parameter's index, group and shape): a parameter that nothing
/// but the optimizer holds any more (no module, variable or graph: it can never get a
/// gradient, e.g. after the module's slot was assigned a new tensor) is an error, never a
/// silent no-op; a parameter whose dtype changed since its state was made (Module::to, which
/// converts in place) has its state converted to the new dtype, as torch.optim's
/// load_state_dict casts state to its parameter's dtype; a parameter whose shape changed
/// under its state is an error.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// Applies one update to every parameter that has a gradient (others are skipped), without
  /// recording and in place (the parameters keep their storage). Each group's options are
  /// checked first (they may have been changed through param_groups()).
  virtual void step() = 0;
  /// Sets every parameter's accumulated gradient to zero.
  void zero_grad();
  std::size_t num_param_groups() const { return group_sizes_.size(); }
  /// The learning rate of group `group` (ValueError when there is no such group).
  virtual double lr(std::size_t group) const = 0;
  /// Sets the learning rate of one group. Throws ValueError unless lr >= 0 (and finite).
  virtual void set_lr(std::size_t group, double lr) = 0;
  /// Group 0's learning rate (the only one with a single group).
  double lr() const { return lr(0); }
  /// Sets every group's learning rate.
  void set_lr(double lr);
  /// Every parameter, group after group: the indices state() uses.
  std::vector<Tensor> parameters() const;

  /// The optimizer's state as named tensors, for checkpoints (the tensors are copies):
  /// - per group g, its options as 0-dim f64 tensors "group.<g>.<option>" ("group.0.lr",
  ///   "group.1.weight_decay", booleans as 0 or 1) and "group.<g>.size", its number of
  ///   parameters (0-dim i64);
  /// - per parameter index i (see parameters()) that has state, "i.<key>" (e.g.
  ///   "0.momentum_buffer", "3.exp_avg", "3.step" as a 0-dim i64).
  NamedTensors state() const;
  /// Replaces the state with `state` (as returned by state()), all or nothing: throws
  /// ValueError on an unknown name or index, a missing companion entry, a group count or
  /// size that differs from this optimizer's, an invalid option; ShapeError/DTypeError when a
  /// tensor does not match its parameter; before changing anything. The state of an older
  /// tapegrad, with one "lr" entry and no groups, still loads: its lr is set on every group.
  void load_state(const NamedTensors& state);

 protected:
  explicit Optimizer(const char* name) : name_(name) {}
  /// Checks that `params` (the new group number group_sizes_.size()) are leaves requiring
  /// grad that no group holds yet, then appends them to the flat index.
  void add_params(const std::vector<Tensor>& params);
  /// The per-parameter checks of step() described above; run by every step() first.
  void check_parameters();
  /// A group's options by name, booleans as 0 or 1 (the "group.<g>.*" entries of state()).
  using OptionValues = std::vector<std::pair<std::string, double>>;
  /// Group g's parameters.
  virtual const std::vector<Tensor>& group_params(std::size_t group) const = 0;
  /// The state keys kept by a parameter of a group with these options ("step" is a 0-dim
  /// i64 counter, the others have the parameter's shape and dtype); all are present once a
  /// parameter has one.
  virtual std::vector<std::string> state_keys(const OptionValues& options) const = 0;
  std::vector<std::string> state_keys(std::size_t group) const { return state_keys(group_options(group)); }
  virtual OptionValues group_options(std::size_t group) const = 0;
  /// Checks `values` (the names group_options gives, in any order) as group g's options,
  /// throwing ValueError naming the group and the first bad one; sets them only when `apply`.
  virtual void load_group_options(std::size_t group, const OptionValues& values, bool apply) = 0;
  /// Makes parameter i (`param`)'s state hold exactly `keys`: adds the missing ones as zeros
  /// ("step" a 0-dim i64), drops the others (a group's amsgrad switched on or off).
  void sync_state(std::size_t i, const Tensor& param, const std::vector<std::string>& keys);
  /// Parameter i for messages: "parameter 3 ([4] f64, group 1)".
  std::string describe(std::size_t i) const;
  /// The state tensor `key` of parameter i (which must exist).
  Tensor& slot(std::size_t i, const std::string& key);
  /// Per-parameter state, indexed as parameters(), keyed as state_keys(); empty until the
  /// parameter's first update.
  std::vector<std::vector<std::pair<std::string, Tensor>>> state_;
  std::vector<std::size_t> group_sizes_;
  const char* name_;
};

/// One group of parameters and the options they are updated with, as libtorch's
/// OptimizerParamGroup. The parameters are fixed; the options can be changed between steps
/// (`opt.param_groups()[1].options().lr = 1e-4`), and are checked by the next step().
template <class Options>
class ParamGroup {
 public:
  ParamGroup(std::vector<Tensor> params, const Options& options)
      : params_(std::move(params)), options_(options) {}
  const std::vector<Tensor>& params() const { return params_; }
  Options& options() { return options_; }
  const Options& options() const { return options_; }

 private:
  const std::vector<Tensor> params_;
  Options options_;
};

/// The typed groups of an optimizer with options `Options`, built from `Group`s: a list of
/// parameters plus the options it overrides (unset ones take the defaults).
template <class Options, class Group>
class BasicOptimizer : public Optimizer {
 public:
  /// The groups, in order; their options can be changed, their number and parameters not
  /// (use add_param_group).
  std::span<ParamGroup<Options>> param_groups() { return groups_; }
  std::span<const ParamGroup<Options>> param_groups() const { return groups_; }
  /// Appends a group; its unset options take the defaults the optimizer was built with.
  /// Throws ValueError when a parameter is not a leaf requiring grad or already belongs to a
  /// group, or an option is invalid. Its parameters get indices after every existing one.
  void add_param_group(const Group& group);
  /// The options that groups' unset fields take.
  const Options& defaults() const { return defaults_; }
  double lr(std::size_t group) const override;
  void set_lr(std::size_t group, double lr) override;
  using Optimizer::lr;
  using Optimizer::set_lr;

 protected:
  BasicOptimizer(const std::vector<Group>& groups, const Options& defaults, const char* name);
  /// Throws ValueError naming the optimizer, the group and the bad option.
  void check_options(std::size_t group, const Options& options) const;
  /// Checks every group's options, then the parameters (check_parameters): step()'s start.
  void prepare_step();
  const std::vector<Tensor>& group_params(std::size_t group) const override;
  OptionValues group_options(std::size_t group) const override;
  void load_group_options(std::size_t group, const OptionValues& values, bool apply) override;
  std::vector<ParamGroup<Options>> groups_;

 private:
  Options defaults_;
};

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// A group for SGD: its parameters and the options it sets (the others are the optimizer's).
struct SGDGroup {
  std::vector<Tensor> params{};
  std::optional<double> lr{}, momentum{}, dampening{}, weight_decay{};
  std::optional<bool> nesterov{};
  /// `defaults` with this group's fields put over it.
  SGDOptions options(const SGDOptions& defaults) const;
};

/// Stochastic gradient descent, as torch.optim.SGD:
///   g = grad + weight_decay·p
///   buf = g (first step), else momentum·buf + (1 - dampening)·g       (when momentum != 0)
///   g = nesterov ? g + momentum·buf : buf
///   p -= lr·g
/// with each group's options. State: "momentum_buffer". Throws ValueError on negative lr,
/// momentum or weight_decay, and on nesterov without momentum > 0 and dampening = 0.
///
/// Groups (see the top of this file): `nn::SGD opt({{.params = a}, {.params = b, .lr = 0.1}},
/// {.lr = 0.01, .momentum = 0.9})`.
class SGD : public BasicOptimizer<SGDOptions, SGDGroup> {
 public:
  /// One group holding `params`.
  SGD(std::vector<Tensor> params, const SGDOptions& options = {});
  /// Several groups; the fields a group leaves unset take `defaults`. (The initializer_list
  /// overload makes a braced list of groups, even of one, unambiguous.)
  SGD(const std::vector<SGDGroup>& groups, const SGDOptions& defaults = {});
  SGD(std::initializer_list<SGDGroup> groups, const SGDOptions& defaults = {})
      : SGD(std::vector<SGDGroup>(groups), defaults) {}
  void step() override;

 private:
  using Optimizer::state_keys;
  std::vector<std::string> state_keys(const OptionValues& options) const override;
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

/// A group for Adam and AdamW: its parameters and the options it sets.
struct AdamGroup {
  std::vector<Tensor> params{};
  std::optional<double> lr{}, beta1{}, beta2{}, eps{}, weight_decay{};
  std::optional<bool> amsgrad{};
  /// `defaults` with this group's fields put over it.
  AdamOptions options(const AdamOptions& defaults) const;
};

/// Adam, as torch.optim.Adam (t counts this parameter's steps):
///   g = grad + weight_decay·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
///   v̂ = amsgrad ? max_v = max(max_v, v) : v
///   p -= lr/(1-β1^t) · m / (√v̂/√(1-β2^t) + eps)
/// with each group's options (groups as SGD's). State: "step", "exp_avg", "exp_avg_sq" (and
/// "max_exp_avg_sq" in groups with amsgrad). Throws ValueError on lr < 0, betas outside
/// [0, 1), eps < 0 or weight_decay < 0.
class Adam : public BasicOptimizer<AdamOptions, AdamGroup> {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& options = {});
  Adam(const std::vector<AdamGroup>& groups, const AdamOptions& defaults = {});
  Adam(std::initializer_list<AdamGroup> groups, const AdamOptions& defaults = {})
      : Adam(std::vector<AdamGroup>(groups), defaults) {}
  void step() override;

 protected:
  Adam(const std::vector<AdamGroup>& groups, const AdamOptions& defaults, bool decoupled,
       const char* name);

 private:
  using Optimizer::state_keys;
  std::vector<std::string> state_keys(const OptionValues& options) const override;
  bool decoupled_;
};

/// AdamW, as torch.optim.AdamW: p *= 1 - lr·weight_decay, then Adam's update without the
/// L2 term. Default weight_decay 1e-2.
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, const AdamOptions& options = {.weight_decay = 1e-2});
  AdamW(const std::vector<AdamGroup>& groups,
        const AdamOptions& defaults = {.weight_decay = 1e-2});
  AdamW(std::initializer_list<AdamGroup> groups,
        const AdamOptions& defaults = {.weight_decay = 1e-2})
      : AdamW(std::vector<AdamGroup>(groups), defaults) {}
};

extern template class BasicOptimizer<SGDOptions, SGDGroup>;
extern template class BasicOptimizer<AdamOptions, AdamGroup>;

// ---- learning-rate schedulers ----------------------------------------------------------------

/// Sets every group's lr from an epoch counter and that group's base lr: construction sets
/// epoch 0 (and records each group's lr as its base_lr; a group added to the optimizer later
/// gets its lr at the scheduler's next step as base_lr); each step() advances one epoch.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  void step();
  /// Group 0's lr set by the last step (or the constructor).
  double last_lr() const { return optimizer_->lr(); }
  std::int64_t last_epoch() const { return epoch_; }
  /// Jumps to `epoch` (e.g. when resuming) and sets the lr for it.
  void set_epoch(std::int64_t epoch);
  /// Group 0's base lr.
  double base_lr() const { return base_lrs_.front(); }
  const std::vector<double>& base_lrs() const { return base_lrs_; }

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  virtual double lr_at(std::int64_t epoch, double base_lr) const = 0;
  Optimizer* optimizer_;
  std::vector<double> base_lrs_;
  std::int64_t epoch_ = 0;
};

/// lr = base_lr · gamma^floor(epoch / step_size), as torch.optim.lr_scheduler.StepLR.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 private:
  double lr_at(std::int64_t epoch, double base_lr) const override;
  std::int64_t step_size_;
  double gamma_;
};

/// lr = eta_min + (base_lr - eta_min)·(1 + cos(π·epoch/T_max))/2, the closed form of
/// torch.optim.lr_scheduler.CosineAnnealingLR.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min = 0.0);

 private:
  double lr_at(std::int64_t epoch, double base_lr) const override;
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
