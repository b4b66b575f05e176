#pragma once
// Ops with a planted bug, for tests that the checkers catch it. Header-only.
#include <span>
#include <string_view>
#include <vector>

#include <tapegrad/tapegrad.hpp>

namespace tapegrad::testing {

/// y = x·x whose VJP, 2·x·g, reads x detached: right to first order, but its gradient
/// forgets that it depends on x, so the second derivative through it is silently 0
/// instead of 2·g.
struct ForgetfulSquare {
  static constexpr std::string_view name = "forgetful_square";
  TensorMeta infer(std::span<const Tensor> in) const { return in[0].meta(); }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[0]);
    return in[0] * in[0];
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& g) {
    return {g * ctx.saved(0).detach() * 2.0};
  }
};

}  // namespace tapegrad::testing
