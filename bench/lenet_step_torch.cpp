// libtorch's twin of lenet_step.cpp.
#include <torch/torch.h>

#include "harness.hpp"

namespace F = torch::nn::functional;

int main() {
  torch::manual_seed(0);
  auto param = [](std::vector<int64_t> s, double fan_in) {
    return (torch::rand(s) * 2 - 1).div(std::sqrt(fan_in)).set_requires_grad(true);
  };
  std::vector<torch::Tensor> p{param({6, 1, 5, 5}, 25),   param({6}, 25),   param({16, 6, 5, 5}, 150),
                               param({16}, 150),          param({120, 400}, 400), param({120}, 400),
                               param({84, 120}, 120),     param({84}, 120), param({10, 84}, 84),
                               param({10}, 84)};
  torch::optim::SGD opt(p, torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto x = torch::randn({64, 1, 28, 28});
  const auto y = torch::randint(0, 10, {64});
  auto step = [&] {
    opt.zero_grad();
    auto h = F::max_pool2d(torch::relu(F::conv2d(x, p[0], F::Conv2dFuncOptions().bias(p[1]).padding(2))), F::MaxPool2dFuncOptions(2));
    h = F::max_pool2d(torch::relu(F::conv2d(h, p[2], F::Conv2dFuncOptions().bias(p[3]))), F::MaxPool2dFuncOptions(2));
    h = torch::relu(F::linear(h.flatten(1), p[4], p[5]));
    h = torch::relu(F::linear(h, p[6], p[7]));
    F::cross_entropy(F::linear(h, p[8], p[9]), y).backward();
    opt.step();
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    const auto s = bench::measure(step, 50);
    bench::print("libtorch", "lenet_step_b64", threads, s);
  }
}
