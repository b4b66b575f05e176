#pragma once
// LeNet-5 as the tapegrad LeNet benchmarks build it (their libtorch twins mirror it): the
// parameters, uniform ±1/√fan_in from the global generator (seed 0), the logits, and the
// SGD-with-momentum update (lr 0.01, momentum 0.9).
#include <cmath>
#include <vector>

#include <tapegrad/tapegrad.hpp>

namespace bench {

namespace tg = tapegrad;

inline std::vector<tg::Tensor> lenet_params() {
  tg::manual_seed(0);
  auto param = [](const tg::Shape& s, double fan_in) {
    return tg::uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).set_requires_grad(true);
  };
  return {param({6, 1, 5, 5}, 25),   param({6}, 25),   param({16, 6, 5, 5}, 150),
          param({16}, 150),          param({120, 400}, 400), param({120}, 400),
          param({84, 120}, 120),     param({84}, 120), param({10, 84}, 84),
          param({10}, 84)};
}

/// Logits [N, 10] for x [N, 1, 28, 28].
inline tg::Tensor lenet_logits(const tg::Tensor& x, const std::vector<tg::Tensor>& p) {
  tg::Tensor h = tg::max_pool2d(tg::relu(tg::conv2d(x, p[0], p[1], {.padding = {2, 2}})));
  h = tg::max_pool2d(tg::relu(tg::conv2d(h, p[2], p[3])));
  h = tg::relu(tg::linear(tg::flatten(h, 1), p[4], p[5]));
  h = tg::relu(tg::linear(h, p[6], p[7]));
  return tg::linear(h, p[8], p[9]);
}

/// One SGD step with momentum from the parameters' gradients, which it then zeroes.
inline void sgd_momentum(std::vector<tg::Tensor>& p, std::vector<tg::Tensor>& velocity) {
  tg::NoGradGuard no_grad;
  if (velocity.empty()) {
    for (const auto& t : p) velocity.push_back(tg::zeros_like(t));
  }
  for (std::size_t i = 0; i < p.size(); ++i) {
    velocity[i].mul_(0.9).add_(p[i].grad());
    p[i].add_(velocity[i], -0.01);
    p[i].zero_grad();
  }
}

}  // namespace bench
