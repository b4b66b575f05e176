// Ops that move or mask elements without changing the shape: flip, roll, tril, triu.
//   flip: out[..., i, ...] = x[..., n-1-i, ...] on each flipped dim
//   roll: out[..., i, ...] = x[..., (i - shift) mod n, ...]
// flip and roll are axis maps (ops/detail/axis_map.hpp): their VJPs (flip_backward,
// roll_backward) send each gradient back to the position it came from.
//   tril: out[..., i, j] = x[..., i, j] if j - i <= diagonal else 0   (triu: j - i >= diagonal)
// A mask is its own adjoint, so tril's VJP is tril of grad_out (and triu's is triu).
#include <algorithm>

#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AxisCase;
using detail::AxisMaps;

struct FlipKind {
  static constexpr std::string_view name = "flip";
  static constexpr std::string_view backward_name = "flip_backward";
  static constexpr bool indexed = false;
  std::vector<std::int64_t> dims;
  std::string attributes() const { return fmt::format("dims=[{}]", fmt::join(dims, ", ")); }
  AxisMaps maps(const Shape& in, const Tensor&) const {
    AxisMaps m = detail::identity_maps(in);
    std::vector<bool> seen(std::max<std::size_t>(in.size(), 1), false);
    for (std::int64_t dim : dims) {
      const std::size_t d = detail::normalize_dim(name, dim, in.size());
      if (seen[d]) throw ValueError(fmt::format("flip: dim {} repeats in [{}]", dim, fmt::join(dims, ", ")));
      seen[d] = true;
      if (!in.empty()) std::reverse(m.src[d].begin(), m.src[d].end());
    }
    return m;
  }
  FlipKind backward() const { return *this; }
  static std::vector<AxisCase<FlipKind>> cases() {
    return {{"[3, 4, 2] dims [0, -1]", {{0, -1}}, {3, 4, 2}}, {"[5] dims [0]", {{0}}, {5}}};
  }
};

struct RollKind {
  static constexpr std::string_view name = "roll";
  static constexpr std::string_view backward_name = "roll_backward";
  static constexpr bool indexed = false;
  std::vector<std::int64_t> shifts, dims;  // one shift per dim
  std::string attributes() const {
    return fmt::format("shifts=[{}], dims=[{}]", fmt::join(shifts, ", "), fmt::join(dims, ", "));
  }
  AxisMaps maps(const Shape& in, const Tensor&) const {
    if (shifts.size() != dims.size()) {
      throw ValueError(fmt::format("roll: {} shifts for {} dims; they must pair up (shifts [{}], "
                                   "dims [{}])", shifts.size(), dims.size(), fmt::join(shifts, ", "),
                                   fmt::join(dims, ", ")));
    }
    AxisMaps m = detail::identity_maps(in);
    for (std::size_t k = 0; k < dims.size(); ++k) {
      const std::size_t d = detail::normalize_dim(name, dims[k], in.size());
      if (in.empty() || in[d] == 0) continue;
      // Rolling the same dim twice adds the shifts (PyTorch rolls one dim after the other).
      const std::int64_t n = in[d];
      const std::int64_t shift = shifts[k] % n;
      std::vector<std::int64_t> rolled(m.src[d].size());
      for (std::int64_t i = 0; i < n; ++i) {
        rolled[static_cast<std::size_t>(i)] = m.src[d][static_cast<std::size_t>(((i - shift) % n + n) % n)];
      }
      m.src[d] = std::move(rolled);
    }
    return m;
  }
  RollKind backward() const { return *this; }
  static std::vector<AxisCase<RollKind>> cases() {
    return {{"[3, 4] shifts [1, -5] dims [0, 1]", {{1, -5}, {0, 1}}, {3, 4}},
            {"[2, 5] shift 7 dim -1", {{7}, {-1}}, {2, 5}}};
  }
};

using Flip = detail::AxisGather<FlipKind>;
using FlipBackward = detail::AxisScatter<FlipKind>;
using Roll = detail::AxisGather<RollKind>;
using RollBackward = detail::AxisScatter<RollKind>;

template <bool Upper>
struct Triangle {
  static constexpr std::string_view name = Upper ? "triu" : "tril";
  std::int64_t diagonal = 0;
  std::string attributes() const { return fmt::format("diagonal={}", diagonal); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_defined(name, in[0]);
    if (in[0].dim() < 2) {
      throw ShapeError(fmt::format("{}: input must have at least 2 dims, got {}", name, in[0].shape()));
    }
    return in[0].meta();
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    Tensor out = detail::make_tensor(x.meta());
    const std::int64_t rows = x.shape()[x.dim() - 2], cols = x.shape()[x.dim() - 1];
    const std::int64_t matrices = rows * cols == 0 ? 0 : x.numel() / (rows * cols);
    detail::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      for (std::int64_t b = 0; b < matrices; ++b) {
        for (std::int64_t i = 0; i < rows; ++i) {
          for (std::int64_t j = 0; j < cols; ++j) {
            const std::int64_t at = (b * rows + i) * cols + j;
            const bool keep = Upper ? j - i >= diagonal : j - i <= diagonal;
            po[at] = keep ? px[at] : T(0);
          }
        }
      }
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) {
    return {Upper ? triu(grad_out, diagonal) : tril(grad_out, diagonal)};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    return {{"[3, 4] diagonal 0", {sample_tensor({3, 4}, -1, 1, Upper ? 91 : 95)},
             [](const auto& in) { return Upper ? triu(in[0]) : tril(in[0]); }},
            {"[2, 4, 3] diagonal -1", {sample_tensor({2, 4, 3}, -1, 1, Upper ? 92 : 96)},
             [](const auto& in) { return Upper ? triu(in[0], -1) : tril(in[0], -1); }}};
  }
};

}  // namespace

Tensor flip(const Tensor& x, const std::vector<std::int64_t>& dims) {
  return apply(Flip{{dims}}, {x});
}

Tensor roll(const Tensor& x, const std::vector<std::int64_t>& shifts,
            const std::vector<std::int64_t>& dims) {
  detail::check_defined("roll", x);
  if (dims.empty()) {
    // PyTorch: with no dims, roll the flattened tensor by its single shift.
    if (shifts.size() != 1) {
      throw ValueError(fmt::format("roll: without dims, one shift is expected, got [{}]",
                                   fmt::join(shifts, ", ")));
    }
    return reshape(apply(Roll{{shifts, {0}}}, {reshape(x, {-1})}), x.shape());
  }
  return apply(Roll{{shifts, dims}}, {x});
}

Tensor tril(const Tensor& x, std::int64_t diagonal) { return apply(Triangle<false>{diagonal}, {x}); }
Tensor triu(const Tensor& x, std::int64_t diagonal) { return apply(Triangle<true>{diagonal}, {x}); }

TAPEGRAD_BUILTIN_OPS(reorder, Flip, FlipBackward, Roll, RollBackward, Triangle<false>, Triangle<true>)

}  // namespace tapegrad
