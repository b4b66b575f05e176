// One Fashion-MNIST training epoch of LeNet-5 (60,000 images, batch 64, SGD momentum) at 1
// and 2 threads: the wall time of the epoch (data already in memory) and the process's peak
// resident memory. One repetition per thread count: an epoch is ~940 steps, so its time is
// itself an average. Skipped (with a message) when the data is not installed.
#include <chrono>
#include <cstdio>

#include <omp.h>

#include <tapegrad/nn.hpp>
#include <tapegrad/optim.hpp>
#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

int main() {
  nn::Dataset train;
  try {
    train = nn::load_mnist("/usr/share/datasets/fashion-mnist", nn::MnistSplit::train);
  } catch (const tg::IoError& e) {
    std::printf("{\"lib\":\"tapegrad\",\"name\":\"lenet_epoch\",\"skipped\":\"%s\"}\n", e.what());
    return 0;
  }
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    tg::manual_seed(0);
    auto model = nn::sequential({nn::conv2d(1, 6, 5, {.padding = {2, 2}}), nn::relu(), nn::max_pool2d(2),
                                 nn::conv2d(6, 16, 5), nn::relu(), nn::max_pool2d(2), nn::flatten(),
                                 nn::linear(400, 120), nn::relu(), nn::linear(120, 84), nn::relu(),
                                 nn::linear(84, 10)});
    nn::SGD optimizer(model->parameters(), {.lr = 0.05, .momentum = 0.9});
    nn::DataLoader loader(train, {.batch_size = 64, .shuffle = true, .mean = 0.2860, .std = 0.3530});
    const auto t0 = std::chrono::steady_clock::now();
    for (const nn::Batch& batch : loader) {
      tg::Tensor loss = tg::cross_entropy((*model)(batch.images), batch.labels);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    bench::print("tapegrad", "lenet_epoch", threads, {ms, ms, ms, 1},
                 "\"peak_rss_mb\":" + std::to_string(bench::peak_rss_mb()));
  }
}
