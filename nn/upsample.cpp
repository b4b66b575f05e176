// Upsample and its two fixed-mode forms: modules without parameters over tapegrad::interpolate.
#include <fmt/format.h>

#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"

namespace tapegrad::nn {

Upsample::Upsample(const InterpolateOptions& options) : options_(options) {
  if (options.size.empty() == options.scale_factor.empty()) {
    throw ValueError(fmt::format("Upsample: give exactly one of size and scale_factor, got {}",
                                 options.size.empty() ? "neither" : "both"));
  }
}

Tensor Upsample::forward(const Tensor& x) { return tapegrad::interpolate(x, options_); }

UpsamplingNearest2d::UpsamplingNearest2d(std::vector<std::int64_t> size, std::vector<double> scale_factor)
    : Upsample({.size = std::move(size), .scale_factor = std::move(scale_factor), .mode = InterpolateMode::nearest}) {}

UpsamplingBilinear2d::UpsamplingBilinear2d(std::vector<std::int64_t> size, std::vector<double> scale_factor)
    : Upsample({.size = std::move(size),
                .scale_factor = std::move(scale_factor),
                .mode = InterpolateMode::bilinear,
                .align_corners = true}) {}

std::shared_ptr<Upsample> upsample(const InterpolateOptions& options) { return std::make_shared<Upsample>(options); }

}  // namespace tapegrad::nn
