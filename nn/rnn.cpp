// The recurrent layers: LSTMCell and GRUCell (one step), LSTM and GRU (layers unrolled over
// time on the tape), with torch.nn's parameter names, layouts and initialisation.
//
// A layer's input projection does not depend on the recurrence, so each layer computes it for
// every step at once (one linear over [T·B, in], as PyTorch's CPU RNN does); each step then
// adds only h·W_hhᵀ + b_hh and runs one fused gate op.
#include <cmath>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/nn.hpp"

namespace tapegrad::nn {
namespace {

void check_sizes(const char* layer, std::int64_t input_size, std::int64_t hidden_size) {
  if (input_size <= 0 || hidden_size <= 0) {
    throw ValueError(fmt::format("{}: input_size and hidden_size must be positive, got {} and {}",
                                 layer, input_size, hidden_size));
  }
}

/// PyTorch's reset_parameters of every recurrent layer: each parameter U(±1/√hidden_size).
Tensor* uniform_init(Tensor& p, std::int64_t hidden_size) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size));
  uniform_(p, -bound, bound);
  return &p;
}

/// A cell's zero state for `input` ([B, I] -> [B, H], [I] -> [H]).
Tensor zero_state(const Tensor& input, std::int64_t hidden_size) {
  return zeros(input.dim() == 2 ? Shape{input.shape()[0], hidden_size} : Shape{hidden_size},
               input.dtype());
}

}  // namespace

// ---- cells -----------------------------------------------------------------------------------

LSTMCell::LSTMCell(std::int64_t input_size, std::int64_t hidden_size, bool bias)
    : hidden_size_(hidden_size) {
  check_sizes("LSTMCell", input_size, hidden_size);
  const auto param = [&](const char* name, const Shape& shape) {
    return uniform_init(register_parameter(name, empty(shape)), hidden_size);
  };
  weight_ih_ = param("weight_ih", {4 * hidden_size, input_size});
  weight_hh_ = param("weight_hh", {4 * hidden_size, hidden_size});
  if (bias) {
    bias_ih_ = param("bias_ih", {4 * hidden_size});
    bias_hh_ = param("bias_hh", {4 * hidden_size});
  }
}

std::tuple<Tensor, Tensor> LSTMCell::forward(const Tensor& input,
                                             const std::optional<std::tuple<Tensor, Tensor>>& hx) {
  if (hx) return tapegrad::lstm_cell(input, *hx, *weight_ih_, *weight_hh_, *bias_ih_, *bias_hh_);
  const Tensor zero = zero_state(input, hidden_size_);
  return tapegrad::lstm_cell(input, {zero, zero}, *weight_ih_, *weight_hh_, *bias_ih_, *bias_hh_);
}

GRUCell::GRUCell(std::int64_t input_size, std::int64_t hidden_size, bool bias)
    : hidden_size_(hidden_size) {
  check_sizes("GRUCell", input_size, hidden_size);
  const auto param = [&](const char* name, const Shape& shape) {
    return uniform_init(register_parameter(name, empty(shape)), hidden_size);
  };
  weight_ih_ = param("weight_ih", {3 * hidden_size, input_size});
  weight_hh_ = param("weight_hh", {3 * hidden_size, hidden_size});
  if (bias) {
    bias_ih_ = param("bias_ih", {3 * hidden_size});
    bias_hh_ = param("bias_hh", {3 * hidden_size});
  }
}

Tensor GRUCell::forward(const Tensor& input, const std::optional<Tensor>& hx) {
  return tapegrad::gru_cell(input, hx ? *hx : zero_state(input, hidden_size_), *weight_ih_,
                            *weight_hh_, *bias_ih_, *bias_hh_);
}

// ---- LSTM and GRU ------------------------------------------------------------------------------

RNNBase::RNNBase(const char* layer, std::int64_t gates, std::int64_t input_size,
                 std::int64_t hidden_size, const RNNOptions& options)
    : layer_(layer), input_size_(input_size), hidden_size_(hidden_size), options_(options) {
  check_sizes(layer, input_size, hidden_size);
  if (options.num_layers <= 0) {
    throw ValueError(fmt::format("{}: num_layers must be positive, got {}", layer, options.num_layers));
  }
  if (!(options.dropout >= 0.0 && options.dropout <= 1.0)) {
    throw ValueError(fmt::format("{}: dropout must be a probability in [0, 1], got {}", layer,
                                 options.dropout));
  }
  if (options.bidirectional) {
    throw ValueError(fmt::format("{}: bidirectional is not supported (one direction only)", layer));
  }
  const std::int64_t rows = gates * hidden_size;
  for (std::int64_t k = 0; k < options.num_layers; ++k) {
    const std::int64_t in = k == 0 ? input_size : hidden_size;
    const auto param = [&](const char* name, const Shape& shape) {
      return uniform_init(register_parameter(fmt::format("{}_l{}", name, k), empty(shape)), hidden_size);
    };
    Weights w{param("weight_ih", {rows, in}), param("weight_hh", {rows, hidden_size}), &none_, &none_};
    if (options.bias) {
      w.b_ih = param("bias_ih", {rows});
      w.b_hh = param("bias_hh", {rows});
    }
    weights_.push_back(w);
  }
}

Tensor& RNNBase::parameter(const std::string& name, std::int64_t layer) {
  if (layer < 0 || layer >= options_.num_layers) {
    throw ValueError(fmt::format("{}: layer {} is out of range for num_layers={}", layer_, layer,
                                 options_.num_layers));
  }
  const Weights& w = weights_[static_cast<std::size_t>(layer)];
  if (name == "weight_ih") return *w.w_ih;
  if (name == "weight_hh") return *w.w_hh;
  if (name == "bias_ih") return *w.b_ih;
  if (name == "bias_hh") return *w.b_hh;
  throw ValueError(fmt::format("{}: no parameter '{}' (weight_ih, weight_hh, bias_ih, bias_hh)",
                               layer_, name));
}

Tensor RNNBase::time_major(const Tensor& input) const {
  if (!input.defined()) throw ValueError(fmt::format("{}: input is an undefined tensor", layer_));
  const char* layout = options_.batch_first ? "[batch, seq_len, input_size]" : "[seq_len, batch, input_size]";
  if (input.dim() != 2 && input.dim() != 3) {
    throw ShapeError(fmt::format("{}: input must be {} or unbatched [seq_len, input_size], got {}",
                                 layer_, layout, input.shape()));
  }
  if (input.shape().back() != input_size_) {
    throw ShapeError(fmt::format("{}: input {} has input_size {} but the layer was built with "
                                 "input_size={}", layer_, input.shape(), input.shape().back(),
                                 input_size_));
  }
  const Tensor& w = *weights_[0].w_ih;
  if (input.dtype() != w.dtype()) {
    throw DTypeError(fmt::format("{}: input is {} but the parameters are {}; convert one with .to()",
                                 layer_, input.dtype(), w.dtype()));
  }
  if (input.dim() == 2) return reshape(input, {input.shape()[0], 1, input_size_});
  return options_.batch_first ? transpose(input, 0, 1) : input;
}

Tensor RNNBase::batched_state(const char* what, const Tensor& state, const Tensor& input) const {
  const bool batched = input.dim() == 3;
  const std::int64_t layers = options_.num_layers;
  const std::int64_t batch = batched ? input.shape()[options_.batch_first ? 0 : 1] : 1;
  const Shape want = batched ? Shape{layers, batch, hidden_size_} : Shape{layers, hidden_size_};
  if (!state.defined() || state.shape() != want) {
    throw ShapeError(fmt::format("{}: {} must be {} ([num_layers, {}hidden_size] for input {}), got {}",
                                 layer_, what, want, batched ? "batch, " : "", input.shape(),
                                 state.defined() ? fmt::format("{}", state.shape()) : "undefined"));
  }
  if (state.dtype() != input.dtype()) {
    throw DTypeError(fmt::format("{}: {} is {} but input is {}; convert with .to()", layer_, what,
                                 state.dtype(), input.dtype()));
  }
  return batched ? state : reshape(state, {layers, 1, hidden_size_});
}

Tensor RNNBase::output_layout(const Tensor& out, const Tensor& input) const {
  if (input.dim() == 2) return reshape(out, {out.shape()[0], hidden_size_});
  return options_.batch_first ? transpose(out, 0, 1) : out;
}

Tensor RNNBase::state_layout(const Tensor& state, const Tensor& input) const {
  return input.dim() == 2 ? reshape(state, {options_.num_layers, hidden_size_}) : state;
}

namespace {

/// Runs the layers of an LSTM or GRU over x [T, B, in]: for each layer the input projection
/// of every step at once, then step(input_gates_t, hidden_gates_t, state) -> the new state,
/// whose first tensor is the step's output h. `state` holds each layer's initial state;
/// returns the last layer's outputs [T, B, H] and leaves each layer's final state in `state`.
template <class Step>
Tensor run_layers(Tensor x, std::vector<std::vector<Tensor>>& state,
                  const std::vector<std::tuple<Tensor, Tensor, Tensor, Tensor>>& weights,
                  double dropout_p, bool training, Step step) {
  for (std::size_t k = 0; k < weights.size(); ++k) {
    const auto& [w_ih, w_hh, b_ih, b_hh] = weights[k];
    const std::vector<Tensor> input_gates = unbind(linear(x, w_ih, b_ih), 0);
    std::vector<Tensor> outputs;
    outputs.reserve(input_gates.size());
    for (const Tensor& gi : input_gates) {
      state[k] = step(gi, linear(state[k][0], w_hh, b_hh), state[k]);
      outputs.push_back(state[k][0]);
    }
    x = stack(outputs, 0);
    if (training && dropout_p > 0 && k + 1 < weights.size()) x = dropout(x, dropout_p, true);
  }
  return x;
}

}  // namespace

LSTM::LSTM(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options)
    : RNNBase("LSTM", 4, input_size, hidden_size, options) {}

std::tuple<Tensor, std::tuple<Tensor, Tensor>> LSTM::forward(
    const Tensor& input, const std::optional<std::tuple<Tensor, Tensor>>& hx) {
  const Tensor x = time_major(input);
  const std::int64_t batch = x.shape()[1];
  std::vector<std::vector<Tensor>> state;
  std::vector<std::tuple<Tensor, Tensor, Tensor, Tensor>> weights;
  const Tensor h0 = hx ? batched_state("h0", std::get<0>(*hx), input) : Tensor();
  const Tensor c0 = hx ? batched_state("c0", std::get<1>(*hx), input) : Tensor();
  for (std::int64_t k = 0; k < options_.num_layers; ++k) {
    const Weights& w = weights_[static_cast<std::size_t>(k)];
    weights.emplace_back(*w.w_ih, *w.w_hh, *w.b_ih, *w.b_hh);
    const Tensor zero = hx ? Tensor() : zeros({batch, hidden_size_}, x.dtype());
    state.push_back({hx ? select(h0, 0, k) : zero, hx ? select(c0, 0, k) : zero});
  }
  const Tensor out = run_layers(x, state, weights, options_.dropout, is_training(),
                                [](const Tensor& gi, const Tensor& gh, const std::vector<Tensor>& hc) {
                                  const Tensor packed = fused_lstm_cell(gi, gh, hc[1]);
                                  return std::vector<Tensor>{select(packed, 0, 0), select(packed, 0, 1)};
                                });
  std::vector<Tensor> h_n, c_n;
  for (const auto& s : state) {
    h_n.push_back(s[0]);
    c_n.push_back(s[1]);
  }
  return {output_layout(out, input),
          {state_layout(stack(h_n, 0), input), state_layout(stack(c_n, 0), input)}};
}

GRU::GRU(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options)
    : RNNBase("GRU", 3, input_size, hidden_size, options) {}

std::tuple<Tensor, Tensor> GRU::forward(const Tensor& input, const std::optional<Tensor>& hx) {
  const Tensor x = time_major(input);
  const std::int64_t batch = x.shape()[1];
  std::vector<std::vector<Tensor>> state;
  std::vector<std::tuple<Tensor, Tensor, Tensor, Tensor>> weights;
  const Tensor h0 = hx ? batched_state("h0", *hx, input) : Tensor();
  for (std::int64_t k = 0; k < options_.num_layers; ++k) {
    const Weights& w = weights_[static_cast<std::size_t>(k)];
    weights.emplace_back(*w.w_ih, *w.w_hh, *w.b_ih, *w.b_hh);
    state.push_back({hx ? select(h0, 0, k) : zeros({batch, hidden_size_}, x.dtype())});
  }
  const Tensor out = run_layers(x, state, weights, options_.dropout, is_training(),
                                [](const Tensor& gi, const Tensor& gh, const std::vector<Tensor>& h) {
                                  return std::vector<Tensor>{fused_gru_cell(gi, gh, h[0])};
                                });
  std::vector<Tensor> h_n;
  for (const auto& s : state) h_n.push_back(s[0]);
  return {output_layout(out, input), state_layout(stack(h_n, 0), input)};
}

// ---- factories -------------------------------------------------------------------------------

std::shared_ptr<LSTMCell> lstm_cell(std::int64_t input_size, std::int64_t hidden_size, bool bias) {
  return std::make_shared<LSTMCell>(input_size, hidden_size, bias);
}
std::shared_ptr<GRUCell> gru_cell(std::int64_t input_size, std::int64_t hidden_size, bool bias) {
  return std::make_shared<GRUCell>(input_size, hidden_size, bias);
}
std::shared_ptr<LSTM> lstm(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options) {
  return std::make_shared<LSTM>(input_size, hidden_size, options);
}
std::shared_ptr<GRU> gru(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options) {
  return std::make_shared<GRU>(input_size, hidden_size, options);
}

}  // namespace tapegrad::nn
