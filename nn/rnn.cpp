// The recurrent layers: LSTMCell and GRUCell (one step), LSTM and GRU (layers unrolled over
// time on the tape), with torch.nn's parameter names, layouts and initialisation. Each layer
// is one linear over the sequence (the input projection), then per step one linear (the
// hidden projection) and one fused gate op (tapegrad::fused_lstm_cell, fused_gru_cell).
#include <array>
#include <cmath>
#include <string>

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

/// Registers one recurrent layer's parameters with torch.nn's names (+ `suffix`), shapes and
/// init, in its order: weight_ih [gates·H, input_size], weight_hh [gates·H, H], and with
/// `bias` bias_ih, bias_hh [gates·H] (else both are `none`). `reg(name, tensor)` is the
/// module's register_parameter. Returns {weight_ih, weight_hh, bias_ih, bias_hh}.
template <class Register>
std::array<Tensor*, 4> gate_parameters(Register reg, std::int64_t gates, std::int64_t input_size,
                                       std::int64_t hidden_size, bool bias,
                                       const std::string& suffix, Tensor* none) {
  const auto param = [&](const char* name, const Shape& shape) {
    return uniform_init(reg(name + suffix, empty(shape)), hidden_size);
  };
  const std::int64_t rows = gates * hidden_size;
  std::array<Tensor*, 4> p{param("weight_ih", {rows, input_size}),
                           param("weight_hh", {rows, hidden_size}), none, none};
  if (bias) {
    p[2] = param("bias_ih", {rows});
    p[3] = param("bias_hh", {rows});
  }
  return p;
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
  const auto reg = [this](const std::string& name, Tensor t) -> Tensor& {
    return register_parameter(name, std::move(t));
  };
  const auto p = gate_parameters(reg, 4, input_size, hidden_size, bias, "", &none_);
  weight_ih_ = p[0];
  weight_hh_ = p[1];
  bias_ih_ = p[2];
  bias_hh_ = p[3];
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
  const auto reg = [this](const std::string& name, Tensor t) -> Tensor& {
    return register_parameter(name, std::move(t));
  };
  const auto p = gate_parameters(reg, 3, input_size, hidden_size, bias, "", &none_);
  weight_ih_ = p[0];
  weight_hh_ = p[1];
  bias_ih_ = p[2];
  bias_hh_ = p[3];
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
  const auto reg = [this](const std::string& name, Tensor t) -> Tensor& {
    return register_parameter(name, std::move(t));
  };
  for (std::int64_t k = 0; k < options.num_layers; ++k) {
    const auto p = gate_parameters(reg, gates, k == 0 ? input_size : hidden_size, hidden_size,
                                   options.bias, fmt::format("_l{}", k), &none_);
    weights_.push_back({p[0], p[1], p[2], p[3]});
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

void RNNBase::check_input(const Tensor& input) const {
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
  if (input.shape()[input.dim() == 3 && options_.batch_first ? 1 : 0] == 0) {
    throw ShapeError(fmt::format("{}: input {} has seq_len 0", layer_, input.shape()));
  }
  const Tensor& w = *weights_[0].w_ih;
  if (input.dtype() != w.dtype()) {
    throw DTypeError(fmt::format("{}: input is {} but the parameters are {}; convert one with .to()",
                                 layer_, input.dtype(), w.dtype()));
  }
}

void RNNBase::check_state(const char* what, const Tensor& state, const Tensor& input) const {
  const bool batched = input.dim() == 3;
  const std::int64_t layers = options_.num_layers;
  const Shape want = batched ? Shape{layers, input.shape()[options_.batch_first ? 0 : 1], hidden_size_}
                             : Shape{layers, hidden_size_};
  if (!state.defined() || state.shape() != want) {
    throw ShapeError(fmt::format("{}: {} must be {} ([num_layers, {}hidden_size] for input {}), got {}",
                                 layer_, what, want, batched ? "batch, " : "", input.shape(),
                                 state.defined() ? fmt::format("{}", state.shape()) : "undefined"));
  }
  if (state.dtype() != input.dtype()) {
    throw DTypeError(fmt::format("{}: {} is {} but input is {}; convert with .to()", layer_, what,
                                 state.dtype(), input.dtype()));
  }
}

Tensor RNNBase::zero_state(const Tensor& input) const {
  return zeros(input.dim() == 3 ? Shape{input.shape()[options_.batch_first ? 0 : 1], hidden_size_}
                                : Shape{hidden_size_},
               input.dtype());
}

// Layer outermost, as ATen's RNN: each layer's input projection is one linear over the whole
// sequence ([T, B, I] -> [T, B, gates·H]) and step t reads its block with a select, whose
// gradient backward adds into the projection's at that block (a view op); per step only the
// hidden projection and the fused gates run; LSTM's gates add the two projections, so its
// bias_hh is added once, with bias_ih, to the input projection (one bias pass and one bias
// gradient per layer, not per step). Dropout (training, between layers) applies to a
// layer's whole output sequence, as PyTorch's. batch_first runs time-major in between.
Tensor RNNBase::unroll(const Tensor& input, std::vector<std::vector<Tensor>>& state, const Step& step,
                       bool fold_hidden_bias) {
  const bool batch_first = input.dim() == 3 && options_.batch_first;
  Tensor seq = batch_first ? transpose(input, 0, 1) : input;
  const std::int64_t steps = seq.shape()[0];
  const bool drop = is_training() && options_.dropout > 0;
  for (std::size_t k = 0; k < weights_.size(); ++k) {
    const Weights& w = weights_[k];
    const bool fold = fold_hidden_bias && w.b_hh->defined();
    const Tensor input_gates = linear(seq, *w.w_ih, fold ? *w.b_ih + *w.b_hh : *w.b_ih);
    const Tensor& hidden_bias = fold ? none_ : *w.b_hh;
    std::vector<Tensor> outputs;
    outputs.reserve(static_cast<std::size_t>(steps));
    for (std::int64_t t = 0; t < steps; ++t) {
      state[k] = step(select(input_gates, 0, t), linear(state[k][0], *w.w_hh, hidden_bias), state[k]);
      outputs.push_back(state[k][0]);
    }
    seq = stack(outputs, 0);
    if (drop && k + 1 < weights_.size()) seq = dropout(seq, options_.dropout, true);
  }
  return batch_first ? transpose(seq, 0, 1) : seq;
}

LSTM::LSTM(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options)
    : RNNBase("LSTM", 4, input_size, hidden_size, options) {}

std::tuple<Tensor, std::tuple<Tensor, Tensor>> LSTM::forward(
    const Tensor& input, const std::optional<std::tuple<Tensor, Tensor>>& hx) {
  check_input(input);
  if (hx) {
    check_state("h0", std::get<0>(*hx), input);
    check_state("c0", std::get<1>(*hx), input);
  }
  std::vector<std::vector<Tensor>> state;
  const Tensor zero = hx ? Tensor() : zero_state(input);
  for (std::int64_t k = 0; k < options().num_layers; ++k) {
    state.push_back(hx ? std::vector<Tensor>{select(std::get<0>(*hx), 0, k), select(std::get<1>(*hx), 0, k)}
                       : std::vector<Tensor>{zero, zero});
  }
  const Tensor out = unroll(input, state, [](const Tensor& gi, const Tensor& gh, const std::vector<Tensor>& hc) {
    const Tensor packed = fused_lstm_cell(gi, gh, hc[1]);
    return std::vector<Tensor>{select(packed, 0, 0), select(packed, 0, 1)};
  }, true);
  std::vector<Tensor> h_n, c_n;
  for (const auto& s : state) {
    h_n.push_back(s[0]);
    c_n.push_back(s[1]);
  }
  return {out, {stack(h_n, 0), stack(c_n, 0)}};
}

GRU::GRU(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options)
    : RNNBase("GRU", 3, input_size, hidden_size, options) {}

std::tuple<Tensor, Tensor> GRU::forward(const Tensor& input, const std::optional<Tensor>& hx) {
  check_input(input);
  if (hx) check_state("h0", *hx, input);
  std::vector<std::vector<Tensor>> state;
  for (std::int64_t k = 0; k < options().num_layers; ++k) {
    state.push_back({hx ? select(*hx, 0, k) : zero_state(input)});
  }
  const Tensor out = unroll(input, state, [](const Tensor& gi, const Tensor& gh, const std::vector<Tensor>& h) {
    return std::vector<Tensor>{fused_gru_cell(gi, gh, h[0])};
  });
  std::vector<Tensor> h_n;
  for (const auto& s : state) h_n.push_back(s[0]);
  return {out, stack(h_n, 0)};
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
