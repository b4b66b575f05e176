// tapegrad's conv2d, conv_transpose2d and max_pool2d, forward and forward+backward, at 1 and 2 threads.
// Prints one JSON line per figure (see bench/README.md); bench/run.sh adds libtorch's.
#include <omp.h>

#include <tapegrad/tapegrad.hpp>

#include "conv_pool_cases.hpp"
#include "harness.hpp"

namespace tg = tapegrad;

int main() {
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    for (const auto& c : bench::kConvCases) {
      if (!bench::wanted(c.name)) continue;
      tg::Tensor x = tg::randn({c.n, c.c, c.h, c.w});
      tg::Tensor w = tg::randn({c.o, c.c / c.groups, c.k, c.k});
      tg::Tensor b = tg::randn({c.o});
      const tg::Conv2dOptions opt{.stride = {c.stride, c.stride}, .padding = {c.pad, c.pad}, .groups = c.groups};
      const double gflop = bench::conv_flops(c) * 1e-9;
      auto fwd = bench::measure([&] { tg::NoGradGuard g; (void)tg::conv2d(x, w, b, opt); });
      bench::print("tapegrad", std::string(c.name) + ".fwd", threads, fwd,
                   "\"gflops\":" + std::to_string(gflop / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      tg::Tensor seed = tg::randn({c.n, c.o, (c.h + 2 * c.pad - c.k) / c.stride + 1, (c.w + 2 * c.pad - c.k) / c.stride + 1});
      auto both = bench::measure([&] {
        tg::conv2d(x, w, b, opt).backward(seed);
      });
      bench::print("tapegrad", std::string(c.name) + ".fwd_bwd", threads, both,
                   "\"gflops\":" + std::to_string(3 * gflop / both.median_ms * 1e3));
    }
    for (const auto& c : bench::kConvTransposeCases) {
      if (!bench::wanted(c.name)) continue;
      tg::Tensor x = tg::randn({c.n, c.c, c.h, c.w});
      tg::Tensor w = tg::randn({c.c, c.o, c.k, c.k});
      tg::Tensor b = tg::randn({c.o});
      const tg::ConvTranspose2dOptions opt{.stride = c.stride, .padding = c.pad};
      const double gflop = bench::conv_transpose_flops(c) * 1e-9;
      auto fwd = bench::measure([&] { tg::NoGradGuard g; (void)tg::conv_transpose2d(x, w, b, opt); });
      bench::print("tapegrad", std::string(c.name) + ".fwd", threads, fwd,
                   "\"gflops\":" + std::to_string(gflop / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      tg::Tensor seed = tg::randn({c.n, c.o, c.out(c.h), c.out(c.w)});
      auto both = bench::measure([&] { tg::conv_transpose2d(x, w, b, opt).backward(seed); });
      bench::print("tapegrad", std::string(c.name) + ".fwd_bwd", threads, both,
                   "\"gflops\":" + std::to_string(3 * gflop / both.median_ms * 1e3));
    }
    for (const auto& p : bench::kPoolCases) {
      if (!bench::wanted(p.name)) continue;
      tg::Tensor x = tg::randn({p.n, p.c, p.h, p.w});
      const tg::MaxPool2dOptions opt{.kernel_size = {p.k, p.k}, .stride = {{p.stride, p.stride}}, .padding = {p.pad, p.pad}};
      const double gb = static_cast<double>(x.numel()) * 4e-9;
      auto fwd = bench::measure([&] { tg::NoGradGuard g; (void)tg::max_pool2d(x, opt); });
      bench::print("tapegrad", std::string(p.name) + ".fwd", threads, fwd,
                   "\"gbps\":" + std::to_string(gb / fwd.median_ms * 1e3));
      x.set_requires_grad(true);
      tg::Tensor y = tg::max_pool2d(x, opt);
      tg::Tensor seed = tg::randn(y.shape());
      auto both = bench::measure([&] { tg::max_pool2d(x, opt).backward(seed); });
      bench::print("tapegrad", std::string(p.name) + ".fwd_bwd", threads, both,
                   "\"gbps\":" + std::to_string(2 * gb / both.median_ms * 1e3));
    }
  }
}
