#pragma once
// Draws from the global generator (see tapegrad::manual_seed); thread-safe.
#include <cstdint>

namespace tapegrad::detail {
void fill_uniform(double* out, std::int64_t n, double low, double high);
void fill_normal(double* out, std::int64_t n);
std::uint64_t next_random_u64();
}  // namespace tapegrad::detail
