#pragma once
// Helpers shared by the gradient checker's files (autograd/ only).
#include <cstdint>
#include <string>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::detail {

/// The row-major multi-index of flat index `flat` in `shape`.
std::vector<std::int64_t> multi_index(const Shape& shape, std::int64_t flat);
/// An upstream gradient: magnitudes in [0.5, 1.5) with random signs, from `seed`.
std::vector<double> random_cotangent(std::int64_t n, std::uint64_t seed);
/// "name (where)" of every op in out's recorded graph that declares kinks (only those that
/// cannot say which branch they took, with `without_branches_only`).
std::vector<std::string> kinked_ops(const Tensor& out, bool without_branches_only = false);
/// An f64 copy of a floating tensor's values (not requiring grad); other tensors as they are.
Tensor f64_copy(const Tensor& t);
/// Same definedness, shape, dtype and values bit for bit (NaN equals itself).
bool bitwise_equal(const Tensor& a, const Tensor& b);

}  // namespace tapegrad::detail
