#pragma once
// Calls a generic lambda with a value of the C++ type matching a runtime dtype.
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "tapegrad/error.hpp"
#include "tapegrad/shape.hpp"

namespace tapegrad::detail {

/// f(float{}) or f(double{}); integer tensors are refused with a DTypeError naming `op`.
template <class F>
decltype(auto) dispatch_floating(DType dtype, std::string_view op, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i64:
    case DType::boolean: break;
  }
  throw DTypeError(fmt::format("{}: expects a floating tensor (f32 or f64), got {}", op, dtype));
}

/// f(float{}), f(double{}), f(std::int64_t{}) or f(bool{}).
template <class F>
decltype(auto) dispatch_all(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::i64: return f(std::int64_t{});
    case DType::boolean: return f(bool{});
  }
  return f(std::int64_t{});
}

}  // namespace tapegrad::detail
