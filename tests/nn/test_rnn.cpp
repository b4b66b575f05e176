// LSTMCell, GRUCell, LSTM and GRU beyond the PyTorch fixture: libtorch's parameter names,
// shapes and init bounds; the cells equal the functional ops; dropout between layers only in
// training; every bad option and input an Error naming the layer.
#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Matchers::Contains;
using tg::testing::random_tensor;

namespace {

std::vector<std::string> names_and_shapes(nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, p] : m.named_parameters()) out.push_back(fmt::format("{} {}", name, p.shape()));
  return out;
}

/// Every parameter within ±1/√hidden and not constant.
void check_init(nn::Module& m, std::int64_t hidden) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
  for (const auto& [name, p] : m.named_parameters()) {
    INFO(name);
    const std::vector<double> v = p.to_vector<double>();
    double low = v[0], high = v[0];
    for (const double x : v) {
      low = std::min(low, x);
      high = std::max(high, x);
    }
    CHECK(low >= -bound);
    CHECK(high <= bound);
    CHECK(high - low > bound / 4);
    CHECK(p.requires_grad());
    CHECK(p.dtype() == tg::DType::f32);
  }
}

}  // namespace

TEST_CASE("LSTM GRU LSTMCell GRUCell: libtorch's parameter names, shapes and init", "[nn][rnn]") {
  tg::manual_seed(15);
  nn::LSTM lstm(3, 5, {.num_layers = 2});
  CHECK(names_and_shapes(lstm) ==
        std::vector<std::string>{"weight_ih_l0 [20, 3]", "weight_hh_l0 [20, 5]", "bias_ih_l0 [20]",
                                 "bias_hh_l0 [20]", "weight_ih_l1 [20, 5]", "weight_hh_l1 [20, 5]",
                                 "bias_ih_l1 [20]", "bias_hh_l1 [20]"});
  check_init(lstm, 5);
  CHECK(lstm.parameter("weight_hh", 1).to_vector<double>() == lstm.named_parameters()[5].second.to_vector<double>());
  CHECK(lstm.parameter("bias_ih", 0).to_vector<double>() == lstm.named_parameters()[2].second.to_vector<double>());
  CHECK_FALSE(nn::GRU(3, 5, {.bias = false}).parameter("bias_ih", 0).defined());
  CHECK_THROWS_WITH(lstm.parameter("weight", 0), Contains("LSTM") && Contains("weight_ih"));
  CHECK_THROWS_WITH(lstm.parameter("weight_ih", 2), Contains("LSTM") && Contains("num_layers=2"));
  nn::GRU gru(2, 4, {.num_layers = 3, .bias = false});
  CHECK(names_and_shapes(gru) ==
        std::vector<std::string>{"weight_ih_l0 [12, 2]", "weight_hh_l0 [12, 4]", "weight_ih_l1 [12, 4]",
                                 "weight_hh_l1 [12, 4]", "weight_ih_l2 [12, 4]", "weight_hh_l2 [12, 4]"});
  check_init(gru, 4);
  nn::LSTMCell lstm_cell(3, 2);
  CHECK(names_and_shapes(lstm_cell) ==
        std::vector<std::string>{"weight_ih [8, 3]", "weight_hh [8, 2]", "bias_ih [8]", "bias_hh [8]"});
  check_init(lstm_cell, 2);
  nn::GRUCell gru_cell(3, 2, false);
  CHECK(names_and_shapes(gru_cell) == std::vector<std::string>{"weight_ih [6, 3]", "weight_hh [6, 2]"});
  check_init(gru_cell, 2);
}

TEST_CASE("LSTMCell and GRUCell: the functional cells on the module's parameters, zero state by default",
          "[nn][rnn]") {
  auto lstm = nn::lstm_cell(3, 4);
  auto gru = nn::gru_cell(3, 4);
  lstm->to(tg::DType::f64);
  gru->to(tg::DType::f64);
  const tg::Tensor x = random_tensor({2, 3}, 1), h = random_tensor({2, 4}, 2), c = random_tensor({2, 4}, 3);
  const tg::Tensor zero = tg::zeros({2, 4}, tg::DType::f64);
  const auto [h1, c1] = lstm->forward(x, std::tuple{h, c});
  const auto [h2, c2] = tg::lstm_cell(x, {h, c}, lstm->weight_ih(), lstm->weight_hh(), lstm->bias_ih(), lstm->bias_hh());
  CHECK(h1.to_vector<double>() == h2.to_vector<double>());
  CHECK(c1.to_vector<double>() == c2.to_vector<double>());
  const auto [h3, c3] = lstm->forward(x);
  const auto [h4, c4] = lstm->forward(x, std::tuple{zero, zero});
  CHECK(h3.to_vector<double>() == h4.to_vector<double>());
  CHECK(c3.to_vector<double>() == c4.to_vector<double>());
  CHECK(gru->forward(x, h).to_vector<double>() ==
        tg::gru_cell(x, h, gru->weight_ih(), gru->weight_hh(), gru->bias_ih(), gru->bias_hh()).to_vector<double>());
  CHECK(gru->forward(x).to_vector<double>() == gru->forward(x, zero).to_vector<double>());
  CHECK(gru->forward(random_tensor({3}, 4)).shape() == tg::Shape{4});
}

TEST_CASE("LSTM and GRU: dropout between layers in training only, never after the last layer", "[nn][rnn]") {
  tg::manual_seed(7);
  const tg::Tensor x = random_tensor({4, 3, 2}, 1, -1, 1, tg::DType::f32);
  auto run = [&](nn::LSTM& m) { return std::get<0>(m.forward(x)).to_vector<double>(); };
  nn::LSTM two(2, 3, {.num_layers = 2, .dropout = 0.5});
  nn::LSTM plain(2, 3, {.num_layers = 2});
  for (const auto& [name, p] : two.named_parameters()) plain.parameter(name.substr(0, name.size() - 3), name.back() - '0') = p;
  CHECK(run(two) != run(plain));
  two.train(false);
  CHECK(run(two) == run(plain));
  // One layer: nothing between layers, so dropout changes nothing even in training.
  nn::GRU one(2, 3, {.dropout = 0.9});
  const auto a = std::get<0>(one.forward(x)).to_vector<double>();
  CHECK(std::get<0>(one.forward(x)).to_vector<double>() == a);
}

TEST_CASE("LSTM and GRU: bad options and inputs are errors naming the layer and the shapes", "[nn][rnn]") {
  CHECK_THROWS_AS(nn::LSTM(3, 4, {.bidirectional = true}), tg::ValueError);
  CHECK_THROWS_WITH(nn::GRU(3, 4, {.bidirectional = true}), Contains("GRU") && Contains("bidirectional"));
  CHECK_THROWS_WITH(nn::LSTM(3, 4, {.num_layers = 0}), Contains("LSTM") && Contains("num_layers"));
  CHECK_THROWS_WITH(nn::GRU(3, 4, {.dropout = 1.5}), Contains("GRU") && Contains("dropout"));
  CHECK_THROWS_WITH(nn::LSTM(0, 4), Contains("LSTM") && Contains("input_size"));
  CHECK_THROWS_WITH(nn::LSTMCell(3, -1), Contains("LSTMCell") && Contains("hidden_size"));

  nn::LSTM lstm(3, 4, {.num_layers = 2});
  nn::GRU gru(3, 4, {.num_layers = 2, .batch_first = true});
  const auto f32 = [](const tg::Shape& s) { return random_tensor(s, 9, -1, 1, tg::DType::f32); };
  CHECK_THROWS_AS(lstm.forward(f32({2, 5, 3, 1})), tg::ShapeError);
  CHECK_THROWS_WITH(lstm.forward(f32({2, 5, 3, 1})), Contains("LSTM") && Contains("[seq_len, batch, input_size]") &&
                                                          Contains("[2, 5, 3, 1]"));
  CHECK_THROWS_WITH(gru.forward(f32({2, 5, 4})),
                    Contains("GRU") && Contains("input_size 4") && Contains("input_size=3"));
  CHECK_THROWS_AS(gru.forward(random_tensor({2, 5, 3}, 1)), tg::DTypeError);
  // h0 for a batch of 5 (batch_first: dim 0 of [5, 2, 3]) and 2 layers.
  CHECK_THROWS_AS(gru.forward(f32({5, 2, 3}), f32({2, 2, 4})), tg::ShapeError);
  CHECK_THROWS_WITH(gru.forward(f32({5, 2, 3}), f32({2, 2, 4})),
                    Contains("GRU") && Contains("h0 must be [2, 5, 4]") && Contains("[2, 2, 4]"));
  CHECK(std::get<1>(gru.forward(f32({5, 2, 3}), f32({2, 5, 4}))).shape() == tg::Shape{2, 5, 4});
  CHECK_THROWS_WITH(lstm.forward(f32({6, 2, 3}), std::tuple{f32({2, 2, 4}), f32({1, 2, 4})}),
                    Contains("LSTM") && Contains("c0 must be [2, 2, 4]") && Contains("[1, 2, 4]"));
  CHECK_THROWS_WITH(lstm.forward(f32({6, 3}), std::tuple{f32({2, 1, 4}), f32({2, 1, 4})}),
                    Contains("LSTM") && Contains("h0 must be [2, 4]"));
  const auto [out, state] = lstm.forward(f32({6, 3}), std::tuple{f32({2, 4}), f32({2, 4})});
  CHECK(out.shape() == tg::Shape{6, 4});
  CHECK(std::get<1>(state).shape() == tg::Shape{2, 4});
}
