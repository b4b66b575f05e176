#pragma once
// Building blocks for the sample inputs every op registers for the gradient checker.
#include <cstdint>
#include <random>

#include "autograd/tensor_impl.hpp"
#include "tapegrad/op.hpp"

namespace tapegrad::detail {

/// An f64 leaf requiring grad, uniform in [low, high), from a private generator seeded
/// with `seed` (so samples never disturb the global generator).
inline Tensor sample_tensor(const Shape& shape, double low, double high, std::uint64_t seed,
                            bool requires_grad = true) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = dist(engine);
  Tensor t = from_vector(v, shape, DType::f64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

/// Values in [low, high) whose magnitude stays at least `gap` away from 0: keeps samples
/// of ops with a kink at 0 (relu, abs) away from the kink.
inline Tensor sample_away_from_zero(const Shape& shape, double low, double high, double gap,
                                    std::uint64_t seed) {
  Tensor t = sample_tensor(shape, low, high, seed, false);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] > -gap && p[i] < gap) p[i] = p[i] < 0 ? p[i] - gap : p[i] + gap;
  }
  return t.set_requires_grad(true);
}

/// An f64 leaf requiring grad holding a permutation of distinct values in [-0.5, 0.5):
/// keeps the samples of max-like ops away from ties, where they have a kink.
inline Tensor sample_distinct(const Shape& shape) {
  const std::int64_t n = shape.numel();
  std::vector<double> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    v[static_cast<std::size_t>(i)] = static_cast<double>((i * 37) % n) / static_cast<double>(n) - 0.5;
  }
  return from_vector(v, shape, DType::f64).set_requires_grad(true);
}

}  // namespace tapegrad::detail
