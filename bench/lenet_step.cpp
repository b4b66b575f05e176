// One LeNet-5 training step at batch 64, 28x28: conv 5x5 1->6 pad 2, relu, maxpool 2,
// conv 5x5 6->16, relu, maxpool 2, linear 400->120->84->10, cross-entropy, SGD with
// momentum 0.9 — written with the functional API so it does not depend on nn/.
#include <omp.h>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"
#include "lenet.hpp"

namespace tg = tapegrad;

int main() {
  std::vector<tg::Tensor> p = bench::lenet_params();
  std::vector<tg::Tensor> velocity;
  const tg::Tensor x = tg::randn({64, 1, 28, 28});
  const tg::Tensor y = tg::randint(0, 10, {64});
  auto step = [&] {
    tg::cross_entropy(bench::lenet_logits(x, p), y).backward();
    bench::sgd_momentum(p, velocity);
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    const auto s = bench::measure(step, 50);
    bench::print("tapegrad", "lenet_step_b64", threads, s);
  }
}
