// libtorch's twin of conv_pool.cpp: the same rows, timed the same way, so bench/run.sh can
// print the ratio measured in one run. Built only when Debian's libtorch-dev is installed;
// tapegrad itself never links libtorch.
#include <torch/torch.h>

#include "conv_pool_cases.hpp"
#include "harness.hpp"

namespace F = torch::nn::functional;

int main() {
  torch::manual_seed(0);
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    for (const auto& c : bench::kConvCases) {
      if (!bench::wanted(c.name)) continue;
      auto x = torch::randn({c.n, c.c, c.h, c.w});
      auto w = torch::randn({c.o, c.c / c.groups, c.k, c.k});
      auto b = torch::randn({c.o});
      const auto opt = F::Conv2dFuncOptions().bias(b).stride(c.stride).padding(c.pad).groups(c.groups);
      const double gflop = bench::conv_flops(c) * 1e-9;
      auto fwd = bench::measure([&] { torch::NoGradGuard g; (void)F::conv2d(x, w, opt); });
      bench::print("libtorch", std::string(c.name) + ".fwd", threads, fwd,
                   "\"gflops\":" + std::to_string(gflop / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      const auto opt_grad = F::Conv2dFuncOptions().bias(b).stride(c.stride).padding(c.pad).groups(c.groups);
      auto seed = torch::randn(F::conv2d(x, w, opt_grad).sizes());
      auto both = bench::measure([&] { F::conv2d(x, w, opt_grad).backward(seed); });
      bench::print("libtorch", std::string(c.name) + ".fwd_bwd", threads, both,
                   "\"gflops\":" + std::to_string(3 * gflop / both.median_ms * 1e3));
    }
    for (const auto& c : bench::kConvTransposeCases) {
      if (!bench::wanted(c.name)) continue;
      auto x = torch::randn({c.n, c.c, c.h, c.w});
      auto w = torch::randn({c.c, c.o, c.k, c.k});
      auto b = torch::randn({c.o});
      const auto opt = F::ConvTranspose2dFuncOptions().bias(b).stride(c.stride).padding(c.pad);
      const double gflop = bench::conv_transpose_flops(c) * 1e-9;
      auto fwd = bench::measure([&] { torch::NoGradGuard g; (void)F::conv_transpose2d(x, w, opt); });
      bench::print("libtorch", std::string(c.name) + ".fwd", threads, fwd,
                   "\"gflops\":" + std::to_string(gflop / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      const auto opt_grad = F::ConvTranspose2dFuncOptions().bias(b).stride(c.stride).padding(c.pad);
      auto seed = torch::randn({c.n, c.o, c.out(c.h), c.out(c.w)});
      auto both = bench::measure([&] { F::conv_transpose2d(x, w, opt_grad).backward(seed); });
      bench::print("libtorch", std::string(c.name) + ".fwd_bwd", threads, both,
                   "\"gflops\":" + std::to_string(3 * gflop / both.median_ms * 1e3));
    }
    for (const auto& p : bench::kPoolCases) {
      if (!bench::wanted(p.name)) continue;
      auto x = torch::randn({p.n, p.c, p.h, p.w});
      const auto opt = F::MaxPool2dFuncOptions(p.k).stride(p.stride).padding(p.pad);
      const double gb = static_cast<double>(x.numel()) * 4e-9;
      auto fwd = bench::measure([&] { torch::NoGradGuard g; (void)F::max_pool2d(x, opt); });
      bench::print("libtorch", std::string(p.name) + ".fwd", threads, fwd,
                   "\"gbps\":" + std::to_string(gb / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      auto seed = torch::randn(F::max_pool2d(x, opt).sizes());
      auto both = bench::measure([&] { F::max_pool2d(x, opt).backward(seed); });
      bench::print("libtorch", std::string(p.name) + ".fwd_bwd", threads, both,
                   "\"gbps\":" + std::to_string(2 * gb / both.median_ms * 1e3));
    }
  }
}
