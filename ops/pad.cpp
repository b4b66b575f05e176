// pad, as torch.nn.functional.pad in PyTorch 1.13. `pad` lists (before, after) pairs for the
// last dim first, then the one before it, ... Along a padded dim of size n, output position i
// reads input position p = i - before, or, outside [0, n):
//   constant:  the fill value (negative pads crop)
//   reflect:   the mirror image without repeating the edge (-p, 2(n-1) - p); needs pad < n
//   replicate: the nearest edge element
//   circular:  p mod n; needs pad <= n. A negative pad crops first and the rest wraps around
//              what is left (PyTorch's _pad_circular), unlike reflect and replicate, which
//              reflect or repeat at the edges of the uncropped input.
// pad is an axis map (ops/detail/axis_map.hpp), so its VJP (pad_backward) adds each output
// gradient into the input element it read: the edge of a replicate pad collects many.
// PyTorch 1.13 allows the three non-constant modes only on 1, 2 or 3 trailing dims of inputs
// with one or two more dims (no batch / batch), and forbids a fill value with them.
#include <algorithm>

#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AxisCase;
using detail::AxisMaps;

std::string_view mode_name(PadMode mode) {
  switch (mode) {
    case PadMode::constant: return "constant";
    case PadMode::reflect: return "reflect";
    case PadMode::replicate: return "replicate";
    case PadMode::circular: return "circular";
  }
  return "?";
}

struct PadKind {
  static constexpr std::string_view name = "pad";
  static constexpr std::string_view backward_name = "pad_backward";
  static constexpr bool indexed = false;
  std::vector<std::int64_t> pad;
  PadMode mode = PadMode::constant;
  std::string attributes() const {
    return fmt::format("pad=[{}], mode={}", fmt::join(pad, ", "), mode_name(mode));
  }

  void check(const Shape& in) const {
    const auto pad_list = [&] { return fmt::format("[{}]", fmt::join(pad, ", ")); };
    if (pad.size() % 2 != 0) {
      throw ValueError(fmt::format("pad: the pad list {} must have an even length", pad_list()));
    }
    const std::size_t pairs = pad.size() / 2;
    if (pairs > in.size()) {
      throw ShapeError(fmt::format("pad: {} pads {} dims, but the input {} has {}", pad_list(),
                                   pairs, in, in.size()));
    }
    if (mode != PadMode::constant && !(pairs >= 1 && pairs <= 3 && (in.size() == pairs + 1 ||
                                                                    in.size() == pairs + 2))) {
      throw ShapeError(fmt::format("pad: {} padding of {} dims needs an input of rank {} or {} "
                                   "(PyTorch pads 1 to 3 trailing dims), got {} and pad {}",
                                   mode_name(mode), pairs, pairs + 1, pairs + 2, in, pad_list()));
    }
    for (std::size_t k = 0; k < pairs; ++k) {
      const std::size_t d = in.size() - 1 - k;
      const std::int64_t n = in[d], before = pad[2 * k], after = pad[2 * k + 1];
      if (n + before + after < 0) {
        throw ShapeError(fmt::format("pad: dim {} of size {} padded by {} and {} would have size {} "
                                     "(input {})", d, n, before, after, n + before + after, in));
      }
      if (mode == PadMode::constant) continue;
      if (n == 0) {
        throw ShapeError(fmt::format("pad: {} padding needs non-empty padded dims, dim {} of {} is "
                                     "empty", mode_name(mode), d, in));
      }
      const std::int64_t kept = n - std::max<std::int64_t>(-before, 0) - std::max<std::int64_t>(-after, 0);
      if (mode == PadMode::circular && kept <= 0 && n + before + after > 0) {
        throw ShapeError(fmt::format("pad: circular padding ({}, {}) crops dim {} of size {} to nothing "
                                     "and has nothing left to wrap around (input {})", before, after, d, n, in));
      }
      const std::int64_t limit = mode == PadMode::reflect ? n - 1 : mode == PadMode::circular ? n : -1;
      if (limit >= 0 && (before > limit || after > limit)) {
        throw ValueError(fmt::format("pad: {} padding ({}, {}) of dim {} must be at most {} for its "
                                     "size {} (input {})", mode_name(mode), before, after, d, limit, n, in));
      }
    }
  }

  /// The input position output position i reads along a dim of size n padded by before, after.
  std::int64_t source(std::int64_t i, std::int64_t n, std::int64_t before, std::int64_t after) const {
    const std::int64_t p = i - before;
    if (mode == PadMode::circular) {
      const std::int64_t first = std::max<std::int64_t>(-before, 0);
      const std::int64_t kept = n - first - std::max<std::int64_t>(-after, 0);
      const std::int64_t q = i - std::max<std::int64_t>(before, 0);
      return first + (q % kept + kept) % kept;
    }
    if (p >= 0 && p < n) return p;
    switch (mode) {
      case PadMode::reflect: return p < 0 ? -p : 2 * (n - 1) - p;
      case PadMode::replicate: return p < 0 ? 0 : n - 1;
      default: return -1;
    }
  }

  AxisMaps maps(const Shape& in, const Tensor&) const {
    check(in);
    AxisMaps m = detail::identity_maps(in);
    for (std::size_t k = 0; k < pad.size() / 2; ++k) {
      const std::size_t d = in.size() - 1 - k;
      const std::int64_t before = pad[2 * k], after = pad[2 * k + 1];
      m.out[d] = in[d] + before + after;
      m.src[d].resize(static_cast<std::size_t>(m.out[d]));
      for (std::int64_t i = 0; i < m.out[d]; ++i) {
        m.src[d][static_cast<std::size_t>(i)] = source(i, in[d], before, after);
      }
    }
    return m;
  }
  PadKind backward() const { return *this; }
  static std::vector<AxisCase<PadKind>> cases() {
    std::vector<AxisCase<PadKind>> out;
    const auto add = [&out](std::string label, std::vector<std::int64_t> widths, PadMode how,
                            const Shape& in, double fill) {
      out.push_back({std::move(label), PadKind{std::move(widths), how}, in, Tensor(), fill});
    };
    add("constant [2, 3, 4] pad [1, 2, -1, 1] value 0.5", {1, 2, -1, 1}, PadMode::constant, {2, 3, 4}, 0.5);
    add("reflect [2, 5] pad [3, -1]", {3, -1}, PadMode::reflect, {2, 5}, 0);
    add("replicate [1, 3, 4] pad [2, 1, 1, 3]", {2, 1, 1, 3}, PadMode::replicate, {1, 3, 4}, 0);
    add("circular [1, 2, 3, 2] pad [2, 1, 3, 0]", {2, 1, 3, 0}, PadMode::circular, {1, 2, 3, 2}, 0);
    add("circular [2, 4] pad [-1, 2] (crops, then wraps)", {-1, 2}, PadMode::circular, {2, 4}, 0);
    return out;
  }
};

using Pad = detail::AxisGather<PadKind>;
using PadBackward = detail::AxisScatter<PadKind>;

}  // namespace

Tensor pad(const Tensor& x, const std::vector<std::int64_t>& pad, PadMode mode, double value) {
  if (mode != PadMode::constant && value != 0.0) {
    throw ValueError(fmt::format("pad: mode {} takes no fill value, got value={}", mode_name(mode), value));
  }
  return apply(Pad{{pad, mode}, value}, {x});
}

TAPEGRAD_BUILTIN_OPS(pad, Pad, PadBackward)

}  // namespace tapegrad
