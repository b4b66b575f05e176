// The global, seedable generator behind rand, randn, randint, dropout and initialisation.
// Normal variates use Box-Muller on our own uniform draws, so a seed gives the same numbers
// with any standard library.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>
#include <random>

#include <fmt/format.h>

#include "autograd/block_cache.hpp"
#include "autograd/dispatch.hpp"
#include "autograd/random.hpp"
#include "autograd/tensor_impl.hpp"

namespace tapegrad {
namespace detail {

namespace {
struct Generator {
  std::mutex mutex;
  std::mt19937_64 engine{0x5eed};
};
Generator& generator() {
  static Generator g;
  return g;
}
/// Uniform double in [0, 1) with 53 random bits.
double unit(std::mt19937_64& e) { return static_cast<double>(e() >> 11) * 0x1.0p-53; }
}  // namespace

void fill_uniform(double* out, std::int64_t n, double low, double high) {
  auto& g = generator();
  std::lock_guard lock(g.mutex);
  for (std::int64_t i = 0; i < n; ++i) out[i] = low + (high - low) * unit(g.engine);
}

void fill_normal(double* out, std::int64_t n) {
  auto& g = generator();
  std::lock_guard lock(g.mutex);
  for (std::int64_t i = 0; i < n; i += 2) {
    const double u1 = 1.0 - unit(g.engine);  // in (0, 1]: log is finite
    const double u2 = unit(g.engine);
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = r * std::cos(2.0 * std::numbers::pi * u2);
    if (i + 1 < n) out[i + 1] = r * std::sin(2.0 * std::numbers::pi * u2);
  }
}

std::uint64_t next_random_u64() {
  auto& g = generator();
  std::lock_guard lock(g.mutex);
  return g.engine();
}

}  // namespace detail

void manual_seed(std::uint64_t seed) {
  auto& g = detail::generator();
  std::lock_guard lock(g.mutex);
  g.engine.seed(seed);
}

namespace {
/// A floating tensor of `shape` holding the doubles fill(data, n) draws (the same stream in
/// any dtype). They are drawn into a workspace from the block cache, not the heap: freed, it
/// serves the tensors that follow, where a heap buffer (19 MB for a 512×512 3×3 weight)
/// would stay resident through a whole training run.
template <class Fill>
Tensor drawn(const Shape& shape, DType dtype, const char* op, Fill fill) {
  detail::dispatch_floating(dtype, op, [](auto) {});
  Tensor t = detail::make_tensor(shape, dtype, op);
  const std::int64_t n = t.numel();
  if (dtype == DType::f64) {
    fill(t.data<double>(), n);
    return t;
  }
  detail::Scratch<double> values(n);
  fill(values.data(), n);
  std::transform(values.data(), values.data() + n, t.data<float>(), [](double v) { return static_cast<float>(v); });
  return t;
}
}  // namespace

Tensor uniform(const Shape& shape, double low, double high, DType dtype) {
  if (!(low <= high) || !std::isfinite(low) || !std::isfinite(high)) {
    throw ValueError(fmt::format("uniform: needs finite low <= high, got low={} high={}", low, high));
  }
  Tensor t = drawn(shape, dtype, "uniform",
                   [&](double* v, std::int64_t n) { detail::fill_uniform(v, n, low, high); });
  if (dtype == DType::f32 && low < high) {
    // A double just below `high` can round up to it in f32: keep the range half-open.
    const float top = std::nextafter(static_cast<float>(high), static_cast<float>(low));
    float* p = t.data<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = std::min(p[i], top);
  }
  return t;
}

Tensor rand(const Shape& shape, DType dtype) { return uniform(shape, 0.0, 1.0, dtype); }

Tensor randn(const Shape& shape, DType dtype) {
  return drawn(shape, dtype, "randn", detail::fill_normal);
}

Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape) {
  if (low >= high) {
    throw ValueError(fmt::format("randint: needs low < high, got low={} high={}", low, high));
  }
  Tensor t = detail::make_tensor(shape, DType::i64, "randint");
  const auto range = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
  auto* p = t.data<std::int64_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    p[i] = low + static_cast<std::int64_t>(detail::next_random_u64() % range);
  }
  return t;
}

}  // namespace tapegrad
