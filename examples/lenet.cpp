// lenet: LeNet-5 (LeCun et al. 1998, with ReLU and max pooling as usually written today) on
// Fashion-MNIST, the model people compare against.
//
//   lenet [epochs = 1] [training images = 60000] [data dir]
//
// SGD with momentum; prints the test accuracy after each epoch. Exits 1 when the final
// accuracy is below 70% (it is a smoke test too), 2 when the data is not installed.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <tapegrad/nn.hpp>
#include <tapegrad/optim.hpp>
#include <tapegrad/tapegrad.hpp>

#include "lenet_model.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

int main(int argc, char** argv) try {
  const std::int64_t epochs = argc > 1 ? std::atoll(argv[1]) : 1;
  const std::int64_t limit = argc > 2 ? std::atoll(argv[2]) : 60000;
  const std::string dir = argc > 3 ? argv[3] : "/usr/share/datasets/fashion-mnist";
  nn::Dataset train, test;
  try {
    train = nn::load_mnist(dir, nn::MnistSplit::train).head(limit);
    test = nn::load_mnist(dir, nn::MnistSplit::test);
  } catch (const tg::IoError& e) {
    fmt::print(stderr, "lenet: {}\ninstall the data with: sudo apt-get install dataset-fashion-mnist\n",
               e.what());
    return 2;
  }
  tg::manual_seed(0);
  auto model = lenet::make_lenet();
  nn::SGD optimizer(model->parameters(), {.lr = 0.05, .momentum = 0.9});
  nn::DataLoaderOptions train_options = lenet::kNormalise;
  train_options.batch_size = 64;
  train_options.shuffle = true;
  nn::DataLoader train_loader(train, train_options);

  double accuracy = 0;
  for (std::int64_t epoch = 0; epoch < epochs; ++epoch) {
    double loss_sum = 0;
    std::int64_t batches = 0;
    for (const nn::Batch& batch : train_loader) {
      tg::Tensor loss = tg::cross_entropy((*model)(batch.images), batch.labels);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
      ++batches;
    }
    accuracy = static_cast<double>(lenet::count_correct(*model, test)) /
               static_cast<double>(test.size());
    fmt::print("epoch {}: train loss {:.4f}, test accuracy {:.2f}%\n", epoch + 1,
               loss_sum / static_cast<double>(batches), 100 * accuracy);
  }
  return accuracy >= 0.7 ? 0 : 1;
} catch (const tg::Error& e) {
  fmt::print(stderr, "lenet: {}\n", e.what());
  return 1;
}
