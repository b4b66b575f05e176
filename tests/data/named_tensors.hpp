#pragma once
// Named tensors for the file format tests (checkpoints, safetensors): a sample of every dtype
// and odd shape, bitwise comparison, fill-alikes and snapshots.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tapegrad::testing {

/// Bitwise equality (NaN payloads and -0.0 included).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const auto bytes = static_cast<std::size_t>(a.numel()) * dtype_size(a.dtype());
  if (bytes == 0) return true;
  switch (a.dtype()) {
    case DType::f32: return std::memcmp(a.data<float>(), b.data<float>(), bytes) == 0;
    case DType::f64: return std::memcmp(a.data<double>(), b.data<double>(), bytes) == 0;
    case DType::i64:
      return std::memcmp(a.data<std::int64_t>(), b.data<std::int64_t>(), bytes) == 0;
    case DType::boolean: return std::memcmp(a.data<bool>(), b.data<bool>(), bytes) == 0;
  }
  return false;
}

/// Every dtype, 0-dim and empty tensors, NaN, infinities, -0.0, subnormals, int64 extremes,
/// rank 8 and a non-ASCII name.
inline NamedTensors sample_tensors() {
  manual_seed(7);
  const double inf = std::numeric_limits<double>::infinity();
  return {
      {"features.0.weight", randn({4, 3, 3, 5}, DType::f32)},
      {"features.0.bias", randn({4}, DType::f64)},
      {"scalar", scalar_tensor(-0.0, DType::f64)},
      {"step", scalar_tensor(12345, DType::i64)},
      {"mask", from_vector(std::vector<std::int64_t>{1, 0, 0, 1, 1}, {5}).to(DType::boolean)},
      {"empty", zeros({0, 3}, DType::f32)},
      {"empty.i64", zeros({2, 0, 4}, DType::i64)},
      {"specials",
       from_vector(std::vector<double>{std::nan(""), inf, -inf, 1e-310, -0.0}, {5}, DType::f64)},
      {"ints", from_vector(std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), -1,
                                                     0, std::numeric_limits<std::int64_t>::max()},
                           {2, 2})},
      {"rank8", randn({1, 2, 1, 2, 1, 2, 1, 2}, DType::f32)},
      {"ünïcode name", ones({3}, DType::f32)},
  };
}

/// Fresh tensors of the same names, shapes and dtypes, filled with `value`.
inline NamedTensors like(const NamedTensors& tensors, double value) {
  NamedTensors out;
  for (const auto& [name, t] : tensors) out.emplace_back(name, full(t.shape(), value, t.dtype()));
  return out;
}

/// Deep copies, to compare against after a failed load.
inline NamedTensors snapshot(const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [name, t] : tensors) out.emplace_back(name, t.detach().clone());
  return out;
}

inline void require_same(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(same_bits(a[i].second, b[i].second));
  }
}

}  // namespace tapegrad::testing
