// lstm_cell, gru_cell and the nn::LSTM / nn::GRU layers against PyTorch 1.13 (CPU, float64),
// read from tests/fixtures/rnn_reference.txt (make_rnn_reference.py writes it and documents
// the format). For each case out = f(x0, ..., xk-1) (a cell: its stacked state; a layer: its
// output, h_n and c_n flattened and joined, the x_i being the input, the initial state and
// every parameter), a random upstream v that itself requires grad and random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = Σ <g_i, u_i>,  ds/dx_i and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0); g_i also from a plain
// backward, which runs the fused ops' explicit VJPs rather than their recorded form.
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/rnn_reference.txt";

struct Config {
  std::int64_t input_size, hidden_size, num_layers;
  bool bias, batch_first, has_state;
};

Config config(const tg::testing::FixtureCase& c) {
  const std::vector<double>& v = c.values("config");
  REQUIRE(v.size() == 6);
  const auto n = [&](std::size_t i) { return static_cast<std::int64_t>(std::llround(v[i])); };
  return {n(0), n(1), n(2), n(3) != 0, n(4) != 0, n(5) != 0};
}

tg::Tensor cell_out(const std::string& op, bool bias, const std::vector<tg::Tensor>& x) {
  if (op == "lstm_cell") {
    const auto [h, c] = bias ? tg::lstm_cell(x[0], {x[1], x[2]}, x[3], x[4], x[5], x[6])
                             : tg::lstm_cell(x[0], {x[1], x[2]}, x[3], x[4]);
    return tg::stack({h, c});
  }
  return bias ? tg::gru_cell(x[0], x[1], x[2], x[3], x[4], x[5]) : tg::gru_cell(x[0], x[1], x[2], x[3]);
}

/// The layer's output, h_n (and c_n) flattened and joined, with the case's tensors in place of
/// the parameters (functional_call) and as the initial state.
template <class Layer>
tg::Tensor layer_out(Layer& layer, const Config& cfg, const std::vector<std::string>& names,
                     std::size_t n_state, const std::vector<tg::Tensor>& x) {
  tg::NamedTensors params;
  for (std::size_t i = 0; i < names.size(); ++i) params.emplace_back(names[i], x[1 + n_state + i]);
  std::vector<tg::Tensor> parts;
  if constexpr (std::is_same_v<Layer, nn::LSTM>) {
    const auto [out, state] = cfg.has_state ? nn::functional_call(layer, params, x[0], std::tuple{x[1], x[2]})
                                            : nn::functional_call(layer, params, x[0]);
    parts = {out, std::get<0>(state), std::get<1>(state)};
  } else {
    const auto [out, h_n] = cfg.has_state ? nn::functional_call(layer, params, x[0], x[1])
                                          : nn::functional_call(layer, params, x[0]);
    parts = {out, h_n};
  }
  for (auto& p : parts) p = tg::flatten(p);
  return tg::cat(parts);
}

/// check_case_derivatives takes g_i with create_graph, through the recorded VJPs; this checks
/// the explicit (kernel) VJPs, which a plain backward runs, against the same g_i.
void check_plain_backward(const tg::testing::FixtureCase& c, const tg::testing::TensorFn& f) {
  std::vector<tg::Tensor> x;
  for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
    x.push_back(c.tensor(fmt::format("x{}", i)).set_requires_grad(true));
  }
  f(x).backward(c.tensor("v", c.shape("out")));
  for (std::size_t i = 0; i < x.size(); ++i) {
    tg::testing::check_reference(c.name, fmt::format("g{} (plain backward)", i), x[i].grad(),
                                 c.tensor(fmt::format("g{}", i), x[i].shape()), kAtol, kRtol);
  }
}

void run_case(const tg::testing::FixtureCase& c) {
  const std::string& op = c.word("op");
  const Config cfg = config(c);
  if (op == "lstm_cell" || op == "gru_cell") {
    const tg::testing::TensorFn f = [&](const std::vector<tg::Tensor>& x) { return cell_out(op, cfg.bias, x); };
    tg::testing::check_case_derivatives(c, f, kAtol, kRtol);
    check_plain_backward(c, f);
    return;
  }
  const std::vector<std::string>& names = c.tokens("params");
  const nn::RNNOptions options{.num_layers = cfg.num_layers, .bias = cfg.bias, .batch_first = cfg.batch_first};
  if (op == "LSTM") {
    nn::LSTM layer(cfg.input_size, cfg.hidden_size, options);
    const std::size_t n_state = cfg.has_state ? 2 : 0;
    const tg::testing::TensorFn f = [&](const std::vector<tg::Tensor>& x) { return layer_out(layer, cfg, names, n_state, x); };
    tg::testing::check_case_derivatives(c, f, kAtol, kRtol);
    check_plain_backward(c, f);
  } else if (op == "GRU") {
    nn::GRU layer(cfg.input_size, cfg.hidden_size, options);
    const std::size_t n_state = cfg.has_state ? 1 : 0;
    const tg::testing::TensorFn f = [&](const std::vector<tg::Tensor>& x) { return layer_out(layer, cfg, names, n_state, x); };
    tg::testing::check_case_derivatives(c, f, kAtol, kRtol);
    check_plain_backward(c, f);
  } else {
    FAIL(fmt::format("{}: case {} has op {}, which the test does not know", kFixture, c.name, op));
  }
}

}  // namespace

TEST_CASE("rnn reference: lstm_cell gru_cell LSTM GRU forward and derivatives to 2nd order match PyTorch 1.13",
          "[ops][rnn-reference]") {
  const std::vector<tg::testing::FixtureCase> cases = tg::testing::read_fixture(kFixture);
  std::set<std::string> ops_seen;
  for (const auto& c : cases) ops_seen.insert(c.word("op"));
  CHECK(ops_seen == std::set<std::string>{"lstm_cell", "gru_cell", "LSTM", "GRU"});
  CHECK(cases.size() == 22);
  for (const auto& c : cases) {
    SECTION(c.name) { run_case(c); }
  }
}

TEST_CASE("rnn reference: f32 cells and layers agree with the f64 fixture to f32 precision",
          "[ops][rnn-reference]") {
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    const std::string& op = c.word("op");
    const Config cfg = config(c);
    std::vector<tg::Tensor> x;
    for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
      x.push_back(c.tensor(fmt::format("x{}", i), tg::DType::f32).set_requires_grad(true));
    }
    tg::Tensor out;
    if (op == "lstm_cell" || op == "gru_cell") {
      out = cell_out(op, cfg.bias, x);
    } else {
      const std::vector<std::string>& names = c.tokens("params");
      const nn::RNNOptions options{.num_layers = cfg.num_layers, .bias = cfg.bias, .batch_first = cfg.batch_first};
      if (op == "LSTM") {
        nn::LSTM layer(cfg.input_size, cfg.hidden_size, options);
        out = layer_out(layer, cfg, names, cfg.has_state ? 2 : 0, x);
      } else {
        nn::GRU layer(cfg.input_size, cfg.hidden_size, options);
        out = layer_out(layer, cfg, names, cfg.has_state ? 1 : 0, x);
      }
    }
    CHECK(out.dtype() == tg::DType::f32);
    tg::testing::check_reference(c.name, "f32 out", out.to(tg::DType::f64), c.tensor("out"), 1e-5, 1e-4);
    out.backward(c.tensor("v", c.shape("out"), tg::DType::f32));
    for (std::size_t i = 0; i < x.size(); ++i) {
      tg::testing::check_reference(c.name, fmt::format("f32 g{}", i), x[i].grad().to(tg::DType::f64),
                                   c.tensor(fmt::format("g{}", i), x[i].shape()), 1e-5, 1e-4);
    }
  }
}
