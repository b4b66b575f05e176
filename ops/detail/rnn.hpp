#pragma once
// What the recurrent cells (ops/lstm_cell.cpp, ops/gru_cell.cpp) share: the argument checks of
// a cell (input, state, weights and biases, as torch.lstm_cell / torch.gru_cell check them)
// and of its fused gate op, whose gate pre-activations come from two linear ops.
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "ops/detail/elementwise.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad::detail {

/// A fused gate op's batch rows split across the threads: f(begin, end) for each thread's
/// rows, from kParallelGateElements hidden values on. Each value takes four or five
/// exponentials, so the split pays far below the element-wise ops' kParallelElements (an
/// LSTM of batch 64, hidden 256: 16,384 values, run on one thread while the other waited).
inline constexpr std::int64_t kParallelGateElements = std::int64_t{1} << 12;
template <class F>
void for_gate_rows(std::int64_t rows, std::int64_t hidden, F f) {
  parallel_ranges(rows, rows * hidden >= kParallelGateElements,
                  [&](std::int64_t begin, std::int64_t end, int) { f(begin, end); });
}

/// Throws unless t is defined, floating and of x's dtype.
inline void check_rnn_dtype(std::string_view op, std::string_view what, const Tensor& t,
                            const Tensor& x) {
  check_floating(op, t, what);
  if (t.dtype() != x.dtype()) {
    throw DTypeError(fmt::format("{}: {} is {} {} but input is {} {}; convert with .to()", op, what,
                                 t.dtype(), t.shape(), x.dtype(), x.shape()));
  }
}

/// Checks a cell's arguments: input [B, I] or [I]; w_ih [gates·H, I]; w_hh [gates·H, H];
/// b_ih, b_hh [gates·H] or undefined; each state (h, and c for the LSTM) [B, H], or [H] with an
/// unbatched input. Returns H.
inline std::int64_t check_rnn_cell(std::string_view op, std::int64_t gates, const Tensor& input,
                                   std::initializer_list<std::pair<std::string_view, const Tensor*>> states,
                                   const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                                   const Tensor& b_hh) {
  check_floating(op, input, "input");
  if (input.dim() != 1 && input.dim() != 2) {
    throw ShapeError(fmt::format("{}: input must be [batch, input_size] or [input_size] (1-D or "
                                 "2-D), got {}", op, input.shape()));
  }
  check_rnn_dtype(op, "w_ih", w_ih, input);
  check_rnn_dtype(op, "w_hh", w_hh, input);
  if (w_ih.dim() != 2 || w_ih.shape()[0] % gates != 0 || w_ih.shape()[0] == 0) {
    throw ShapeError(fmt::format("{}: w_ih must be [{}·hidden_size, input_size], got {}", op, gates,
                                 w_ih.shape()));
  }
  const std::int64_t hidden = w_ih.shape()[0] / gates;
  if (input.shape().back() != w_ih.shape()[1]) {
    throw ShapeError(fmt::format("{}: input {} has input_size {} but w_ih {} expects {}", op,
                                 input.shape(), input.shape().back(), w_ih.shape(), w_ih.shape()[1]));
  }
  if (w_hh.shape() != Shape{gates * hidden, hidden}) {
    throw ShapeError(fmt::format("{}: w_hh must be [{}, {}] ({}·hidden_size, hidden_size, with "
                                 "hidden_size={} from w_ih {}), got {}", op, gates * hidden,
                                 hidden, gates, hidden, w_ih.shape(), w_hh.shape()));
  }
  for (const auto& [what, bias] : {std::pair<std::string_view, const Tensor*>{"b_ih", &b_ih},
                                   std::pair<std::string_view, const Tensor*>{"b_hh", &b_hh}}) {
    if (!bias->defined()) continue;
    check_rnn_dtype(op, what, *bias, input);
    if (bias->shape() != Shape{gates * hidden}) {
      throw ShapeError(fmt::format("{}: {} must be [{}] ({}·hidden_size), got {}", op, what,
                                   gates * hidden, gates, bias->shape()));
    }
  }
  const Shape state = input.dim() == 2 ? Shape{input.shape()[0], hidden} : Shape{hidden};
  for (const auto& [what, t] : states) {
    check_rnn_dtype(op, what, *t, input);
    if (t->shape() != state) {
      throw ShapeError(fmt::format("{}: {} must be {} ({}hidden_size={}) for input {}, got {}", op,
                                   what, state, input.dim() == 2 ? "batch, " : "", hidden,
                                   input.shape(), t->shape()));
    }
  }
  return hidden;
}

/// Checks a fused gate op's arguments: input_gates and hidden_gates [*, gates·H] alike (rank 1
/// or 2), state [*, H]. Returns H.
inline std::int64_t check_fused_gates(std::string_view op, std::int64_t gates,
                                      const Tensor& input_gates, const Tensor& hidden_gates,
                                      std::string_view state_name, const Tensor& state) {
  check_floating(op, input_gates, "input_gates");
  check_rnn_dtype(op, "hidden_gates", hidden_gates, input_gates);
  check_rnn_dtype(op, state_name, state, input_gates);
  const Shape& shape = input_gates.shape();
  if ((shape.size() != 1 && shape.size() != 2) || shape.back() % gates != 0) {
    throw ShapeError(fmt::format("{}: input_gates must be [batch, {}·hidden_size] or [{}·hidden_size], "
                                 "got {}", op, gates, gates, shape));
  }
  if (hidden_gates.shape() != shape) {
    throw ShapeError(fmt::format("{}: hidden_gates must have input_gates' shape {}, got {}", op,
                                 shape, hidden_gates.shape()));
  }
  const std::int64_t hidden = shape.back() / gates;
  Shape want = shape;
  want[want.size() - 1] = hidden;
  if (state.shape() != want) {
    throw ShapeError(fmt::format("{}: {} must be {} for input_gates {}, got {}", op, state_name, want,
                                 shape, state.shape()));
  }
  return hidden;
}

}  // namespace tapegrad::detail
