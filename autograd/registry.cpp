// The op registry: every op the checker and tapegrad-check can sweep. Built-ins are added
// from the explicit list in ops/builtins.cpp the first time the registry is used.
#include <algorithm>
#include <mutex>

#include <fmt/format.h>

#include "tapegrad/op.hpp"

namespace tapegrad {
namespace detail {
void register_builtin_ops();  // ops/builtins.cpp
}

namespace {
struct Registry {
  std::mutex mutex;
  std::vector<OpInfo> ops;
};

Registry& registry() {
  static Registry r;
  return r;
}

void ensure_builtins() {
  static std::once_flag once;
  std::call_once(once, detail::register_builtin_ops);
}
}  // namespace

void detail::add_op(OpInfo info) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = std::find_if(r.ops.begin(), r.ops.end(),
                         [&](const OpInfo& o) { return o.name == info.name; });
  if (it == r.ops.end()) {
    r.ops.push_back(std::move(info));
  } else if (it->key != info.key) {
    throw ValueError(fmt::format("register_op: another op is already registered as '{}'",
                                 info.name));
  }
}

void register_op_info(OpInfo info) {
  ensure_builtins();
  detail::add_op(std::move(info));
}

std::vector<OpInfo> registered_ops() {
  ensure_builtins();
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  return r.ops;
}

OpInfo find_op(std::string_view name) {
  auto ops = registered_ops();
  auto it = std::find_if(ops.begin(), ops.end(), [&](const OpInfo& o) { return o.name == name; });
  if (it == ops.end()) {
    std::vector<std::string> names;
    for (const auto& o : ops) names.push_back(o.name);
    throw ValueError(fmt::format("find_op: no op named '{}'; registered: {}", name,
                                 fmt::join(names, ", ")));
  }
  return *it;
}

}  // namespace tapegrad
