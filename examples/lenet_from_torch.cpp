// lenet_from_torch: a LeNet trained in PyTorch, moved to tapegrad through a safetensors file,
// reaches the same test accuracy on Fashion-MNIST. Manual (not a ctest test: the PyTorch run
// takes a few minutes):
//
//   /usr/bin/python3 examples/train_lenet_torch.py lenet_torch.safetensors
//   build/examples/lenet_from_torch lenet_torch.safetensors [data dir]
//
// The script trains examples/lenet.cpp's LeNet (examples/lenet_model.hpp) in PyTorch for one
// epoch, prints its test accuracy and saves the model's state_dict with safetensors'
// metadata {"test_correct": ..., "test_images": ...}. This program builds the same
// architecture with tapegrad's nn API, whose named_state() names are the state_dict keys
// ("0.weight", ..., "11.bias"), loads the file into it (all or nothing), classifies the same
// 10,000 test images and prints both accuracies. Both sides feed the network bit-identical
// normalised pixels, so only the kernels' float rounding differs: exit 0 when the counts of
// correct images agree within 2 (a logit pair within ~1e-5 of a tie may flip), 1 otherwise,
// 2 when the data is not installed. Measured with Debian's torch 1.13 (one epoch, seed 0):
// PyTorch 83.39% (8339 of 10,000 correct), tapegrad 83.39% (8339).
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "lenet_model.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

int main(int argc, char** argv) try {
  if (argc < 2) {
    fmt::print(stderr, "usage: lenet_from_torch WEIGHTS.safetensors [data dir]\n"
                       "write the weights with: /usr/bin/python3 examples/train_lenet_torch.py "
                       "WEIGHTS.safetensors\n");
    return 1;
  }
  const std::string weights = argv[1];
  const std::string dir = argc > 2 ? argv[2] : "/usr/share/datasets/fashion-mnist";
  nn::Dataset test;
  try {
    test = nn::load_mnist(dir, nn::MnistSplit::test);
  } catch (const tg::IoError& e) {
    fmt::print(stderr,
               "lenet_from_torch: {}\ninstall the data with: sudo apt-get install "
               "dataset-fashion-mnist\n",
               e.what());
    return 2;
  }
  auto model = lenet::make_lenet();
  nn::load_safetensors_into(weights, model->named_state());
  model->eval();
  const std::int64_t correct = lenet::count_correct(*model, test);
  const auto images = test.size();
  fmt::print("tapegrad: test accuracy {:.2f}% ({} of {} images)\n",
             100.0 * static_cast<double>(correct) / static_cast<double>(images), correct, images);

  const std::map<std::string, std::string> metadata = nn::load_safetensors_metadata(weights);
  const auto torch_correct = metadata.find("test_correct");
  if (torch_correct == metadata.end()) {
    fmt::print("{} records no PyTorch accuracy (no \"test_correct\" in its metadata)\n", weights);
    return 0;
  }
  const std::int64_t expected = std::atoll(torch_correct->second.c_str());
  fmt::print("PyTorch:  test accuracy {:.2f}% ({} of {} images); difference {} images\n",
             100.0 * static_cast<double>(expected) / static_cast<double>(images), expected,
             images, correct - expected);
  return std::llabs(correct - expected) <= 2 ? 0 : 1;
} catch (const tg::Error& e) {
  fmt::print(stderr, "lenet_from_torch: {}\n", e.what());
  return 1;
}
