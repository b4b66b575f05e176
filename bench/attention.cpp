// tapegrad's MultiheadAttention (embed 128, 4 heads of 32, batch 32, sequence-first layout,
// self-attention, need_weights = false, f32), forward + backward with a random upstream
// gradient, at L = 64 and 256 and 1 and 2 threads; attention_torch.cpp is the libtorch twin.
// `bench_attention memory primitive|composite` instead runs scaled_dot_product_attention
// (or the composite softmax(q·kᵀ/√E)·v of recorded ops) forward + backward once on
// [8, 4, 1024, 32] and prints the growth of the peak resident set over the inputs: run once
// per mode (peak RSS is per process).
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <string>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr std::int64_t kBatch = 32, kEmbed = 128, kHeads = 4;

int memory(const std::string& mode) {
  const tg::Shape shape{8, kHeads, 1024, kEmbed / kHeads};
  tg::Tensor q = tg::randn(shape).set_requires_grad(true), k = tg::randn(shape).set_requires_grad(true),
             v = tg::randn(shape).set_requires_grad(true);
  const tg::Tensor seed = tg::randn(shape);
  const double before = bench::peak_rss_mb();
  tg::Tensor out;
  if (mode == "primitive") {
    out = tg::scaled_dot_product_attention(q, k, v);
  } else if (mode == "composite") {
    const double scale = 1.0 / std::sqrt(static_cast<double>(shape.back()));
    out = tg::matmul(tg::softmax(tg::matmul(q, tg::transpose(k, -2, -1)) * scale, -1), v);
  } else {
    std::fprintf(stderr, "bench_attention: memory mode must be primitive or composite, got %s\n", mode.c_str());
    return 2;
  }
  out.backward(seed);
  std::printf("{\"lib\":\"tapegrad\",\"name\":\"attn.memory.L1024.%s\",\"threads\":%d,\"peak_rss_growth_mb\":%.1f}\n",
              mode.c_str(), omp_get_max_threads(), bench::peak_rss_mb() - before);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "memory") return memory(argv[2]);
  tg::manual_seed(0);
  auto mha = nn::multihead_attention(kEmbed, kHeads);
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    for (std::int64_t L : {64, 256}) {
      const std::string name = "attn.mha.L" + std::to_string(L) + ".fwd_bwd";
      if (!bench::wanted(name)) continue;
      const tg::Tensor x = tg::randn({L, kBatch, kEmbed}).set_requires_grad(true);
      const tg::Tensor seed = tg::randn({L, kBatch, kEmbed});
      const auto s = bench::measure([&] {
        const auto [out, weights] = mha->forward(x, x, x, {}, false);
        out.backward(seed);
      });
      bench::print("tapegrad", name, threads, s);
    }
  }
}
