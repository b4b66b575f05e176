#pragma once
// LeNet-5 as examples/lenet.cpp trains it and examples/lenet_from_torch.cpp loads it from
// PyTorch (examples/train_lenet_torch.py builds the same layers), with the Fashion-MNIST
// normalisation and the test-set evaluation the two share.
#include <cstdint>
#include <cstddef>
#include <memory>

#include <tapegrad/tapegrad.hpp>

namespace lenet {

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

/// Fashion-MNIST's pixel mean and standard deviation (pixels scaled to [0, 1]).
inline const nn::DataLoaderOptions kNormalise{.mean = 0.2860, .std = 0.3530};

/// [N, 1, 28, 28] -> [N, 6, 28, 28] -> [N, 6, 14, 14] -> [N, 16, 10, 10] -> [N, 16, 5, 5]
/// -> [N, 10]. Its named_state() names are the torch.nn.Sequential's state_dict keys:
/// "0.weight", "0.bias", "3.weight", ..., "11.bias".
inline std::shared_ptr<nn::Sequential> make_lenet() {
  return nn::sequential({
      nn::conv2d(1, 6, 5, {.padding = 2}), nn::relu(), nn::max_pool2d(2),
      nn::conv2d(6, 16, 5), nn::relu(), nn::max_pool2d(2),
      nn::flatten(), nn::linear(16 * 5 * 5, 120), nn::relu(),
      nn::linear(120, 84), nn::relu(), nn::linear(84, 10)});
}

/// How many of `test`'s images the model classifies correctly (argmax of the logits),
/// normalised with kNormalise, in batches of 1000, without recording.
inline std::int64_t count_correct(nn::Module& model, const nn::Dataset& test) {
  tg::NoGradGuard no_grad;
  nn::DataLoaderOptions options = kNormalise;
  options.batch_size = 1000;
  nn::DataLoader loader(test, options);
  std::int64_t correct = 0;
  for (const nn::Batch& batch : loader.epoch(0)) {
    const auto predicted = tg::max(model(batch.images), 1).indices.to_vector<std::int64_t>();
    const auto labels = batch.labels.to_vector<std::int64_t>();
    for (std::size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  }
  return correct;
}

}  // namespace lenet
