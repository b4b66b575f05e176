// A 2-layer LSTM, as torch::nn::LSTM: sequence 32, batch 64, input 256, hidden 256, f32; one
// timed step is the forward over the sequence (zero initial state), the sum of the outputs,
// and its backward into every parameter (gradients zeroed first, as an optimizer step would).
// Twin: rnn_torch.cpp. The values agree with PyTorch through tests/fixtures/rnn_reference.txt;
// the two programs' random inits differ, so their losses are not compared here.
//
// BENCH_THREADS=1 (or 2) times only that thread count, e.g. under perf record.
#include <omp.h>

#include <cstdio>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr std::int64_t kSeq = 32, kBatch = 64, kInput = 256, kHidden = 256, kLayers = 2;

}  // namespace

int main() {
  // Everything before the timing runs at the first thread count timed (1 unless
  // BENCH_THREADS=2): after a parallel region of 2 threads, libgomp makes every later region of
  // 1 thread synchronise with the idle one, which would slow the 1-thread figure.
  omp_set_num_threads(bench::wanted_threads(1) ? 1 : 2);
  tg::manual_seed(0);
  nn::LSTM lstm(kInput, kHidden, {.num_layers = kLayers});
  const tg::Tensor x = tg::randn({kSeq, kBatch, kInput});
  auto step = [&] {
    lstm.zero_grad();
    tg::sum(std::get<0>(lstm.forward(x))).backward();
  };
  step();
  std::fprintf(stderr, "rnn tapegrad: |d sum / d weight_hh_l0| sum %.6g\n",
               tg::sum(tg::abs(lstm.parameter("weight_hh", 0).grad())).item<double>());
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    const auto s = bench::measure(step, 10, 2);
    bench::print("tapegrad", "lstm_2x256_seq32_b64_fwd_bwd", threads, s);
  }
}
