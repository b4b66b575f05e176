// Module: the registry of parameters, buffers and submodules behind every layer, and the
// containers ModuleList, Sequential and ModuleDict. Names are validated on registration so
// that dotted names stay unambiguous.
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <utility>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"

namespace tapegrad::nn {

namespace {
/// A type's name as written in C++ ("tapegrad::nn::Linear"), not mangled.
std::string readable(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 ? name.get() : mangled;
}
}  // namespace

void Module::check_new_name(const char* what, const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos) {
    throw ValueError(fmt::format("Module::{}: name must be non-empty and contain no '.', got "
                                 "'{}'", what, name));
  }
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list) {
      if (n == name) return true;
    }
    return false;
  };
  if (taken(params_) || taken(buffers_) || taken(children_)) {
    throw ValueError(fmt::format("Module::{}: name '{}' is already registered (as a parameter, "
                                 "buffer or submodule)", what, name));
  }
}

Tensor& Module::register_parameter(const std::string& name, Tensor tensor) {
  check_new_name("register_parameter", name);
  if (!tensor.defined() || !is_floating(tensor.dtype())) {
    throw ValueError(fmt::format("Module::register_parameter: parameter '{}' must be a defined "
                                 "f32 or f64 tensor", name));
  }
  if (!tensor.is_leaf()) tensor = tensor.detach();
  tensor.set_requires_grad(true);
  params_.emplace_back(name, std::move(tensor));
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor tensor) {
  check_new_name("register_buffer", name);
  if (!tensor.defined()) {
    throw ValueError(fmt::format("Module::register_buffer: buffer '{}' is an undefined tensor",
                                 name));
  }
  buffers_.emplace_back(name, tensor.detach());
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name("register_module", name);
  if (!module) {
    throw ValueError(fmt::format("Module::register_module: submodule '{}' is null", name));
  }
  if (module.get() == this) {
    throw ValueError(fmt::format("Module::register_module: a module cannot contain itself "
                                 "('{}')", name));
  }
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (const auto& [name, t] : params ? params_ : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, out);
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

NamedTensors Module::named_state() const {
  NamedTensors out = named_parameters();
  collect("", false, out);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::children() const {
  return children_;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules(bool include_self) const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  if (include_self) {
    auto self = std::const_pointer_cast<Module>(weak_from_this().lock());
    if (!self) {
      throw ValueError(fmt::format("Module::named_modules: this {} is not held by a std::shared_ptr, "
                                   "so it cannot list itself; call named_modules(false)",
                                   readable(typeid(*this).name())));
    }
    out.emplace_back("", std::move(self));
  }
  auto visit = [&out](const auto& self, const Module& m, const std::string& prefix) -> void {
    for (const auto& entry : m.children_) {
      const auto& child = entry.second;
      const bool seen = std::any_of(out.begin(), out.end(), [&child](const auto& e) { return e.second == child; });
      if (seen) continue;
      out.emplace_back(prefix + entry.first, child);
      self(self, *child, prefix + entry.first + ".");
    }
  };
  visit(visit, *this, "");
  return out;
}

Module& Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [_, child] : children_) child->apply(fn);
  fn(*this);
  return *this;
}

Tensor Module::forward(const Tensor&) {
  throw ValueError(fmt::format("{}: this module has no forward of one tensor; call its own forward "
                               "with its inputs (a module must override forward(const Tensor&) to "
                               "be called as (*m)(x) or chained in Sequential)",
                               readable(typeid(*this).name())));
}

Tensor* Module::find_tensor(std::string_view dotted) {
  const auto dot = dotted.find('.');
  if (dot == std::string_view::npos) {
    for (auto* list : {&params_, &buffers_}) {
      for (auto& [name, t] : *list) {
        if (name == dotted) return &t;
      }
    }
    return nullptr;
  }
  for (auto& [name, child] : children_) {
    if (name == dotted.substr(0, dot)) return child->find_tensor(dotted.substr(dot + 1));
  }
  return nullptr;
}

SwapTensorsGuard::SwapTensorsGuard(Module& module, const NamedTensors& tensors) {
  std::vector<std::string> unknown, repeated, undefined;
  std::vector<Tensor*> slots;
  for (const auto& [name, t] : tensors) {
    Tensor* slot = module.find_tensor(name);
    if (!slot) {
      unknown.push_back(name);
    } else if (std::find(slots.begin(), slots.end(), slot) != slots.end()) {
      repeated.push_back(name);
    } else if (!t.defined()) {
      undefined.push_back(name);
    }
    slots.push_back(slot);
  }
  if (!unknown.empty() || !repeated.empty() || !undefined.empty()) {
    std::vector<std::string> problems;
    auto add = [&problems](const char* what, const std::vector<std::string>& names) {
      if (!names.empty()) problems.push_back(fmt::format("{} '{}'", what, fmt::join(names, "', '")));
    };
    add("no parameter or buffer named", unknown);
    add("given twice:", repeated);
    add("undefined tensor for", undefined);
    throw ValueError(fmt::format("functional_call / SwapTensorsGuard: {} (names are "
                                 "named_state()'s, e.g. '0.weight'); nothing was replaced",
                                 fmt::join(problems, "; ")));
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    saved_.emplace_back(slots[i], std::exchange(*slots[i], tensors[i].second));
  }
}

SwapTensorsGuard::~SwapTensorsGuard() {
  for (auto& [slot, original] : saved_) *slot = std::move(original);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [_, t] : params_) t.zero_grad();
  for (auto& [_, child] : children_) child->zero_grad();
}

Module& Module::to(DType dtype) {
  if (!is_floating(dtype)) {
    throw DTypeError(fmt::format("Module::to: parameters must stay floating, got {}", dtype));
  }
  NoGradGuard no_grad;
  // set_data keeps the tensor object, so every handle (a layer's member, an optimizer) sees
  // the converted tensor. The gradient is converted too, as PyTorch's Module._apply does.
  auto convert = [dtype](Tensor& t) {
    if (!is_floating(t.dtype()) || t.dtype() == dtype) return;
    if (!t.is_leaf()) t = t.detach();  // a computed tensor assigned to a buffer slot
    const Tensor grad = t.grad();
    t.set_data(t.detach().to(dtype));
    if (grad.defined()) t.set_grad(grad.to(dtype));
  };
  for (auto& [_, t] : params_) convert(t);
  for (auto& [_, t] : buffers_) convert(t);
  for (auto& [_, child] : children_) child->to(dtype);
  return *this;
}

// ---- containers ------------------------------------------------------------------------------

void detail::throw_wrong_module(const Module& module, const std::string& what, const char* wanted) {
  throw ValueError(fmt::format("{} is a {}, not the {} asked for", what, readable(typeid(module).name()),
                               readable(wanted)));
}

ModuleList::ModuleList(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

ModuleList::ModuleList(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules) push_back(m);
}

ModuleList& ModuleList::push_back(std::shared_ptr<Module> module) {
  if (!module) throw ValueError(fmt::format("{}: module {} is null", kind(), modules_.size()));
  modules_.push_back(register_module(std::to_string(modules_.size()), std::move(module)));
  return *this;
}

Module& ModuleList::operator[](std::size_t i) const {
  if (i >= modules_.size()) {
    throw ValueError(fmt::format("{}: index {} is out of range for {} modules", kind(), i, modules_.size()));
  }
  return *modules_[i];
}

Tensor ModuleList::forward(const Tensor&) {
  throw ValueError("ModuleList: a container has no forward; call its modules from your model's forward "
                   "(or use Sequential to chain them)");
}

Sequential::Sequential(std::initializer_list<Layer> layers) {
  for (const auto& layer : layers) push_back(layer);
}

Sequential::Sequential(const std::vector<Layer>& layers) {
  for (const auto& layer : layers) push_back(layer);
}

Sequential& Sequential::push_back(Layer layer) {
  ModuleList::push_back(std::move(layer.module));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& layer : *this) y = layer->forward(y);
  return y;
}

ModuleDict::ModuleDict(std::initializer_list<std::pair<std::string, std::shared_ptr<Module>>> modules) {
  for (const auto& [name, m] : modules) insert(name, m);
}

ModuleDict& ModuleDict::insert(const std::string& name, std::shared_ptr<Module> module) {
  if (!module) throw ValueError(fmt::format("ModuleDict: module '{}' is null", name));
  register_module(name, std::move(module));
  return *this;
}

bool ModuleDict::contains(const std::string& name) const {
  for (const auto& [key, _] : children()) {
    if (key == name) return true;
  }
  return false;
}

std::vector<std::string> ModuleDict::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, _] : children()) out.push_back(key);
  return out;
}

Module& ModuleDict::operator[](const std::string& name) const {
  for (const auto& [key, module] : children()) {
    if (key == name) return *module;
  }
  throw ValueError(fmt::format("ModuleDict: no module named '{}' (it holds {})", name, fmt::join(keys(), ", ")));
}

Tensor ModuleDict::forward(const Tensor&) {
  throw ValueError("ModuleDict: a container has no forward; call its modules from your model's forward");
}

std::shared_ptr<Sequential> sequential(std::initializer_list<Sequential::Layer> layers) {
  return std::make_shared<Sequential>(layers);
}
std::shared_ptr<ModuleList> module_list(std::initializer_list<std::shared_ptr<Module>> modules) {
  return std::make_shared<ModuleList>(modules);
}
std::shared_ptr<ModuleDict> module_dict(
    std::initializer_list<std::pair<std::string, std::shared_ptr<Module>>> modules) {
  return std::make_shared<ModuleDict>(modules);
}
std::shared_ptr<Identity> identity() { return std::make_shared<Identity>(); }

}  // namespace tapegrad::nn
