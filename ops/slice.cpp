// Slicing along one dim: slice (Python's x[start:end:step] on that dim), and narrow, select,
// split, chunk and unbind built on it.
//   slice:          out[..., k, ...] = x[..., start + k·step, ...],  k < ceil((end - start)/step)
//   slice_backward: grad_in = grad_out at those positions, 0 elsewhere (its VJP is slice)
// Bounds follow PyTorch: a negative start/end counts from the end once, then both clamp to
// [0, size] and an end before the start gives an empty slice; step must be positive. narrow
// and select check their bounds instead of clamping (PyTorch raises there).
#include <algorithm>

#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AxisCase;
using detail::AxisMaps;

struct SliceKind {
  static constexpr std::string_view name = "slice";
  static constexpr std::string_view backward_name = "slice_backward";
  static constexpr bool indexed = false;
  static constexpr bool view = true;  // a contiguous slice's gradient is grad_out at that block
  std::int64_t dim = 0;
  std::optional<std::int64_t> start, end;
  std::int64_t step = 1;

  std::string attributes() const {
    const auto bound = [](std::optional<std::int64_t> b) {
      return b ? std::to_string(*b) : std::string("None");
    };
    return fmt::format("dim={}, start={}, end={}, step={}", dim, bound(start), bound(end), step);
  }
  AxisMaps maps(const Shape& in, const Tensor&) const {
    if (in.empty()) throw ShapeError("slice: cannot slice a 0-dim tensor");
    const std::size_t d = detail::normalize_dim(name, dim, in.size());
    if (step <= 0) throw ValueError(fmt::format("slice: step must be positive, got {}", step));
    const std::int64_t n = in[d];
    const auto clamp = [n](std::int64_t i) { return std::clamp<std::int64_t>(i < 0 ? i + n : i, 0, n); };
    const std::int64_t first = clamp(start.value_or(0));
    const std::int64_t last = std::max(first, clamp(end.value_or(n)));
    const std::int64_t count = last == first ? 0 : (last - first - 1) / step + 1;
    return detail::strided_maps(in, d, first, count, step);
  }
  SliceKind backward() const { return *this; }
  static std::vector<AxisCase<SliceKind>> cases() {
    return {{"[4, 5] dim 1, 1:5:2", {1, 1, 5, 2}, {4, 5}},
            {"[3, 4, 2] dim -2, -3: (negative start)", {-2, -3, {}, 1}, {3, 4, 2}},
            {"[6, 2] dim 0, -100:100:4 (clamped)", {0, -100, 100, 4}, {6, 2}}};
  }
};

using Slice = detail::AxisGather<SliceKind>;
using SliceBackward = detail::AxisScatter<SliceKind>;

}  // namespace

Tensor slice(const Tensor& x, std::int64_t dim, std::optional<std::int64_t> start,
             std::optional<std::int64_t> end, std::int64_t step) {
  return apply(Slice{{dim, start, end, step}}, {x});
}

Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length) {
  detail::check_defined("narrow", x);
  if (x.dim() == 0) throw ShapeError("narrow: cannot narrow a 0-dim tensor");
  const std::int64_t n = x.shape()[detail::normalize_dim("narrow", dim, x.dim())];
  const std::int64_t first = start < 0 ? start + n : start;
  if (first < 0 || first > n) {
    throw ValueError(fmt::format("narrow: start {} is out of range for dim {} of size {} (shape {}; "
                                 "valid: {} to {})", start, dim, n, x.shape(), -n, n));
  }
  if (length < 0 || length > n - first) {
    throw ValueError(fmt::format("narrow: start {} + length {} exceeds dim {} of size {} (shape {})",
                                 first, length, dim, n, x.shape()));
  }
  return slice(x, dim, first, first + length, 1);
}

Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index) {
  detail::check_defined("select", x);
  if (x.dim() == 0) throw ShapeError("select: cannot select from a 0-dim tensor");
  const std::size_t d = detail::normalize_dim("select", dim, x.dim());
  const std::int64_t n = x.shape()[d];
  if (index < -n || index >= n) {
    throw ValueError(fmt::format("select: index {} is out of range for dim {} of size {} (shape {})",
                                 index, dim, n, x.shape()));
  }
  const std::int64_t i = index < 0 ? index + n : index;
  Shape out;
  for (std::size_t k = 0; k < x.dim(); ++k) {
    if (k != d) out.push_back(x.shape()[k]);
  }
  return reshape(slice(x, dim, i, i + 1, 1), out);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& split_sizes,
                          std::int64_t dim) {
  detail::check_defined("split", x);
  if (x.dim() == 0) throw ShapeError("split: cannot split a 0-dim tensor");
  const std::int64_t n = x.shape()[detail::normalize_dim("split", dim, x.dim())];
  std::int64_t total = 0;
  for (std::int64_t s : split_sizes) {
    if (s < 0) throw ValueError(fmt::format("split: sizes must be >= 0, got [{}]", fmt::join(split_sizes, ", ")));
    total += s;
  }
  if (total != n) {
    throw ValueError(fmt::format("split: sizes [{}] add up to {}, but dim {} of {} has size {}",
                                 fmt::join(split_sizes, ", "), total, dim, x.shape(), n));
  }
  std::vector<Tensor> parts;
  std::int64_t offset = 0;
  for (std::int64_t s : split_sizes) {
    parts.push_back(narrow(x, dim, offset, s));
    offset += s;
  }
  return parts;
}

std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim) {
  detail::check_defined("split", x);
  if (x.dim() == 0) throw ShapeError("split: cannot split a 0-dim tensor");
  const std::int64_t n = x.shape()[detail::normalize_dim("split", dim, x.dim())];
  if (split_size < 0 || (split_size == 0 && n != 0)) {
    throw ValueError(fmt::format("split: split_size must be positive (0 only for an empty dim), "
                                 "got {} for dim {} of size {} (shape {})", split_size, dim, n, x.shape()));
  }
  // PyTorch: ceil(n / split_size) parts, the last one shorter; an empty dim gives one part.
  std::vector<std::int64_t> sizes;
  for (std::int64_t offset = 0; offset < n; offset += split_size) sizes.push_back(std::min(split_size, n - offset));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim) {
  detail::check_defined("chunk", x);
  if (x.dim() == 0) throw ShapeError("chunk: cannot chunk a 0-dim tensor");
  if (chunks <= 0) throw ValueError(fmt::format("chunk: chunks must be positive, got {}", chunks));
  const std::int64_t n = x.shape()[detail::normalize_dim("chunk", dim, x.dim())];
  // PyTorch splits into parts of ceil(n / chunks), so there may be fewer than `chunks` parts;
  // an empty dim gives exactly `chunks` empty parts.
  if (n == 0) return split(x, std::vector<std::int64_t>(static_cast<std::size_t>(chunks), 0), dim);
  return split(x, (n + chunks - 1) / chunks, dim);
}

std::vector<Tensor> unbind(const Tensor& x, std::int64_t dim) {
  detail::check_defined("unbind", x);
  if (x.dim() == 0) throw ShapeError("unbind: cannot unbind a 0-dim tensor");
  const std::int64_t n = x.shape()[detail::normalize_dim("unbind", dim, x.dim())];
  std::vector<Tensor> parts;
  for (std::int64_t i = 0; i < n; ++i) parts.push_back(select(x, dim, i));
  return parts;
}

TAPEGRAD_BUILTIN_OPS(slice, Slice, SliceBackward)

}  // namespace tapegrad
