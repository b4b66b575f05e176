// tapegrad's fused normalisations (issue 15; batch norm for issue 17), f32, forward and
// forward+backward (a randn upstream gradient; x, weight and bias need gradients), at 1 and
// 2 threads: layer_norm over the last dim of [64, 256, 512], group_norm with 32 groups and
// batch_norm2d in training mode on a ResNet activation [32, 64, 56, 56]. norms_torch.cpp is
// the libtorch twin. BENCH_FILTER picks rows, BENCH_THREADS=1 (or 2) one thread count.
#include <omp.h>

#include <functional>
#include <string>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;

namespace {

void run(const std::string& name, int threads, tg::Tensor x, tg::Tensor w, tg::Tensor b,
         const std::function<tg::Tensor(const tg::Tensor&, const tg::Tensor&, const tg::Tensor&)>& f) {
  if (!bench::wanted(name)) return;
  auto fwd = bench::measure([&] { tg::NoGradGuard g; (void)f(x, w, b); }, 10, 2, 0);
  bench::print("tapegrad", name + ".fwd", threads, fwd);
  for (tg::Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const tg::Tensor seed = tg::randn(x.shape());
  auto both = bench::measure([&] { f(x, w, b).backward(seed); }, 10, 2, 0);
  bench::print("tapegrad", name + ".fwd_bwd", threads, both);
}

}  // namespace

int main() {
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    run("layer_norm_64x256x512", threads, tg::randn({64, 256, 512}), tg::randn({512}), tg::randn({512}),
        [](const tg::Tensor& x, const tg::Tensor& w, const tg::Tensor& b) { return tg::layer_norm(x, {512}, w, b); });
    run("group_norm_32x64x56x56_g32", threads, tg::randn({32, 64, 56, 56}), tg::randn({64}), tg::randn({64}),
        [](const tg::Tensor& x, const tg::Tensor& w, const tg::Tensor& b) { return tg::group_norm(x, 32, w, b); });
    const tg::Tensor mean = tg::zeros({64}), var = tg::ones({64});
    run("batch_norm2d_train_32x64x56x56", threads, tg::randn({32, 64, 56, 56}), tg::randn({64}), tg::randn({64}),
        [&](const tg::Tensor& x, const tg::Tensor& w, const tg::Tensor& b) {
          return tg::batch_norm2d(x, mean, var, w, b, true);
        });
  }
}
