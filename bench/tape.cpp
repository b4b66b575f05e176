// The cost of recording and backpropagating: a chain of 1000 ops x = x * 1.0001 + 0.0001
// on a 1-element tensor (2000 recorded ops), forward and backward, reported per op.
#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;

int main() {
  constexpr int kSteps = 1000;
  tg::Tensor x0 = tg::ones({1}).set_requires_grad(true);
  auto chain = [&] {
    tg::Tensor x = x0;
    for (int i = 0; i < kSteps; ++i) x = x * 1.0001 + 0.0001;
    return x;
  };
  const auto fwd = bench::measure([&] { (void)chain(); });
  const auto both = bench::measure([&] { chain().backward(); });
  const double ops = 2.0 * kSteps;
  bench::print("tapegrad", "tape_chain_1000.fwd", 1, fwd,
               "\"us_per_op\":" + std::to_string(fwd.median_ms * 1e3 / ops));
  bench::print("tapegrad", "tape_chain_1000.fwd_bwd", 1, both,
               "\"us_per_op\":" + std::to_string(both.median_ms * 1e3 / ops));
}
