// End to end: a small CNN built from nn layers learns random data with SGD.
#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

TEST_CASE("training: a small Sequential CNN reduces its loss over 20 SGD steps",
          "[nn][training]") {
  tg::manual_seed(2024);
  auto model = nn::sequential({
      nn::conv2d(1, 4, 3, {.padding = {1, 1}}), nn::batch_norm2d(4), nn::relu(),  // [N, 4, 8, 6]
      nn::max_pool2d(2),                                                          // [N, 4, 4, 3]
      nn::flatten(), nn::dropout(0.1), nn::linear(4 * 4 * 3, 3)});                 // [N, 3]
  const tg::Tensor x = tg::randn({16, 1, 8, 6});
  const tg::Tensor y = tg::randint(0, 3, {16});
  nn::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  nn::CrossEntropyLoss criterion;
  const std::int64_t records_before = tg::live_tape_records();
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    const tg::Tensor loss = criterion((*model)(x), y);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(tg::live_tape_records() == records_before);
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5 * first);
  model->eval();
  const tg::Tensor pred = tg::max((*model)(x), 1).indices;
  const auto p = pred.to_vector<std::int64_t>();
  const auto t = y.to_vector<std::int64_t>();
  int correct = 0;
  for (std::size_t i = 0; i < p.size(); ++i) correct += p[i] == t[i];
  CHECK(correct >= 12);
}
