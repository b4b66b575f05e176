// libtorch's twin of norms.cpp.
#include <torch/torch.h>

#include <functional>
#include <string>

#include "harness.hpp"

namespace F = torch::nn::functional;

namespace {

void run(const std::string& name, int threads, torch::Tensor x, torch::Tensor w, torch::Tensor b,
         const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>& f) {
  if (!bench::wanted(name)) return;
  auto fwd = bench::measure([&] { torch::NoGradGuard g; (void)f(x, w, b); }, 10, 2, 0);
  bench::print("libtorch", name + ".fwd", threads, fwd);
  for (torch::Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const torch::Tensor seed = torch::randn(x.sizes());
  auto both = bench::measure([&] { f(x, w, b).backward(seed); }, 10, 2, 0);
  bench::print("libtorch", name + ".fwd_bwd", threads, both);
}

}  // namespace

int main() {
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    run("layer_norm_64x256x512", threads, torch::randn({64, 256, 512}), torch::randn({512}), torch::randn({512}),
        [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
          return F::layer_norm(x, F::LayerNormFuncOptions({512}).weight(w).bias(b));
        });
    run("group_norm_32x64x56x56_g32", threads, torch::randn({32, 64, 56, 56}), torch::randn({64}), torch::randn({64}),
        [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
          return F::group_norm(x, F::GroupNormFuncOptions(32).weight(w).bias(b));
        });
    const torch::Tensor mean = torch::zeros({64}), var = torch::ones({64});
    run("batch_norm2d_train_32x64x56x56", threads, torch::randn({32, 64, 56, 56}), torch::randn({64}), torch::randn({64}),
        [&](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
          return F::batch_norm(x, mean, var, F::BatchNormFuncOptions().weight(w).bias(b).training(true));
        });
  }
}
