// interpolate on a U-Net decoder shape: bilinear ×2 (align_corners false) and nearest ×2 of an
// f32 [32, 64, 56, 56] input, forward and forward+backward (a ones upstream gradient), at 1 and
// 2 threads. One JSON line per figure; interpolate_torch.cpp is the libtorch twin.
#include <omp.h>

#include <string>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;

int main() {
  tg::Tensor x = tg::randn({32, 64, 56, 56});
  constexpr int kReps = 10, kWarmup = 2;
  const struct {
    const char* name;
    tg::InterpolateOptions options;
  } cases[] = {
      {"interpolate.bilinear_x2", {.scale_factor = {2.0}, .mode = tg::InterpolateMode::bilinear, .align_corners = false}},
      {"interpolate.nearest_x2", {.scale_factor = {2.0}}},
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    for (const auto& c : cases) {
      const std::string name = c.name;
      if (!bench::wanted(name)) continue;
      x.set_requires_grad(false);
      auto fwd = bench::measure([&] { (void)tg::interpolate(x, c.options); }, kReps, kWarmup, 0.0);
      bench::print("tapegrad", name + ".fwd", threads, fwd);
      x.set_requires_grad(true);
      const tg::Tensor seed = tg::ones(tg::interpolate(x, c.options).shape());
      auto both = bench::measure([&] { tg::interpolate(x, c.options).backward(seed); }, kReps, kWarmup, 0.0);
      bench::print("tapegrad", name + ".fwd_bwd", threads, both);
    }
  }
}
