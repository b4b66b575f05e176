// Weight initialisers with PyTorch's formulas (torch.nn.init). They fill a tensor in place,
// without recording, from the global generator, so manual_seed makes them repeatable.
#include <cmath>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"

namespace tapegrad::nn {
namespace {

void check_target(const char* fn, const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype())) {
    throw ValueError(fmt::format("{}: expects a defined f32 or f64 tensor", fn));
  }
}

Tensor& fill_from(Tensor& t, const Tensor& values) {
  NoGradGuard no_grad;
  t.copy_(values);
  return t;
}

std::int64_t fan(const Tensor& t, FanMode mode) {
  const auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  return mode == FanMode::fan_in ? fan_in : fan_out;
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, double a) {
  switch (nonlinearity) {
    case Nonlinearity::linear:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: return std::sqrt(2.0 / (1.0 + a * a));
  }
  return 1.0;
}

std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t) {
  if (!t.defined() || t.dim() < 2) {
    throw ValueError(fmt::format("fan_in_and_fan_out: needs a tensor of rank >= 2 ([out, in, "
                                 "...]), got {}", t.defined() ? to_string(t.shape()) : "undefined"));
  }
  std::int64_t receptive = 1;
  for (std::size_t d = 2; d < t.dim(); ++d) receptive *= t.shape()[d];
  return {t.shape()[1] * receptive, t.shape()[0] * receptive};
}

Tensor& uniform_(Tensor& t, double low, double high) {
  check_target("uniform_", t);
  if (!(low <= high)) {
    throw ValueError(fmt::format("uniform_: needs low <= high, got low={} high={}", low, high));
  }
  return fill_from(t, uniform(t.shape(), low, high, t.dtype()));
}

Tensor& normal_(Tensor& t, double mean, double std) {
  check_target("normal_", t);
  if (!(std >= 0.0)) throw ValueError(fmt::format("normal_: std must be >= 0, got {}", std));
  NoGradGuard no_grad;
  return fill_from(t, randn(t.shape(), t.dtype()) * std + mean);
}

Tensor& constant_(Tensor& t, double value) {
  check_target("constant_", t);
  NoGradGuard no_grad;
  t.fill_(value);
  return t;
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.0); }

Tensor& kaiming_uniform_(Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity) {
  check_target("kaiming_uniform_", t);
  const double bound = calculate_gain(nonlinearity, a) *
                       std::sqrt(3.0 / static_cast<double>(fan(t, mode)));
  return uniform_(t, -bound, bound);
}

Tensor& kaiming_normal_(Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity) {
  check_target("kaiming_normal_", t);
  return normal_(t, 0.0,
                 calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan(t, mode))));
}

Tensor& xavier_uniform_(Tensor& t, double gain) {
  check_target("xavier_uniform_", t);
  const auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform_(t, -bound, bound);
}

Tensor& xavier_normal_(Tensor& t, double gain) {
  check_target("xavier_normal_", t);
  const auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)));
}

}  // namespace tapegrad::nn
