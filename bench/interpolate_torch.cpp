// libtorch's twin of interpolate.cpp: the same rows, shapes and timing, so bench/run.sh can
// print the ratio measured in one run. Built only when Debian's libtorch-dev is installed.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "harness.hpp"

namespace F = torch::nn::functional;

int main() {
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({32, 64, 56, 56});
  constexpr int kReps = 10, kWarmup = 2;
  const struct {
    const char* name;
    F::InterpolateFuncOptions options;
  } cases[] = {
      {"interpolate.bilinear_x2",
       F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kBilinear).align_corners(false)},
      {"interpolate.nearest_x2", F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)},
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    for (const auto& c : cases) {
      const std::string name = c.name;
      if (!bench::wanted(name)) continue;
      x.set_requires_grad(false);
      auto fwd = bench::measure([&] { (void)F::interpolate(x, c.options); }, kReps, kWarmup, 0.0);
      bench::print("libtorch", name + ".fwd", threads, fwd);
      x.set_requires_grad(true);
      const auto seed = torch::ones(F::interpolate(x, c.options).sizes());
      auto both = bench::measure([&] { F::interpolate(x, c.options).backward(seed); }, kReps, kWarmup, 0.0);
      bench::print("libtorch", name + ".fwd_bwd", threads, both);
    }
  }
}
