#pragma once
// The scalar functions of element-wise ops, for both floating dtypes: f32 takes the
// branch-free kernels of vecmath.hpp, which element-wise loops vectorise; f64 takes libm,
// which the PyTorch float64 fixtures check to 1e-9.
#include <cmath>
#include <concepts>

#include "ops/kernels/vecmath.hpp"

namespace tapegrad::detail::num {

template <std::floating_point T>
T exp(T x) {
  if constexpr (std::same_as<T, float>) return vm::exp(x);
  else return std::exp(x);
}
template <std::floating_point T>
T expm1(T x) {
  if constexpr (std::same_as<T, float>) return vm::expm1(x);
  else return std::expm1(x);
}
template <std::floating_point T>
T log(T x) {
  if constexpr (std::same_as<T, float>) return vm::log(x);
  else return std::log(x);
}
template <std::floating_point T>
T log1p(T x) {
  if constexpr (std::same_as<T, float>) return vm::log1p(x);
  else return std::log1p(x);
}
/// Exact for |x| < kTrigFastBelow only in f32 (see Unary::exact_forward in unary.cpp).
template <std::floating_point T>
T sin(T x) {
  if constexpr (std::same_as<T, float>) return vm::sin(x);
  else return std::sin(x);
}
template <std::floating_point T>
T cos(T x) {
  if constexpr (std::same_as<T, float>) return vm::cos(x);
  else return std::cos(x);
}
template <std::floating_point T>
T erf(T x) {
  if constexpr (std::same_as<T, float>) return vm::erf(x);
  else return std::erf(x);
}
template <std::floating_point T>
T tanh(T x) {
  if constexpr (std::same_as<T, float>) return vm::tanh(x);
  else return std::tanh(x);
}
template <std::floating_point T>
T pow(T x, T y) {
  if constexpr (std::same_as<T, float>) return vm::pow(x, y);
  else return std::pow(x, y);
}
/// 1 / (1 + e^-x) without overflow for large |x|, and without a branch: with e = e^-|x| ≤ 1,
/// 1/(1 + e) for x ≥ 0 and e/(1 + e) below.
template <std::floating_point T>
T sigmoid(T x) {
  const T e = num::exp(-std::abs(x));
  return (x >= 0 ? T(1) : e) / (T(1) + e);
}

}  // namespace tapegrad::detail::num
