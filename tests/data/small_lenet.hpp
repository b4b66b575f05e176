#pragma once
// The model of the safetensors interop tests, layer for layer the SmallLeNet of
// tests/fixtures/make_safetensors_reference.py, so that named_state() gives PyTorch's
// state_dict keys ("0.weight", "1.running_mean", "1.num_batches_tracked", "9.weight", ...).
#include <memory>

#include <tapegrad/nn.hpp>

namespace tapegrad::testing {

/// [N, 1, 28, 28] -> [N, 10].
inline std::shared_ptr<nn::Sequential> small_lenet() {
  return nn::sequential({
      nn::conv2d(1, 4, 3, {.padding = {1, 1}}), nn::batch_norm2d(4), nn::relu(),
      nn::max_pool2d(2),  // [N, 4, 14, 14]
      nn::conv2d(4, 8, 3), nn::batch_norm2d(8), nn::relu(),
      nn::max_pool2d(2),  // [N, 8, 6, 6]
      nn::flatten(), nn::linear(8 * 6 * 6, 32), nn::relu(), nn::linear(32, 10)});
}

}  // namespace tapegrad::testing
