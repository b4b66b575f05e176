// libtorch's twin of rnn.cpp: torch::nn::LSTM(256, 256, 2 layers), sequence 32, batch 64, f32;
// one timed step is zero_grad, the forward (zero initial state), the sum of the outputs and its
// backward. BENCH_THREADS=1 (or 2) times only that thread count.
#include <torch/torch.h>

#include <cstdio>

#include "harness.hpp"

namespace {

constexpr int64_t kSeq = 32, kBatch = 64, kInput = 256, kHidden = 256, kLayers = 2;

}  // namespace

int main() {
  // Everything before the timing runs at the first thread count timed (1 unless
  // BENCH_THREADS=2): after a parallel region of 2 threads, libgomp makes every later region of
  // 1 thread synchronise with the idle one, which would slow the 1-thread figure.
  torch::set_num_threads(bench::wanted_threads(1) ? 1 : 2);
  torch::manual_seed(0);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(kInput, kHidden).num_layers(kLayers));
  const auto x = torch::randn({kSeq, kBatch, kInput});
  auto step = [&] {
    lstm->zero_grad();
    std::get<0>(lstm->forward(x)).sum().backward();
  };
  step();
  std::fprintf(stderr, "rnn libtorch: |d sum / d weight_hh_l0| sum %.6g\n",
               lstm->named_parameters()["weight_hh_l0"].grad().abs().sum().item<double>());
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    const auto s = bench::measure(step, 10, 2);
    bench::print("libtorch", "lstm_2x256_seq32_b64_fwd_bwd", threads, s);
  }
}
