// lstm_cell, as torch.lstm_cell (PyTorch 1.13), from two linear ops and one fused gate op:
//   gates = (x·W_ihᵀ + b_ih) + (h·W_hhᵀ + b_hh)   [*, 4H], in the order i, f, g, o
//   i, f, o = sigmoid(gates_i, gates_f, gates_o),  g = tanh(gates_g)
//   c' = f·c + i·g,  h' = o·tanh(c')
// fused_lstm_cell(input_gates, hidden_gates, c) is the element-wise part (PyTorch's
// _thnn_fused_lstm_cell). Its one output is [2, *, H]: h' then c' (an op has one output;
// lstm_cell selects the two). The forward saves the workspace [*, 5H] = i, f, g, o, tanh(c')
// and c; with gh = grad_h', gc = grad_c' and gc_total = gc + gh·o·(1 - tanh²(c')) the VJP is
// one pass:
//   d_i = gc_total·g·i(1-i),  d_f = gc_total·c·f(1-f),  d_g = gc_total·i·(1-g²),
//   d_o = gh·tanh(c')·o(1-o),  grad_c = gc_total·f,
// and both gate inputs get the same [d_i, d_f, d_g, d_o]. Recorded for create_graph, the gates
// are recomputed from the saved inputs as ops and the same formulas run as ops.
#include "ops/detail/rnn.hpp"
#include "ops/detail/math.hpp"
#include "ops/detail/samples.hpp"
#include "autograd/simd.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

template <class T>
TAPEGRAD_MULTIVERSION void lstm_forward_rows(const T* __restrict gi, const T* __restrict gh,
                                             const T* __restrict c, T* __restrict out_h,
                                             T* __restrict out_c, T* __restrict work,
                                             std::int64_t begin, std::int64_t end, std::int64_t hidden) {
  for (std::int64_t r = begin; r < end; ++r) {
    const T* a = gi + r * 4 * hidden;
    const T* b = gh + r * 4 * hidden;
    T* w = work + r * 5 * hidden;
    for (std::int64_t j = 0; j < hidden; ++j) {
      const T i = detail::num::sigmoid(a[j] + b[j]);
      const T f = detail::num::sigmoid(a[hidden + j] + b[hidden + j]);
      const T g = detail::num::tanh(a[2 * hidden + j] + b[2 * hidden + j]);
      const T o = detail::num::sigmoid(a[3 * hidden + j] + b[3 * hidden + j]);
      const T cy = f * c[r * hidden + j] + i * g;
      const T tc = detail::num::tanh(cy);
      out_c[r * hidden + j] = cy;
      out_h[r * hidden + j] = o * tc;
      w[j] = i;
      w[hidden + j] = f;
      w[2 * hidden + j] = g;
      w[3 * hidden + j] = o;
      w[4 * hidden + j] = tc;
    }
  }
}

template <class T>
TAPEGRAD_MULTIVERSION void lstm_backward_rows(const T* __restrict grad_h,
                                              const T* __restrict grad_c_out, const T* __restrict c,
                                              const T* __restrict work, T* __restrict grad_gates,
                                              T* __restrict grad_c, std::int64_t begin,
                                              std::int64_t end, std::int64_t hidden) {
  for (std::int64_t r = begin; r < end; ++r) {
    const T* w = work + r * 5 * hidden;
    T* d = grad_gates + r * 4 * hidden;
    for (std::int64_t j = 0; j < hidden; ++j) {
      const std::int64_t k = r * hidden + j;
      const T i = w[j], f = w[hidden + j], g = w[2 * hidden + j], o = w[3 * hidden + j],
              tc = w[4 * hidden + j];
      const T gc = grad_c_out[k] + grad_h[k] * o * (T(1) - tc * tc);
      d[j] = gc * g * i * (T(1) - i);
      d[hidden + j] = gc * c[k] * f * (T(1) - f);
      d[2 * hidden + j] = gc * i * (T(1) - g * g);
      d[3 * hidden + j] = grad_h[k] * tc * o * (T(1) - o);
      grad_c[k] = gc * f;
    }
  }
}

struct FusedLstmCellOp {
  static constexpr std::string_view name = "fused_lstm_cell";

  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_fused_gates(name, 4, in[0], in[1], "c", in[2]);
    Shape out{2};
    for (const std::int64_t d : in[2].shape()) out.push_back(d);
    return {out, in[0].dtype()};
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const std::int64_t hidden = in[2].shape().back();
    const std::int64_t rows = hidden > 0 ? in[2].numel() / hidden : 0;
    Tensor out = detail::make_tensor(infer(in));
    Tensor work = detail::make_tensor(Shape{rows, 5 * hidden}, in[0].dtype());
    detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::for_gate_rows(rows, hidden, [&](std::int64_t begin, std::int64_t end) {
        lstm_forward_rows<T>(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), out.data<T>(),
                             out.data<T>() + rows * hidden, work.data<T>(), begin, end, hidden);
      });
    });
    ctx.save(work);
    ctx.save(in[2]);
    ctx.save(in[0]);  // the inputs, for the recorded VJP only
    ctx.save(in[1]);
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const Tensor work = ctx.saved(0), c = ctx.saved(1);
    const std::int64_t hidden = c.shape().back(), rows = work.shape()[0];
    Tensor grad_gates = detail::make_tensor(ctx.input(0));
    Tensor grad_c = detail::make_tensor(ctx.input(2));
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      detail::for_gate_rows(rows, hidden, [&](std::int64_t begin, std::int64_t end) {
        lstm_backward_rows<T>(g, g + rows * hidden, c.data<T>(), work.data<T>(), grad_gates.data<T>(),
                              grad_c.data<T>(), begin, end, hidden);
      });
    });
    return {ctx.needs_input_grad(0) ? grad_gates : Tensor(),
            ctx.needs_input_grad(1) ? grad_gates : Tensor(),
            ctx.needs_input_grad(2) ? grad_c : Tensor()};
  }

  // The same formulas as recorded ops, with the gates recomputed from the inputs, so that
  // how they depend on the inputs is part of the second derivative.
  static std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) {
    const Tensor c = ctx.saved(1);
    const std::int64_t hidden = c.shape().back();
    const Tensor gates = ctx.saved(2) + ctx.saved(3);
    const auto part = [&](std::int64_t k) { return narrow(gates, -1, k * hidden, hidden); };
    const Tensor i = sigmoid(part(0)), f = sigmoid(part(1)), g = tanh(part(2)), o = sigmoid(part(3));
    const Tensor tc = tanh(f * c + i * g);
    const Tensor grad_h = select(grad_out, 0, 0);
    const Tensor gc = select(grad_out, 0, 1) + grad_h * o * (1.0 - tc * tc);
    const Tensor grad_gates = cat({gc * g * i * (1.0 - i), gc * c * f * (1.0 - f),
                                   gc * i * (1.0 - g * g), grad_h * tc * o * (1.0 - o)},
                                  -1);
    return {ctx.needs_input_grad(0) ? grad_gates : Tensor(),
            ctx.needs_input_grad(1) ? grad_gates : Tensor(),
            ctx.needs_input_grad(2) ? gc * f : Tensor()};
  }

  static std::vector<Sample> samples();
};

std::vector<Sample> FusedLstmCellOp::samples() {
  using detail::sample_tensor;
  return {
      {"fused_lstm_cell, batch 2, hidden 3",
       {sample_tensor({2, 12}, -2, 2, 1501), sample_tensor({2, 12}, -2, 2, 1502),
        sample_tensor({2, 3}, -1, 1, 1503)},
       [](const std::vector<Tensor>& in) { return fused_lstm_cell(in[0], in[1], in[2]); }},
      {"lstm_cell, batch 3, input 2, hidden 2, with biases",
       {sample_tensor({3, 2}, -1, 1, 1504), sample_tensor({3, 2}, -1, 1, 1505),
        sample_tensor({3, 2}, -1, 1, 1506), sample_tensor({8, 2}, -1, 1, 1507),
        sample_tensor({8, 2}, -1, 1, 1508), sample_tensor({8}, -1, 1, 1509),
        sample_tensor({8}, -1, 1, 1510)},
       [](const std::vector<Tensor>& in) {
         const auto [h, c] = lstm_cell(in[0], {in[1], in[2]}, in[3], in[4], in[5], in[6]);
         return stack({h, c});
       }},
      {"lstm_cell, unbatched, no biases",
       {sample_tensor({3}, -1, 1, 1511), sample_tensor({2}, -1, 1, 1512),
        sample_tensor({2}, -1, 1, 1513), sample_tensor({8, 3}, -1, 1, 1514),
        sample_tensor({8, 2}, -1, 1, 1515)},
       [](const std::vector<Tensor>& in) {
         const auto [h, c] = lstm_cell(in[0], {in[1], in[2]}, in[3], in[4]);
         return stack({h, c});
       }},
  };
}

}  // namespace

Tensor fused_lstm_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& c) {
  return apply(FusedLstmCellOp{}, {input_gates, hidden_gates, c});
}

std::tuple<Tensor, Tensor> lstm_cell(const Tensor& input, const std::tuple<Tensor, Tensor>& hx,
                                    const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                                    const Tensor& b_hh) {
  const auto& [h, c] = hx;
  detail::check_rnn_cell("lstm_cell", 4, input, {{"h", &h}, {"c", &c}}, w_ih, w_hh,
                         b_ih, b_hh);
  const Tensor hc = fused_lstm_cell(linear(input, w_ih, b_ih), linear(h, w_hh, b_hh), c);
  return {select(hc, 0, 0), select(hc, 0, 1)};
}

TAPEGRAD_BUILTIN_OPS(lstm_cell, FusedLstmCellOp)

}  // namespace tapegrad
