// libtorch's twin of tape.cpp.
#include <torch/torch.h>

#include "harness.hpp"

int main() {
  torch::set_num_threads(1);
  constexpr int kSteps = 1000;
  auto x0 = torch::ones({1}).set_requires_grad(true);
  auto chain = [&] {
    auto x = x0;
    for (int i = 0; i < kSteps; ++i) x = x * 1.0001 + 0.0001;
    return x;
  };
  const auto fwd = bench::measure([&] { (void)chain(); });
  const auto both = bench::measure([&] { chain().backward(); });
  const double ops = 2.0 * kSteps;
  bench::print("libtorch", "tape_chain_1000.fwd", 1, fwd,
               "\"us_per_op\":" + std::to_string(fwd.median_ms * 1e3 / ops));
  bench::print("libtorch", "tape_chain_1000.fwd_bwd", 1, both,
               "\"us_per_op\":" + std::to_string(both.median_ms * 1e3 / ops));
}
