// Optimizers, schedulers and gradient clipping with PyTorch 1.13's exact update rules
// (torch/optim/sgd.py, adam.py, adamw.py: the single-tensor, non-capturable paths). Updates
// run under NoGradGuard and change the parameters in place; where Tensor has no in-place
// op (sqrt, division) the term is computed out of place first.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <limits>
#include <map>
#include <numbers>
#include <optional>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/ops.hpp"
#include "tapegrad/optim.hpp"

namespace tapegrad::nn {
namespace {

void check_non_negative(std::string_view fn, const char* what, double v) {
  if (!(v >= 0.0 && std::isfinite(v))) {
    throw ValueError(fmt::format("{}: {} must be finite and >= 0, got {}", fn, what, v));
  }
}

/// dst = max(dst, src) element-wise (amsgrad's running maximum); NaN propagates as in
/// torch.maximum.
void maximum_into(Tensor& dst, const Tensor& src) {
  auto run = [&](auto* d, const auto* s) {
    for (std::int64_t i = 0; i < dst.numel(); ++i) {
      if (std::isnan(s[i]) || s[i] > d[i]) d[i] = s[i];
    }
  };
  Tensor tmp = dst.clone();  // write through copy_ so dst's version() records the change
  if (dst.dtype() == DType::f32) run(tmp.data<float>(), src.data<float>());
  else run(tmp.data<double>(), src.data<double>());
  dst.copy_(tmp);
}

}  // namespace

// ---- Optimizer -------------------------------------------------------------------------------

std::string Optimizer::describe(std::size_t i) const {
  std::size_t group = 0;
  std::size_t first = 0;
  while (i >= first + group_sizes_[group]) first += group_sizes_[group++];
  const Tensor& p = group_params(group)[i - first];
  return fmt::format("parameter {} ({} {}, group {})", i, p.shape(), p.dtype(), group);
}

void Optimizer::add_params(const std::vector<Tensor>& params) {
  const std::size_t group = group_sizes_.size();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (!p.defined() || !p.requires_grad() || !p.is_leaf()) {
      throw ValueError(fmt::format("{}: parameter {} of group {} must be a leaf tensor that "
                                   "requires grad", name_, i, group));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (params[j].impl() == p.impl()) {
        throw ValueError(fmt::format("{}: parameter {} of group {} appears twice (also at {})",
                                     name_, i, group, j));
      }
    }
    for (std::size_t g = 0; g < group; ++g) {
      for (const Tensor& q : group_params(g)) {
        if (q.impl() == p.impl()) {
          throw ValueError(fmt::format("{}: parameter {} of group {} ({} {}) is already in group "
                                       "{}; a parameter belongs to one group", name_, i, group,
                                       p.shape(), p.dtype(), g));
        }
      }
    }
  }
  group_sizes_.push_back(params.size());
  state_.resize(state_.size() + params.size());
}

void Optimizer::check_parameters() {
  bool converts = false;
  for (std::size_t g = 0, i = 0; g < group_sizes_.size(); ++g) {
    for (const Tensor& p : group_params(g)) {
      // The optimizer's handle is the only one: no module, variable or recorded graph can
      // use this tensor, so it would never get a gradient again.
      if (p.impl().use_count() == 1) {
        throw ValueError(fmt::format(
            "{}::step: {} is held by nothing but this optimizer (no module, variable or graph "
            "refers to it), so it can never be trained; was the module's parameter replaced by "
            "a new tensor? Build the optimizer from the tensors the model uses now",
            name_, describe(i)));
      }
      for (const auto& [key, t] : state_[i]) {
        if (key == "step") continue;
        if (t.shape() != p.shape()) {
          throw ShapeError(fmt::format("{}::step: {} changed shape since its state '{}' ({}) was "
                                       "made", name_, describe(i), key, t.shape()));
        }
        converts = converts || t.dtype() != p.dtype();
      }
      ++i;
    }
  }
  if (!converts) return;
  NoGradGuard no_grad;
  for (std::size_t g = 0, i = 0; g < group_sizes_.size(); ++g) {
    for (const Tensor& p : group_params(g)) {
      for (auto& [key, t] : state_[i]) {
        if (key != "step" && t.dtype() != p.dtype()) t = t.to(p.dtype());
      }
      ++i;
    }
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : parameters()) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  for (std::size_t g = 0; g < num_param_groups(); ++g) set_lr(g, lr);
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (std::size_t g = 0; g < num_param_groups(); ++g) {
    const auto& params = group_params(g);
    out.insert(out.end(), params.begin(), params.end());
  }
  return out;
}

void Optimizer::sync_state(std::size_t i, const Tensor& param,
                           const std::vector<std::string>& keys) {
  auto& entries = state_[i];
  std::erase_if(entries, [&](const auto& entry) {
    return std::find(keys.begin(), keys.end(), entry.first) == keys.end();
  });
  for (const auto& key : keys) {
    const bool present = std::any_of(entries.begin(), entries.end(),
                                     [&](const auto& entry) { return entry.first == key; });
    if (!present) entries.emplace_back(key, key == "step" ? zeros({}, DType::i64) : zeros_like(param));
  }
}

Tensor& Optimizer::slot(std::size_t i, const std::string& key) {
  for (auto& [k, t] : state_[i]) {
    if (k == key) return t;
  }
  throw ValueError(fmt::format("{}: {} has no state '{}'", name_, describe(i), key));
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  for (std::size_t g = 0; g < num_param_groups(); ++g) {
    for (const auto& [option, value] : group_options(g)) {
      out.emplace_back(fmt::format("group.{}.{}", g, option), scalar_tensor(value, DType::f64));
    }
    out.emplace_back(fmt::format("group.{}.size", g),
                     scalar_tensor(static_cast<double>(group_sizes_[g]), DType::i64));
  }
  for (std::size_t i = 0; i < state_.size(); ++i) {
    for (const auto& [key, t] : state_[i]) out.emplace_back(fmt::format("{}.{}", i, key), t.clone());
  }
  return out;
}

namespace {
/// Parses "<index>.<rest>" (the index in decimal); nullopt when `name` has another form.
std::optional<std::pair<std::size_t, std::string>> split_index(std::string_view name) {
  const auto dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  std::size_t index = 0;
  const auto parsed = std::from_chars(name.data(), name.data() + dot, index);
  if (parsed.ec != std::errc() || parsed.ptr != name.data() + dot) return std::nullopt;
  return std::pair{index, std::string(name.substr(dot + 1))};
}

/// The one value of a 0-dim `t` named `name` (ShapeError otherwise).
double scalar_entry(const char* fn, const std::string& name, const Tensor& t) {
  if (t.numel() != 1 || t.dim() != 0) {
    throw ShapeError(fmt::format("{}::load_state: '{}' must be a 0-dim tensor, got {} {}", fn,
                                 name, t.shape(), t.dtype()));
  }
  return t.item<double>();
}
}  // namespace

void Optimizer::load_state(const NamedTensors& state) {
  const std::size_t groups = num_param_groups();
  const std::vector<Tensor> params = parameters();
  std::vector<std::map<std::string, Tensor>> loaded(state_.size());
  std::vector<OptionValues> options(groups);
  std::vector<std::optional<std::size_t>> sizes(groups);
  std::optional<double> old_lr;
  for (const auto& [name, t] : state) {
    if (!t.defined()) {
      throw ValueError(fmt::format("{}::load_state: '{}' is an undefined tensor", name_, name));
    }
    if (name == "lr") {  // the state of a tapegrad without parameter groups
      old_lr = scalar_entry(name_, name, t);
      check_non_negative(name_, "lr", *old_lr);
      continue;
    }
    if (name.starts_with("group.")) {
      const auto group = split_index(std::string_view(name).substr(6));
      if (!group || group->first >= groups) {
        throw ValueError(fmt::format("{}::load_state: unexpected entry '{}'; the optimizer has "
                                     "{} parameter groups, 'group.0' to 'group.{}'", name_, name,
                                     groups, groups - 1));
      }
      const auto& [g, option] = *group;
      const double value = scalar_entry(name_, name, t);
      if (option == "size") {
        if (value != static_cast<double>(group_sizes_[g])) {
          throw ValueError(fmt::format("{}::load_state: group {} of the state has {} parameters, "
                                       "this optimizer's has {}", name_, g, value,
                                       group_sizes_[g]));
        }
        sizes[g] = group_sizes_[g];
        continue;
      }
      const OptionValues current = group_options(g);
      const std::string& wanted = option;  // a structured binding, which clang 14 cannot capture
      if (std::none_of(current.begin(), current.end(), [&](const auto& o) { return o.first == wanted; })) {
        std::vector<std::string> known;
        for (const auto& o : current) known.push_back(o.first);
        throw ValueError(fmt::format("{}::load_state: unexpected entry '{}'; a group's options "
                                     "are [{}] and size", name_, name, fmt::join(known, ", ")));
      }
      options[g].emplace_back(option, value);
      continue;
    }
    const auto entry = split_index(name);
    if (!entry) {
      throw ValueError(fmt::format("{}::load_state: unexpected entry '{}'; expected "
                                   "'group.<g>.<option>' or '<parameter index>.<key>'",
                                   name_, name));
    }
    const auto& [index, key] = *entry;
    if (index >= state_.size()) {
      throw ValueError(fmt::format("{}::load_state: entry '{}' names parameter {}, but the "
                                   "optimizer has {} parameters", name_, name, index,
                                   state_.size()));
    }
    const Tensor& p = params[index];
    const TensorMeta want = key == "step" ? TensorMeta{Shape{}, DType::i64} : p.meta();
    if (t.shape() != want.shape) {
      throw ShapeError(fmt::format("{}::load_state: '{}' has shape {} but {} needs {}", name_,
                                   name, t.shape(), describe(index), want.shape));
    }
    if (t.dtype() != want.dtype) {
      throw DTypeError(fmt::format("{}::load_state: '{}' is {} but must be {}", name_, name,
                                   t.dtype(), want.dtype));
    }
    if (!loaded[index].emplace(key, t).second) {
      throw ValueError(fmt::format("{}::load_state: entry '{}' appears twice", name_, name));
    }
  }
  const bool has_groups = std::any_of(options.begin(), options.end(), [](const auto& o) { return !o.empty(); }) ||
                          std::any_of(sizes.begin(), sizes.end(), [](const auto& s) { return s.has_value(); });
  if (has_groups && old_lr) {
    throw ValueError(fmt::format("{}::load_state: the state has both 'lr' (the format without "
                                 "groups) and 'group.*' entries", name_));
  }
  for (std::size_t g = 0; has_groups && g < groups; ++g) {
    std::vector<std::string> missing;
    if (!sizes[g]) missing.push_back(fmt::format("group.{}.size", g));
    for (const auto& named : group_options(g)) {
      const std::string& option = named.first;
      const auto count = std::count_if(options[g].begin(), options[g].end(),
                                       [&](const auto& o) { return o.first == option; });
      if (count > 1) {
        throw ValueError(fmt::format("{}::load_state: entry 'group.{}.{}' appears twice", name_,
                                     g, option));
      }
      if (count == 0) missing.push_back(fmt::format("group.{}.{}", g, option));
    }
    if (!missing.empty()) {
      throw ValueError(fmt::format("{}::load_state: the state lacks [{}]", name_,
                                   fmt::join(missing, ", ")));
    }
    load_group_options(g, options[g], false);
  }
  for (std::size_t g = 0, i = 0; g < groups; ++g) {
    const std::vector<std::string> keys = state_keys(has_groups ? options[g] : group_options(g));
    for (std::size_t end = i + group_sizes_[g]; i < end; ++i) {
      for (const auto& [key, _] : loaded[i]) {
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
          throw ValueError(fmt::format("{}::load_state: unexpected entry '{}.{}'; {} keeps [{}]",
                                       name_, i, key, describe(i), fmt::join(keys, ", ")));
        }
      }
      if (loaded[i].empty()) continue;
      for (const auto& key : keys) {
        if (loaded[i].count(key) == 0) {
          throw ValueError(fmt::format("{}::load_state: {} has state but lacks '{}.{}'", name_,
                                       describe(i), i, key));
        }
      }
    }
  }
  NoGradGuard no_grad;
  for (std::size_t g = 0, i = 0; g < groups; ++g) {
    if (has_groups) load_group_options(g, options[g], true);
    if (old_lr) set_lr(g, *old_lr);
    const std::vector<std::string> keys = state_keys(g);
    for (std::size_t end = i + group_sizes_[g]; i < end; ++i) {
      state_[i].clear();
      if (loaded[i].empty()) continue;
      for (const auto& key : keys) state_[i].emplace_back(key, loaded[i].at(key).detach().clone());
    }
  }
}

// ---- BasicOptimizer --------------------------------------------------------------------------

namespace {

/// Calls f(name, field) on every option, in the order of the struct.
template <class O, class F>
  requires std::same_as<std::remove_const_t<O>, SGDOptions>
void for_each_option(O& o, F&& f) {
  f("lr", o.lr);
  f("momentum", o.momentum);
  f("dampening", o.dampening);
  f("weight_decay", o.weight_decay);
  f("nesterov", o.nesterov);
}

template <class O, class F>
  requires std::same_as<std::remove_const_t<O>, AdamOptions>
void for_each_option(O& o, F&& f) {
  f("lr", o.lr);
  f("beta1", o.beta1);
  f("beta2", o.beta2);
  f("eps", o.eps);
  f("weight_decay", o.weight_decay);
  f("amsgrad", o.amsgrad);
}

void validate(const std::string& who, const SGDOptions& o) {
  check_non_negative(who, "lr", o.lr);
  check_non_negative(who, "momentum", o.momentum);
  check_non_negative(who, "weight_decay", o.weight_decay);
  if (!std::isfinite(o.dampening)) {
    throw ValueError(fmt::format("{}: dampening must be finite, got {}", who, o.dampening));
  }
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0)) {
    throw ValueError(fmt::format("{}: nesterov needs momentum > 0 and dampening = 0, got "
                                 "momentum={} dampening={}", who, o.momentum, o.dampening));
  }
}

void validate(const std::string& who, const AdamOptions& o) {
  check_non_negative(who, "lr", o.lr);
  for (auto [what, beta] : {std::pair{"beta1", o.beta1}, std::pair{"beta2", o.beta2}}) {
    if (!(beta >= 0.0 && beta < 1.0)) {
      throw ValueError(fmt::format("{}: {} must be in [0, 1), got {}", who, what, beta));
    }
  }
  check_non_negative(who, "eps", o.eps);
  check_non_negative(who, "weight_decay", o.weight_decay);
}

}  // namespace

SGDOptions SGDGroup::options(const SGDOptions& defaults) const {
  return {.lr = lr.value_or(defaults.lr),
          .momentum = momentum.value_or(defaults.momentum),
          .dampening = dampening.value_or(defaults.dampening),
          .weight_decay = weight_decay.value_or(defaults.weight_decay),
          .nesterov = nesterov.value_or(defaults.nesterov)};
}

AdamOptions AdamGroup::options(const AdamOptions& defaults) const {
  return {.lr = lr.value_or(defaults.lr),
          .beta1 = beta1.value_or(defaults.beta1),
          .beta2 = beta2.value_or(defaults.beta2),
          .eps = eps.value_or(defaults.eps),
          .weight_decay = weight_decay.value_or(defaults.weight_decay),
          .amsgrad = amsgrad.value_or(defaults.amsgrad)};
}

template <class Options, class Group>
BasicOptimizer<Options, Group>::BasicOptimizer(const std::vector<Group>& groups,
                                               const Options& defaults, const char* name)
    : Optimizer(name), defaults_(defaults) {
  for (const Group& group : groups) add_param_group(group);
  if (state_.empty()) throw ValueError(fmt::format("{}: got an empty parameter list", name_));
}

template <class Options, class Group>
void BasicOptimizer<Options, Group>::add_param_group(const Group& group) {
  const Options options = group.options(defaults_);
  check_options(groups_.size(), options);
  add_params(group.params);
  groups_.emplace_back(group.params, options);
}

template <class Options, class Group>
void BasicOptimizer<Options, Group>::check_options(std::size_t group, const Options& options) const {
  validate(fmt::format("{} (group {})", name_, group), options);
}

template <class Options, class Group>
void BasicOptimizer<Options, Group>::prepare_step() {
  for (std::size_t g = 0; g < groups_.size(); ++g) check_options(g, groups_[g].options());
  check_parameters();
}

template <class Options, class Group>
double BasicOptimizer<Options, Group>::lr(std::size_t group) const {
  if (group >= groups_.size()) {
    throw ValueError(fmt::format("{}::lr: no group {}; the optimizer has {}", name_, group,
                                 groups_.size()));
  }
  return groups_[group].options().lr;
}

template <class Options, class Group>
void BasicOptimizer<Options, Group>::set_lr(std::size_t group, double lr) {
  if (group >= groups_.size()) {
    throw ValueError(fmt::format("{}::set_lr: no group {}; the optimizer has {}", name_, group,
                                 groups_.size()));
  }
  check_non_negative(fmt::format("{} (group {})", name_, group), "lr", lr);
  groups_[group].options().lr = lr;
}

template <class Options, class Group>
const std::vector<Tensor>& BasicOptimizer<Options, Group>::group_params(std::size_t group) const {
  return groups_[group].params();
}

template <class Options, class Group>
Optimizer::OptionValues BasicOptimizer<Options, Group>::group_options(std::size_t group) const {
  OptionValues out;
  for_each_option(groups_[group].options(), [&](const char* name, const auto& value) {
    out.emplace_back(name, static_cast<double>(value));
  });
  return out;
}

template <class Options, class Group>
void BasicOptimizer<Options, Group>::load_group_options(std::size_t group,
                                                        const OptionValues& values, bool apply) {
  Options options = groups_[group].options();
  for (const auto& entry : values) {  // not a structured binding: clang 14 cannot capture one
    const std::string& name = entry.first;
    const double value = entry.second;
    for_each_option(options, [&](const char* field, auto& target) {
      if (name != field) return;
      if constexpr (std::is_same_v<std::remove_reference_t<decltype(target)>, bool>) {
        if (value != 0.0 && value != 1.0) {
          throw ValueError(fmt::format("{}::load_state: group.{}.{} must be 0 or 1, got {}",
                                       name_, group, name, value));
        }
        target = value == 1.0;
      } else {
        target = value;
      }
    });
  }
  check_options(group, options);
  if (apply) groups_[group].options() = options;
}

template class BasicOptimizer<SGDOptions, SGDGroup>;
template class BasicOptimizer<AdamOptions, AdamGroup>;

// ---- SGD -------------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> params, const SGDOptions& options)
    : SGD(std::vector<SGDGroup>{{.params = std::move(params)}}, options) {}

SGD::SGD(const std::vector<SGDGroup>& groups, const SGDOptions& defaults)
    : BasicOptimizer(groups, defaults, "SGD") {}

std::vector<std::string> SGD::state_keys(const OptionValues&) const { return {"momentum_buffer"}; }

void SGD::step() {
  prepare_step();
  NoGradGuard no_grad;
  for (std::size_t g = 0, i = 0; g < groups_.size(); ++g) {
    const SGDOptions& o = groups_[g].options();
    for (Tensor p : groups_[g].params()) {
      const std::size_t index = i++;
      Tensor d_p = p.grad();
      if (!d_p.defined()) continue;
      if (o.weight_decay != 0.0) d_p = d_p + p * o.weight_decay;
      if (o.momentum != 0.0) {
        if (state_[index].empty()) {
          state_[index].emplace_back("momentum_buffer", d_p.clone());
        } else {
          slot(index, "momentum_buffer").mul_(o.momentum).add_(d_p, 1.0 - o.dampening);
        }
        const Tensor& buf = slot(index, "momentum_buffer");
        d_p = o.nesterov ? d_p + buf * o.momentum : buf;
      }
      p.add_(d_p, -o.lr);
    }
  }
}

// ---- Adam, AdamW -----------------------------------------------------------------------------

Adam::Adam(std::vector<Tensor> params, const AdamOptions& options)
    : Adam(std::vector<AdamGroup>{{.params = std::move(params)}}, options, false, "Adam") {}

Adam::Adam(const std::vector<AdamGroup>& groups, const AdamOptions& defaults)
    : Adam(groups, defaults, false, "Adam") {}

AdamW::AdamW(std::vector<Tensor> params, const AdamOptions& options)
    : Adam(std::vector<AdamGroup>{{.params = std::move(params)}}, options, true, "AdamW") {}

AdamW::AdamW(const std::vector<AdamGroup>& groups, const AdamOptions& defaults)
    : Adam(groups, defaults, true, "AdamW") {}

Adam::Adam(const std::vector<AdamGroup>& groups, const AdamOptions& defaults, bool decoupled,
           const char* name)
    : BasicOptimizer(groups, defaults, name), decoupled_(decoupled) {}

std::vector<std::string> Adam::state_keys(const OptionValues& options) const {
  std::vector<std::string> keys{"step", "exp_avg", "exp_avg_sq"};
  for (const auto& [name, value] : options) {
    if (name == "amsgrad" && value != 0.0) keys.emplace_back("max_exp_avg_sq");
  }
  return keys;
}

void Adam::step() {
  prepare_step();
  NoGradGuard no_grad;
  for (std::size_t g = 0, i = 0; g < groups_.size(); ++g) {
    const AdamOptions& o = groups_[g].options();
    const std::vector<std::string> keys = state_keys(g);
    for (Tensor p : groups_[g].params()) {
      const std::size_t index = i++;
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      sync_state(index, p, keys);
      Tensor& step_t = slot(index, "step");
      const std::int64_t t = step_t.item<std::int64_t>() + 1;
      step_t.fill_(static_cast<double>(t));
      if (decoupled_) {
        p.mul_(1.0 - o.lr * o.weight_decay);
      } else if (o.weight_decay != 0.0) {
        grad = grad + p * o.weight_decay;
      }
      Tensor& exp_avg = slot(index, "exp_avg");
      Tensor& exp_avg_sq = slot(index, "exp_avg_sq");
      exp_avg.mul_(o.beta1).add_(grad, 1.0 - o.beta1);
      exp_avg_sq.mul_(o.beta2).add_(grad * grad, 1.0 - o.beta2);
      const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
      const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
      const double step_size = o.lr / bias_correction1;
      Tensor second = exp_avg_sq;
      if (o.amsgrad) {
        Tensor& max_sq = slot(index, "max_exp_avg_sq");
        maximum_into(max_sq, exp_avg_sq);
        second = max_sq;
      }
      const Tensor denom = tapegrad::sqrt(second) / std::sqrt(bias_correction2) + o.eps;
      p.add_(exp_avg / denom, -step_size);
    }
  }
}

// ---- schedulers ------------------------------------------------------------------------------

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(&optimizer) {
  for (std::size_t g = 0; g < optimizer.num_param_groups(); ++g) base_lrs_.push_back(optimizer.lr(g));
}

void LRScheduler::step() { set_epoch(epoch_ + 1); }

void LRScheduler::set_epoch(std::int64_t epoch) {
  if (epoch < 0) throw ValueError(fmt::format("LRScheduler: epoch must be >= 0, got {}", epoch));
  epoch_ = epoch;
  for (std::size_t g = base_lrs_.size(); g < optimizer_->num_param_groups(); ++g) {
    base_lrs_.push_back(optimizer_->lr(g));  // a group added since the last step
  }
  for (std::size_t g = 0; g < base_lrs_.size(); ++g) optimizer_->set_lr(g, lr_at(epoch, base_lrs_[g]));
}

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0) throw ValueError(fmt::format("StepLR: step_size must be positive, got {}", step_size));
  check_non_negative("StepLR", "gamma", gamma);
  set_epoch(0);
}

double StepLR::lr_at(std::int64_t epoch, double base_lr) const {
  return base_lr * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  if (t_max <= 0) throw ValueError(fmt::format("CosineAnnealingLR: T_max must be positive, got {}", t_max));
  check_non_negative("CosineAnnealingLR", "eta_min", eta_min);
  set_epoch(0);
}

double CosineAnnealingLR::lr_at(std::int64_t epoch, double base_lr) const {
  const double phase = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max_);
  return eta_min_ + (base_lr - eta_min_) * (1.0 + std::cos(phase)) / 2.0;
}

// ---- clip_grad_norm_ -------------------------------------------------------------------------

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  check_non_negative("clip_grad_norm_", "max_norm", max_norm);
  if (!(norm_type > 0.0)) {
    throw ValueError(fmt::format("clip_grad_norm_: norm_type must be > 0 (or infinity), got {}",
                                 norm_type));
  }
  const bool inf = std::isinf(norm_type);
  std::vector<Tensor> grads;
  double total = 0.0;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    grads.push_back(p.grad());
    double norm = 0.0;
    for (double v : grads.back().to_vector<double>()) {
      norm = inf ? std::max(norm, std::abs(v)) : norm + std::pow(std::abs(v), norm_type);
    }
    if (inf) total = std::max(total, norm);
    else total += norm;  // Σ_tensors Σ|g|^p = Σ_tensors ‖g‖_p^p
  }
  if (!inf) total = std::pow(total, 1.0 / norm_type);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    NoGradGuard no_grad;
    for (Tensor& g : grads) g.mul_(coef);
  }
  return total;
}

}  // namespace tapegrad::nn
