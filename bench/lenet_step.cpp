// One LeNet-5 training step at batch 64, 28x28: conv 5x5 1->6 pad 2, relu, maxpool 2,
// conv 5x5 6->16, relu, maxpool 2, linear 400->120->84->10, cross-entropy, SGD with
// momentum 0.9 — written with the functional API so it does not depend on nn/.
#include <omp.h>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;

int main() {
  tg::manual_seed(0);
  auto param = [](const tg::Shape& s, double fan_in) {
    return tg::uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).set_requires_grad(true);
  };
  std::vector<tg::Tensor> p{param({6, 1, 5, 5}, 25),   param({6}, 25),   param({16, 6, 5, 5}, 150),
                            param({16}, 150),          param({120, 400}, 400), param({120}, 400),
                            param({84, 120}, 120),     param({84}, 120), param({10, 84}, 84),
                            param({10}, 84)};
  std::vector<tg::Tensor> velocity;
  for (const auto& t : p) velocity.push_back(tg::zeros_like(t));
  const tg::Tensor x = tg::randn({64, 1, 28, 28});
  const tg::Tensor y = tg::randint(0, 10, {64});
  auto step = [&] {
    tg::Tensor h = tg::max_pool2d(tg::relu(tg::conv2d(x, p[0], p[1], {.padding = {2, 2}})));
    h = tg::max_pool2d(tg::relu(tg::conv2d(h, p[2], p[3])));
    h = tg::relu(tg::linear(tg::flatten(h, 1), p[4], p[5]));
    h = tg::relu(tg::linear(h, p[6], p[7]));
    tg::Tensor loss = tg::cross_entropy(tg::linear(h, p[8], p[9]), y);
    loss.backward();
    tg::NoGradGuard no_grad;
    for (std::size_t i = 0; i < p.size(); ++i) {
      velocity[i].mul_(0.9).add_(p[i].grad());
      p[i].add_(velocity[i], -0.01);
      p[i].zero_grad();
    }
  };
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    const auto s = bench::measure(step, 50);
    bench::print("tapegrad", "lenet_step_b64", threads, s);
  }
}
