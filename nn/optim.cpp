// Optimizers, schedulers and gradient clipping with PyTorch 1.13's exact update rules
// (torch/optim/sgd.py, adam.py, adamw.py: the single-tensor, non-capturable paths). Updates
// run under NoGradGuard and change the parameters in place; where Tensor has no in-place
// op (sqrt, division) the term is computed out of place first.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <numbers>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/ops.hpp"
#include "tapegrad/optim.hpp"

namespace tapegrad::nn {
namespace {

void check_non_negative(const char* fn, const char* what, double v) {
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

Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* name)
    : params_(std::move(params)), lr_(lr), name_(name) {
  check_non_negative(name_, "lr", lr);
  if (params_.empty()) throw ValueError(fmt::format("{}: got an empty parameter list", name_));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!p.defined() || !p.requires_grad() || !p.is_leaf()) {
      throw ValueError(fmt::format("{}: parameter {} must be a leaf tensor that requires grad",
                                   name_, i));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (params_[j].impl() == p.impl()) {
        throw ValueError(fmt::format("{}: parameter {} appears twice (also at {})", name_, i, j));
      }
    }
  }
  state_.resize(params_.size());
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  check_non_negative(name_, "lr", lr);
  lr_ = lr;
}

Tensor& Optimizer::slot(std::size_t i, const std::string& key) {
  for (auto& [k, t] : state_[i]) {
    if (k == key) return t;
  }
  throw ValueError(fmt::format("{}: parameter {} has no state '{}'", name_, i, key));
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  out.emplace_back("lr", scalar_tensor(lr_, DType::f64));
  for (std::size_t i = 0; i < state_.size(); ++i) {
    for (const auto& [key, t] : state_[i]) out.emplace_back(fmt::format("{}.{}", i, key), t.clone());
  }
  return out;
}

void Optimizer::load_state(const NamedTensors& state) {
  const std::vector<std::string> keys = state_keys();
  std::vector<std::map<std::string, Tensor>> loaded(params_.size());
  std::optional<double> lr;
  for (const auto& [name, t] : state) {
    if (!t.defined()) {
      throw ValueError(fmt::format("{}::load_state: '{}' is an undefined tensor", name_, name));
    }
    if (name == "lr") {
      if (t.numel() != 1 || !is_floating(t.dtype())) {
        throw ShapeError(fmt::format("{}::load_state: 'lr' must hold one floating value, got "
                                     "{} {}", name_, t.shape(), t.dtype()));
      }
      lr = t.item<double>();
      check_non_negative(name_, "lr", *lr);
      continue;
    }
    const auto dot = name.find('.');
    std::size_t index = 0;
    const char* first = name.data();
    const char* last = name.data() + (dot == std::string::npos ? 0 : dot);
    const auto parsed = std::from_chars(first, last, index);
    const std::string key = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (dot == std::string::npos || dot == 0 || parsed.ec != std::errc() || parsed.ptr != last ||
        std::find(keys.begin(), keys.end(), key) == keys.end()) {
      throw ValueError(fmt::format("{}::load_state: unexpected entry '{}'; expected 'lr' or "
                                   "'<parameter index>.<key>' with key one of [{}]",
                                   name_, name, fmt::join(keys, ", ")));
    }
    if (index >= params_.size()) {
      throw ValueError(fmt::format("{}::load_state: entry '{}' names parameter {}, but the "
                                   "optimizer has {} parameters", name_, name, index,
                                   params_.size()));
    }
    const Tensor& p = params_[index];
    const TensorMeta want = key == "step" ? TensorMeta{Shape{}, DType::i64} : p.meta();
    if (t.shape() != want.shape) {
      throw ShapeError(fmt::format("{}::load_state: '{}' has shape {} but parameter {} needs {}",
                                   name_, name, t.shape(), index, want.shape));
    }
    if (t.dtype() != want.dtype) {
      throw DTypeError(fmt::format("{}::load_state: '{}' is {} but must be {}", name_, name,
                                   t.dtype(), want.dtype));
    }
    if (!loaded[index].emplace(key, t).second) {
      throw ValueError(fmt::format("{}::load_state: entry '{}' appears twice", name_, name));
    }
  }
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    if (loaded[i].empty()) continue;
    for (const auto& key : keys) {
      if (loaded[i].count(key) == 0) {
        throw ValueError(fmt::format("{}::load_state: parameter {} has state but lacks '{}.{}'",
                                     name_, i, i, key));
      }
    }
  }
  NoGradGuard no_grad;
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    state_[i].clear();
    if (loaded[i].empty()) continue;
    for (const auto& key : keys) state_[i].emplace_back(key, loaded[i].at(key).detach().clone());
  }
  if (lr) lr_ = *lr;
}

// ---- SGD -------------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> params, const SGDOptions& options)
    : Optimizer(std::move(params), options.lr, "SGD"), options_(options) {
  check_non_negative("SGD", "momentum", options.momentum);
  check_non_negative("SGD", "weight_decay", options.weight_decay);
  if (!std::isfinite(options.dampening)) {
    throw ValueError(fmt::format("SGD: dampening must be finite, got {}", options.dampening));
  }
  if (options.nesterov && (options.momentum <= 0.0 || options.dampening != 0.0)) {
    throw ValueError(fmt::format("SGD: nesterov needs momentum > 0 and dampening = 0, got "
                                 "momentum={} dampening={}", options.momentum, options.dampening));
  }
}

std::vector<std::string> SGD::state_keys() const {
  if (options_.momentum == 0.0) return {};
  return {"momentum_buffer"};
}

void SGD::step() {
  NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor d_p = p.grad();
    if (!d_p.defined()) continue;
    if (options_.weight_decay != 0.0) d_p = d_p + p * options_.weight_decay;
    if (options_.momentum != 0.0) {
      if (state_[i].empty()) {
        state_[i].emplace_back("momentum_buffer", d_p.clone());
      } else {
        slot(i, "momentum_buffer").mul_(options_.momentum).add_(d_p, 1.0 - options_.dampening);
      }
      const Tensor& buf = slot(i, "momentum_buffer");
      d_p = options_.nesterov ? d_p + buf * options_.momentum : buf;
    }
    p.add_(d_p, -lr_);
  }
}

// ---- Adam, AdamW -----------------------------------------------------------------------------

Adam::Adam(std::vector<Tensor> params, const AdamOptions& options)
    : Adam(std::move(params), options, false, "Adam") {}

AdamW::AdamW(std::vector<Tensor> params, const AdamOptions& options)
    : Adam(std::move(params), options, true, "AdamW") {}

Adam::Adam(std::vector<Tensor> params, const AdamOptions& options, bool decoupled,
           const char* name)
    : Optimizer(std::move(params), options.lr, name), options_(options), decoupled_(decoupled) {
  for (auto [what, beta] : {std::pair{"beta1", options.beta1}, std::pair{"beta2", options.beta2}}) {
    if (!(beta >= 0.0 && beta < 1.0)) {
      throw ValueError(fmt::format("{}: {} must be in [0, 1), got {}", name, what, beta));
    }
  }
  check_non_negative(name, "eps", options.eps);
  check_non_negative(name, "weight_decay", options.weight_decay);
}

std::vector<std::string> Adam::state_keys() const {
  std::vector<std::string> keys{"step", "exp_avg", "exp_avg_sq"};
  if (options_.amsgrad) keys.emplace_back("max_exp_avg_sq");
  return keys;
}

void Adam::step() {
  NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2, wd = options_.weight_decay;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (state_[i].empty()) {
      for (const auto& key : state_keys()) {
        state_[i].emplace_back(key, key == "step" ? zeros({}, DType::i64) : zeros_like(p));
      }
    }
    Tensor& step_t = slot(i, "step");
    const std::int64_t t = step_t.item<std::int64_t>() + 1;
    step_t.fill_(static_cast<double>(t));
    if (decoupled_) {
      p.mul_(1.0 - lr_ * wd);
    } else if (wd != 0.0) {
      g = g + p * wd;
    }
    Tensor& exp_avg = slot(i, "exp_avg");
    Tensor& exp_avg_sq = slot(i, "exp_avg_sq");
    exp_avg.mul_(b1).add_(g, 1.0 - b1);
    exp_avg_sq.mul_(b2).add_(g * g, 1.0 - b2);
    const double bias_correction1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bias_correction2 = 1.0 - std::pow(b2, static_cast<double>(t));
    const double step_size = lr_ / bias_correction1;
    Tensor second = exp_avg_sq;
    if (options_.amsgrad) {
      Tensor& max_sq = slot(i, "max_exp_avg_sq");
      maximum_into(max_sq, exp_avg_sq);
      second = max_sq;
    }
    const Tensor denom = tapegrad::sqrt(second) / std::sqrt(bias_correction2) + options_.eps;
    p.add_(exp_avg / denom, -step_size);
  }
}

// ---- schedulers ------------------------------------------------------------------------------

LRScheduler::LRScheduler(Optimizer& optimizer)
    : optimizer_(&optimizer), base_lr_(optimizer.lr()) {}

void LRScheduler::step() { set_epoch(epoch_ + 1); }

void LRScheduler::set_epoch(std::int64_t epoch) {
  if (epoch < 0) throw ValueError(fmt::format("LRScheduler: epoch must be >= 0, got {}", epoch));
  epoch_ = epoch;
  optimizer_->set_lr(lr_at(epoch));
}

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0) throw ValueError(fmt::format("StepLR: step_size must be positive, got {}", step_size));
  check_non_negative("StepLR", "gamma", gamma);
  set_epoch(0);
}

double StepLR::lr_at(std::int64_t epoch) const {
  return base_lr_ * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  if (t_max <= 0) throw ValueError(fmt::format("CosineAnnealingLR: T_max must be positive, got {}", t_max));
  check_non_negative("CosineAnnealingLR", "eta_min", eta_min);
  set_epoch(0);
}

double CosineAnnealingLR::lr_at(std::int64_t epoch) const {
  const double phase = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max_);
  return eta_min_ + (base_lr_ - eta_min_) * (1.0 + std::cos(phase)) / 2.0;
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
