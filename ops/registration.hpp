#pragma once
// Registration of built-in ops. Each ops/ file ends with
//   TAPEGRAD_BUILTIN_OPS(file_name, OpA, OpB)
// which defines detail::register_builtin_file_name(); ops/builtins.cpp lists every file.
#include "tapegrad/op.hpp"

namespace tapegrad::detail {
template <class... Ops>
void add_ops() {
  (add_op(op_info<Ops>()), ...);
}
}  // namespace tapegrad::detail

#define TAPEGRAD_BUILTIN_OPS(group, ...)                                  \
  namespace detail {                                                      \
  void register_builtin_##group();                                        \
  void register_builtin_##group() { add_ops<__VA_ARGS__>(); }             \
  }
