// libtorch's twin of resnet18.cpp: the same network, step and conv rows.
#include <torch/torch.h>

#include <string>

#include "harness.hpp"
#include "resnet18.hpp"

namespace nn = torch::nn;

namespace {

struct BasicBlockImpl : nn::Module {
  BasicBlockImpl(std::int64_t in, std::int64_t out, std::int64_t stride)
      : conv1(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)),
        bn1(out),
        conv2(nn::Conv2dOptions(out, out, 3).padding(1).bias(false)),
        bn2(out) {
    register_module("conv1", conv1);
    register_module("bn1", bn1);
    register_module("conv2", conv2);
    register_module("bn2", bn2);
    if (stride != 1 || in != out) {
      shortcut = register_module(
          "shortcut", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)),
                                     nn::BatchNorm2d(out)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto y = bn2(conv2(torch::relu(bn1(conv1(x)))));
    return torch::relu(y + (shortcut ? shortcut->forward(x) : x));
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(BasicBlock);

struct ResNet18Impl : nn::Module {
  ResNet18Impl() {
    stem = register_module("stem", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(3, 64, 3).padding(1).bias(false)),
                                                  nn::BatchNorm2d(64), nn::ReLU()));
    blocks = register_module("blocks", nn::Sequential());
    std::int64_t in = 64;
    for (std::int64_t stage = 0; stage < 4; ++stage) {
      const std::int64_t out = 64 << stage;
      blocks->push_back(BasicBlock(in, out, stage > 0 ? 2 : 1));
      blocks->push_back(BasicBlock(out, out, 1));
      in = out;
    }
    head = register_module("head", nn::Linear(512, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) { return head(blocks->forward(stem->forward(x)).mean({2, 3})); }
  nn::Sequential stem{nullptr}, blocks{nullptr};
  nn::Linear head{nullptr};
};
TORCH_MODULE(ResNet18);

}  // namespace

int main() {
  torch::manual_seed(0);
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    if (bench::wanted("resnet18_step")) {
      ResNet18 model;
      torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
      const auto x = torch::randn({bench::kResNetBatch, 3, 32, 32});
      const auto y = torch::randint(0, 10, {bench::kResNetBatch});
      const auto s = bench::measure(
          [&] {
            opt.zero_grad();
            torch::nn::functional::cross_entropy(model->forward(x), y).backward();
            opt.step();
          },
          10, 2, 0);
      bench::print("libtorch", "resnet18_step_b32", threads, s,
                   "\"peak_rss_mb\":" + std::to_string(bench::peak_rss_mb()));
    }
    for (const auto& [c, count] : bench::kResNetConvs) {
      if (!bench::wanted(c.name)) continue;
      auto x = torch::randn({bench::kResNetBatch, c.c, c.hw, c.hw});
      auto w = torch::randn({c.o, c.c, c.k, c.k});
      const auto opt = nn::functional::Conv2dFuncOptions().stride(c.stride).padding(c.pad);
      const auto fwd = bench::measure([&] {
        torch::NoGradGuard g;
        (void)nn::functional::conv2d(x, w, opt);
      });
      bench::print("libtorch", std::string(c.name) + ".fwd", threads, fwd);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      const auto seed = torch::randn({bench::kResNetBatch, c.o, bench::out_size(c), bench::out_size(c)});
      const auto both = bench::measure([&] { nn::functional::conv2d(x, w, opt).backward(seed); });
      bench::print("libtorch", std::string(c.name) + ".fwd_bwd", threads, both);
    }
  }
}
