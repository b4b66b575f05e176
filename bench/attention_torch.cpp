// libtorch's twin of attention.cpp: torch::nn::MultiheadAttention (embed 128, 4 heads, batch
// 32, sequence-first, self-attention, need_weights = false, f32) forward + backward, the same
// rows and timing, so bench/run.sh prints the ratio measured in one run.
#include <torch/torch.h>

#include <string>

#include "harness.hpp"

namespace {
constexpr std::int64_t kBatch = 32, kEmbed = 128, kHeads = 4;
}  // namespace

int main() {
  torch::manual_seed(0);
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(kEmbed, kHeads));
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    for (std::int64_t L : {64, 256}) {
      const std::string name = "attn.mha.L" + std::to_string(L) + ".fwd_bwd";
      if (!bench::wanted(name)) continue;
      const torch::Tensor x = torch::randn({L, kBatch, kEmbed}).requires_grad_(true);
      const torch::Tensor seed = torch::randn({L, kBatch, kEmbed});
      const auto s = bench::measure([&] {
        const auto out = std::get<0>(mha->forward(x, x, x, {}, false));
        out.backward(seed);
      });
      bench::print("libtorch", name, threads, s);
    }
  }
}
