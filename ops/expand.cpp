// Ops that add, drop or repeat dims: unsqueeze and squeeze (reshapes, sharing storage),
// expand / broadcast_to and repeat (copies: tensors are always contiguous).
//   expand: out[..., i, ...] = x[..., i or 0 where x's dim is 1, ...]
//   repeat: out[..., i, ...] = x[..., i mod size, ...]
// Both are axis maps (ops/detail/axis_map.hpp) on x first reshaped to the output's rank with
// leading 1s, so their VJPs (expand_backward, repeat_backward) sum grad_out over every copy.
#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AxisCase;
using detail::AxisMaps;

/// x viewed with leading dims of size 1 up to `rank` (the rank check is the caller's).
Tensor with_leading_ones(const Tensor& x, std::size_t rank) {
  if (x.dim() == rank) return x;
  Shape padded;
  for (std::size_t d = x.dim(); d < rank; ++d) padded.push_back(1);
  for (std::int64_t s : x.shape()) padded.push_back(s);
  return reshape(x, padded);
}

struct ExpandKind {
  static constexpr std::string_view name = "expand";
  static constexpr std::string_view backward_name = "expand_backward";
  static constexpr bool indexed = false;
  Shape sizes;  // the output's shape, of the input's rank
  std::string attributes() const { return fmt::format("sizes={}", sizes); }
  AxisMaps maps(const Shape& in, const Tensor&) const {
    if (in.size() != sizes.size()) {
      throw ShapeError(fmt::format("expand: input {} and sizes {} differ in rank", in, sizes));
    }
    AxisMaps m = detail::identity_maps(in);
    m.out = sizes;
    for (std::size_t d = 0; d < in.size(); ++d) {
      if (in[d] == sizes[d]) continue;
      if (in[d] != 1) {
        throw ShapeError(fmt::format("expand: the size {} of dim {} of {} must match {} or be 1",
                                     in[d], d, in, sizes));
      }
      m.src[d].assign(static_cast<std::size_t>(sizes[d]), 0);
    }
    return m;
  }
  ExpandKind backward() const { return *this; }
  static std::vector<AxisCase<ExpandKind>> cases() {
    return {{"[3, 1] as [1, 3, 1] -> [2, 3, 4]", {{2, 3, 4}}, {1, 3, 1}},
            {"[1, 1] -> [0, 5] (empty)", {{0, 5}}, {1, 1}}};
  }
};

struct RepeatKind {
  static constexpr std::string_view name = "repeat";
  static constexpr std::string_view backward_name = "repeat_backward";
  static constexpr bool indexed = false;
  std::vector<std::int64_t> repeats;  // of the input's rank
  std::string attributes() const { return fmt::format("repeats=[{}]", fmt::join(repeats, ", ")); }
  AxisMaps maps(const Shape& in, const Tensor&) const {
    if (in.size() != repeats.size()) {
      throw ShapeError(fmt::format("repeat: input {} and repeats [{}] differ in rank", in,
                                   fmt::join(repeats, ", ")));
    }
    AxisMaps m = detail::identity_maps(in);
    for (std::size_t d = 0; d < in.size(); ++d) {
      if (repeats[d] < 0) {
        throw ValueError(fmt::format("repeat: repeats must be >= 0, got [{}]", fmt::join(repeats, ", ")));
      }
      m.out[d] = in[d] * repeats[d];
      m.src[d].resize(static_cast<std::size_t>(m.out[d]));
      for (std::int64_t i = 0; i < m.out[d]; ++i) m.src[d][static_cast<std::size_t>(i)] = i % in[d];
    }
    return m;
  }
  RepeatKind backward() const { return *this; }
  static std::vector<AxisCase<RepeatKind>> cases() {
    return {{"[2, 3] by [2, 3]", {{2, 3}}, {2, 3}},
            {"[3] as [1, 1, 3] by [2, 1, 2]", {{2, 1, 2}}, {1, 1, 3}}};
  }
};

using Expand = detail::AxisGather<ExpandKind>;
using ExpandBackward = detail::AxisScatter<ExpandKind>;
using Repeat = detail::AxisGather<RepeatKind>;
using RepeatBackward = detail::AxisScatter<RepeatKind>;

}  // namespace

namespace {

/// The shape x expands to (sizes with -1 resolved), checked with errors naming `op`, the
/// function the user called.
Shape expanded_shape(std::string_view op, const Tensor& x, const Shape& sizes) {
  detail::check_defined(op, x);
  if (sizes.size() < x.dim()) {
    throw ShapeError(fmt::format("{}: sizes {} have fewer dims than the input {}", op, sizes, x.shape()));
  }
  const std::size_t lead = sizes.size() - x.dim();
  Shape target = sizes;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == -1 && d >= lead) target[d] = x.shape()[d - lead];
    else if (sizes[d] < 0) {
      throw ValueError(fmt::format("{}: size {} of dim {} in {} is not allowed{}", op, sizes[d], d,
                                   sizes, d < lead ? " (-1 cannot be a new leading dim)" : ""));
    }
    if (d >= lead && x.shape()[d - lead] != target[d] && x.shape()[d - lead] != 1) {
      throw ShapeError(fmt::format("{}: the size {} of dim {} of the input {} must match {} or be 1",
                                   op, x.shape()[d - lead], d - lead, x.shape(), sizes));
    }
  }
  return target;
}

}  // namespace

Tensor expand(const Tensor& x, const Shape& sizes) {
  const Shape target = expanded_shape("expand", x, sizes);
  return apply(Expand{{target}}, {with_leading_ones(x, sizes.size())});
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  const Shape target = expanded_shape("broadcast_to", x, shape);
  return apply(Expand{{target}}, {with_leading_ones(x, shape.size())});
}

Tensor repeat(const Tensor& x, const std::vector<std::int64_t>& repeats) {
  detail::check_defined("repeat", x);
  if (repeats.size() < x.dim()) {
    throw ShapeError(fmt::format("repeat: repeats [{}] have fewer dims than the input {}",
                                 fmt::join(repeats, ", "), x.shape()));
  }
  return apply(Repeat{{repeats}}, {with_leading_ones(x, repeats.size())});
}

Tensor unsqueeze(const Tensor& x, std::int64_t dim) {
  detail::check_defined("unsqueeze", x);
  const std::size_t d = detail::normalize_dim("unsqueeze", dim, x.dim() + 1);
  Shape out;
  for (std::size_t k = 0; k <= x.dim(); ++k) {
    if (k == d) out.push_back(1);
    if (k < x.dim()) out.push_back(x.shape()[k]);
  }
  return reshape(x, out);
}

Tensor squeeze(const Tensor& x) {
  detail::check_defined("squeeze", x);
  Shape out;
  for (std::int64_t s : x.shape()) {
    if (s != 1) out.push_back(s);
  }
  return reshape(x, out);
}

Tensor squeeze(const Tensor& x, std::int64_t dim) {
  detail::check_defined("squeeze", x);
  const std::size_t d = detail::normalize_dim("squeeze", dim, x.dim());
  Shape out;
  for (std::size_t k = 0; k < x.dim(); ++k) {
    if (k != d || x.shape()[k] != 1) out.push_back(x.shape()[k]);
  }
  return reshape(x, out);
}

TAPEGRAD_BUILTIN_OPS(expand, Expand, ExpandBackward, Repeat, RepeatBackward)

}  // namespace tapegrad
