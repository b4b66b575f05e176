// gru_cell, as torch.gru_cell (PyTorch 1.13), from two linear ops and one fused gate op:
//   a = x·W_ihᵀ + b_ih,  b = h·W_hhᵀ + b_hh   [*, 3H], in the order r, z, n
//   r = sigmoid(a_r + b_r),  z = sigmoid(a_z + b_z),  n = tanh(a_n + r·b_n)
//   h' = (1 - z)·n + z·h
// fused_gru_cell(input_gates, hidden_gates, h) is the element-wise part (PyTorch's
// _thnn_fused_gru_cell). The forward saves the workspace [*, 3H] = r, z, n, and h and the
// hidden gates (b_n); with g = grad_h' the VJP is one pass:
//   d_n = g·(1-z)·(1-n²),  d_z = g·(h-n)·z(1-z),  d_r = d_n·b_n·r(1-r),  grad_h = g·z,
//   grad_input_gates = [d_r, d_z, d_n],  grad_hidden_gates = [d_r, d_z, d_n·r].
// Recorded for create_graph, the gates are recomputed from the saved inputs as ops and the
// same formulas run as ops.
#include "ops/detail/math.hpp"
#include "ops/detail/rnn.hpp"
#include "ops/detail/samples.hpp"
#include "autograd/simd.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

template <class T>
TAPEGRAD_MULTIVERSION void gru_forward_rows(const T* __restrict gi, const T* __restrict gh,
                                            const T* __restrict h, T* __restrict out,
                                            T* __restrict work, std::int64_t begin,
                                            std::int64_t end, std::int64_t hidden) {
  for (std::int64_t row = begin; row < end; ++row) {
    const T* a = gi + row * 3 * hidden;
    const T* b = gh + row * 3 * hidden;
    T* w = work + row * 3 * hidden;
    for (std::int64_t j = 0; j < hidden; ++j) {
      const T r = detail::num::sigmoid(a[j] + b[j]);
      const T z = detail::num::sigmoid(a[hidden + j] + b[hidden + j]);
      const T n = detail::num::tanh(a[2 * hidden + j] + r * b[2 * hidden + j]);
      const std::int64_t k = row * hidden + j;
      out[k] = (T(1) - z) * n + z * h[k];
      w[j] = r;
      w[hidden + j] = z;
      w[2 * hidden + j] = n;
    }
  }
}

template <class T>
TAPEGRAD_MULTIVERSION void gru_backward_rows(const T* __restrict grad_out, const T* __restrict h,
                                             const T* __restrict gh, const T* __restrict work,
                                             T* __restrict grad_gi, T* __restrict grad_gh,
                                             T* __restrict grad_h, std::int64_t begin,
                                             std::int64_t end, std::int64_t hidden) {
  for (std::int64_t row = begin; row < end; ++row) {
    const T* w = work + row * 3 * hidden;
    const T* b = gh + row * 3 * hidden;
    T* da = grad_gi + row * 3 * hidden;
    T* db = grad_gh + row * 3 * hidden;
    for (std::int64_t j = 0; j < hidden; ++j) {
      const std::int64_t k = row * hidden + j;
      const T r = w[j], z = w[hidden + j], n = w[2 * hidden + j], g = grad_out[k];
      const T dn = g * (T(1) - z) * (T(1) - n * n);
      const T dz = g * (h[k] - n) * z * (T(1) - z);
      const T dr = dn * b[2 * hidden + j] * r * (T(1) - r);
      da[j] = dr;
      da[hidden + j] = dz;
      da[2 * hidden + j] = dn;
      db[j] = dr;
      db[hidden + j] = dz;
      db[2 * hidden + j] = dn * r;
      grad_h[k] = g * z;
    }
  }
}

struct FusedGruCellOp {
  static constexpr std::string_view name = "fused_gru_cell";

  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_fused_gates(name, 3, in[0], in[1], "h", in[2]);
    return in[2].meta();
  }

  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const std::int64_t hidden = in[2].shape().back();
    const std::int64_t rows = hidden > 0 ? in[2].numel() / hidden : 0;
    Tensor out = detail::make_tensor(infer(in));
    Tensor work = detail::make_tensor(Shape{rows, 3 * hidden}, in[0].dtype());
    detail::dispatch_floating(in[0].dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::for_gate_rows(rows, hidden, [&](std::int64_t begin, std::int64_t end) {
        gru_forward_rows<T>(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), out.data<T>(),
                            work.data<T>(), begin, end, hidden);
      });
    });
    ctx.save(work);
    ctx.save(in[2]);
    ctx.save(in[1]);
    ctx.save(in[0]);  // for the recorded VJP only
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const Tensor work = ctx.saved(0), h = ctx.saved(1), gh = ctx.saved(2);
    const std::int64_t hidden = h.shape().back(), rows = work.shape()[0];
    Tensor grad_gi = detail::make_tensor(ctx.input(0));
    Tensor grad_gh = detail::make_tensor(ctx.input(1));
    Tensor grad_h = detail::make_tensor(ctx.input(2));
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      detail::for_gate_rows(rows, hidden, [&](std::int64_t begin, std::int64_t end) {
        gru_backward_rows<T>(grad_out.data<T>(), h.data<T>(), gh.data<T>(), work.data<T>(),
                             grad_gi.data<T>(), grad_gh.data<T>(), grad_h.data<T>(), begin, end, hidden);
      });
    });
    return {ctx.needs_input_grad(0) ? grad_gi : Tensor(), ctx.needs_input_grad(1) ? grad_gh : Tensor(),
            ctx.needs_input_grad(2) ? grad_h : Tensor()};
  }

  // The same formulas as recorded ops, with the gates recomputed from the inputs.
  static std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) {
    const Tensor h = ctx.saved(1), gh = ctx.saved(2), gi = ctx.saved(3);
    const std::int64_t hidden = h.shape().back();
    const auto part = [&](const Tensor& t, std::int64_t k) { return narrow(t, -1, k * hidden, hidden); };
    const Tensor r = sigmoid(part(gi, 0) + part(gh, 0)), z = sigmoid(part(gi, 1) + part(gh, 1));
    const Tensor b_n = part(gh, 2);
    const Tensor n = tanh(part(gi, 2) + r * b_n);
    const Tensor dn = grad_out * (1.0 - z) * (1.0 - n * n);
    const Tensor dz = grad_out * (h - n) * z * (1.0 - z);
    const Tensor dr = dn * b_n * r * (1.0 - r);
    return {ctx.needs_input_grad(0) ? cat({dr, dz, dn}, -1) : Tensor(),
            ctx.needs_input_grad(1) ? cat({dr, dz, dn * r}, -1) : Tensor(),
            ctx.needs_input_grad(2) ? grad_out * z : Tensor()};
  }

  static std::vector<Sample> samples();
};

std::vector<Sample> FusedGruCellOp::samples() {
  using detail::sample_tensor;
  return {
      {"fused_gru_cell, batch 2, hidden 3",
       {sample_tensor({2, 9}, -2, 2, 1521), sample_tensor({2, 9}, -2, 2, 1522),
        sample_tensor({2, 3}, -1, 1, 1523)},
       [](const std::vector<Tensor>& in) { return fused_gru_cell(in[0], in[1], in[2]); }},
      {"gru_cell, batch 3, input 2, hidden 2, with biases",
       {sample_tensor({3, 2}, -1, 1, 1524), sample_tensor({3, 2}, -1, 1, 1525),
        sample_tensor({6, 2}, -1, 1, 1526), sample_tensor({6, 2}, -1, 1, 1527),
        sample_tensor({6}, -1, 1, 1528), sample_tensor({6}, -1, 1, 1529)},
       [](const std::vector<Tensor>& in) { return gru_cell(in[0], in[1], in[2], in[3], in[4], in[5]); }},
      {"gru_cell, unbatched, no biases",
       {sample_tensor({3}, -1, 1, 1530), sample_tensor({2}, -1, 1, 1531),
        sample_tensor({6, 3}, -1, 1, 1532), sample_tensor({6, 2}, -1, 1, 1533)},
       [](const std::vector<Tensor>& in) { return gru_cell(in[0], in[1], in[2], in[3]); }},
  };
}

}  // namespace

Tensor fused_gru_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& h) {
  return apply(FusedGruCellOp{}, {input_gates, hidden_gates, h});
}

Tensor gru_cell(const Tensor& input, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const Tensor& b_ih, const Tensor& b_hh) {
  detail::check_rnn_cell("gru_cell", 3, input, {{"h", &h}}, w_ih, w_hh, b_ih, b_hh);
  return fused_gru_cell(linear(input, w_ih, b_ih), linear(h, w_hh, b_hh), h);
}

TAPEGRAD_BUILTIN_OPS(gru_cell, FusedGruCellOp)

}  // namespace tapegrad
