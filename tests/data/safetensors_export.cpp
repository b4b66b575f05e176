// The tapegrad -> PyTorch half of the safetensors interop test: writes the state of a small
// LeNet that tapegrad initialised and trained for a few steps (so the running statistics and
// num_batches_tracked are not their defaults), with an input batch and tapegrad's eval-mode
// logits. tests/fixtures/check_tapegrad_safetensors.py runs this program, loads the weights
// into the same torch model with load_state_dict(strict=True) and compares the logits.
//
//   safetensors_export DIR   writes DIR/lenet_tapegrad.safetensors (named_state()) and
//                            DIR/lenet_tapegrad_expected.safetensors ("input", "logits")
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "small_lenet.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

int main(int argc, char** argv) try {
  if (argc != 2) {
    fmt::print(stderr, "usage: safetensors_export DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  tg::manual_seed(20240617);
  auto model = tg::testing::small_lenet();
  nn::SGD optimizer(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  for (int step = 0; step < 3; ++step) {
    const tg::Tensor x = tg::randn({8, 1, 28, 28});
    const tg::Tensor labels = tg::randint(0, 10, {8});
    tg::Tensor loss = tg::cross_entropy((*model)(x), labels);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  }
  model->eval();
  const tg::Tensor input = tg::randn({4, 1, 28, 28});
  tg::Tensor logits;
  {
    tg::NoGradGuard no_grad;
    logits = (*model)(input);
  }
  nn::save_safetensors(dir + "/lenet_tapegrad.safetensors", model->named_state(),
                       {{"format", "pt"}, {"source", "safetensors_export"}});
  nn::save_safetensors(dir + "/lenet_tapegrad_expected.safetensors",
                       {{"input", input}, {"logits", logits}});
  return 0;
} catch (const tg::Error& e) {
  fmt::print(stderr, "safetensors_export: {}\n", e.what());
  return 1;
}
