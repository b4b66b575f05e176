// matmul and linear, on the GEMM interface.
//   matmul: C = A·B,  grad_A = grad_C·Bᵀ,  grad_B = Aᵀ·grad_C
//     A [M, K] with B [K, N]; batched A [B, M, K] with B [B, K, N], or with B [K, N]
//     shared by the batch (its gradient then sums over the batch).
//   linear: y = x·Wᵀ + b with x [..., in], W [out, in], b [out] or undefined;
//     grad_x = grad_y·W, grad_W = grad_yᵀ·x (summed over all leading dims),
//     grad_b = grad_y summed over all leading dims.
#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/gemm.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// out[b] = op(a[b]) · op(x[b]) for each batch entry; a stride of 0 shares one matrix.
/// With accumulate, the products are summed into out (out must have one matrix then).
template <class T>
void batched_gemm(bool ta, bool tb, std::int64_t batch, std::int64_t m, std::int64_t n,
                  std::int64_t k, const T* a, std::int64_t a_stride, const T* b,
                  std::int64_t b_stride, T* c, std::int64_t c_stride, bool accumulate) {
  const std::int64_t lda = ta ? m : k;
  const std::int64_t ldb = tb ? k : n;
  for (std::int64_t i = 0; i < batch; ++i) {
    const T beta = accumulate && i > 0 ? T(1) : T(0);
    detail::gemm(ta, tb, m, n, k, T(1), a + i * a_stride, lda, b + i * b_stride, ldb, beta,
                 c + i * c_stride, n);
  }
  if (batch == 0 && accumulate) std::fill_n(c, m * n, T(0));  // an empty sum
}

struct Matmul {
  static constexpr std::string_view name = "matmul";
  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& a = in[0];
    const Tensor& b = in[1];
    detail::check_same_floating(name, a, b);
    const bool ok_rank = (a.dim() == 2 && b.dim() == 2) || (a.dim() == 3 && (b.dim() == 2 || b.dim() == 3));
    if (!ok_rank) {
      throw ShapeError(fmt::format("matmul: expects [M, K]·[K, N], [B, M, K]·[B, K, N] or "
                                   "[B, M, K]·[K, N], got {} and {}", a.shape(), b.shape()));
    }
    const std::int64_t k_a = a.shape().back();
    const std::int64_t k_b = b.shape()[b.dim() - 2];
    if (k_a != k_b) {
      throw ShapeError(fmt::format("matmul: inner sizes differ: {}·{} ({} vs {})", a.shape(),
                                   b.shape(), k_a, k_b));
    }
    if (a.dim() == 3 && b.dim() == 3 && a.shape()[0] != b.shape()[0]) {
      throw ShapeError(fmt::format("matmul: batch sizes differ: {}·{}", a.shape(), b.shape()));
    }
    Shape out = a.shape();
    out[out.size() - 1] = b.shape().back();
    return {out, a.dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& a = in[0];
    const Tensor& b = in[1];
    ctx.save(ctx.needs_input_grad(1) ? a : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? b : Tensor());
    Tensor out = detail::make_tensor(infer(in));
    const std::int64_t batch = a.dim() == 3 ? a.shape()[0] : 1;
    const std::int64_t m = a.shape()[a.dim() - 2], k = a.shape().back(), n = b.shape().back();
    detail::dispatch_floating(a.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      batched_gemm<T>(false, false, batch, m, n, k, a.data<T>(), m * k, b.data<T>(),
                      b.dim() == 3 ? k * n : 0, out.data<T>(), m * n, false);
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& ma = ctx.input(0);
    const TensorMeta& mb = ctx.input(1);
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const std::int64_t batch = ma.shape.size() == 3 ? ma.shape[0] : 1;
    const std::int64_t m = ma.shape[ma.shape.size() - 2], k = ma.shape.back(), n = mb.shape.back();
    const bool shared_b = mb.shape.size() == 2;
    Tensor grad_a, grad_b;
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      if (ctx.needs_input_grad(0)) {  // grad_A[b] = grad_C[b]·B[b]ᵀ
        grad_a = detail::make_tensor(ma);
        batched_gemm<T>(false, true, batch, m, k, n, grad_out.data<T>(), m * n,
                        ctx.saved(1).data<T>(), shared_b ? 0 : k * n, grad_a.data<T>(), m * k, false);
      }
      if (ctx.needs_input_grad(1)) {  // grad_B[b] = A[b]ᵀ·grad_C[b], summed when B is shared
        grad_b = detail::make_tensor(mb);
        batched_gemm<T>(true, false, batch, k, n, m, ctx.saved(0).data<T>(), m * k,
                        grad_out.data<T>(), m * n, grad_b.data<T>(), shared_b ? 0 : k * n, shared_b);
      }
    });
    return {grad_a, grad_b};
  }
  // Recorded for create_graph: the same products written with ops. A B shared by a
  // batched A gets Aᵀ·grad_C over all rows of the batch at once.
  static std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) {
    const Shape& sa = ctx.input(0).shape;
    Tensor grad_a, grad_b;
    if (ctx.needs_input_grad(0)) grad_a = matmul(grad_out, transpose(ctx.saved(1), -2, -1));
    if (ctx.needs_input_grad(1)) {
      const Tensor a = ctx.saved(0);
      if (sa.size() == 3 && ctx.input(1).shape.size() == 2) {
        const std::int64_t rows = sa[0] * sa[1];
        grad_b = matmul(transpose(reshape(a, {rows, sa[2]}), 0, 1),
                        reshape(grad_out, {rows, grad_out.shape().back()}));
      } else {
        grad_b = matmul(transpose(a, -2, -1), grad_out);
      }
    }
    return {grad_a, grad_b};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto call = [](const auto& in) { return matmul(in[0], in[1]); };
    return {{"[3, 4]·[4, 5]", {sample_tensor({3, 4}, -1, 1, 61), sample_tensor({4, 5}, -1, 1, 62)}, call},
            {"[2, 3, 4]·[2, 4, 2]", {sample_tensor({2, 3, 4}, -1, 1, 63), sample_tensor({2, 4, 2}, -1, 1, 64)}, call},
            {"[2, 3, 4]·[4, 5] shared", {sample_tensor({2, 3, 4}, -1, 1, 65), sample_tensor({4, 5}, -1, 1, 66)}, call}};
  }
};

/// The number of rows of x [..., in]: the product of all dims but the last.
std::int64_t leading_rows(const Shape& x) {
  std::int64_t rows = 1;
  for (std::size_t d = 0; d + 1 < x.size(); ++d) rows *= x[d];
  return rows;
}

struct Linear {
  static constexpr std::string_view name = "linear";
  TensorMeta infer(std::span<const Tensor> in) const {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    const Tensor& b = in[2];
    detail::check_same_floating(name, x, w);
    if (w.dim() != 2 || x.dim() < 1) {
      throw ShapeError(fmt::format("linear: expects x [..., in] and weight [out, in], got x {} "
                                   "and weight {}", x.shape(), w.shape()));
    }
    if (x.shape().back() != w.shape()[1]) {
      throw ShapeError(fmt::format("linear: x has {} features (shape {}) but weight {} expects {}",
                                   x.shape().back(), x.shape(), w.shape(), w.shape()[1]));
    }
    if (b.defined()) {
      detail::check_same_floating(name, x, b);
      if (b.dim() != 1 || b.shape()[0] != w.shape()[0]) {
        throw ShapeError(fmt::format("linear: bias must be [{}] for weight {}, got {}",
                                     w.shape()[0], w.shape(), b.shape()));
      }
    }
    Shape out = x.shape();
    out[out.size() - 1] = w.shape()[0];
    return {out, x.dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    const Tensor& b = in[2];
    ctx.save(ctx.needs_input_grad(1) ? x : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? w : Tensor());
    Tensor out = detail::make_tensor(infer(in));
    const std::int64_t rows = leading_rows(x.shape());
    const std::int64_t fin = w.shape()[1], fout = w.shape()[0];
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      T* y = out.data<T>();
      T beta = 0;
      if (b.defined()) {  // start from the bias in every row, then add x·Wᵀ
        for (std::int64_t r = 0; r < rows; ++r) std::copy_n(b.data<T>(), fout, y + r * fout);
        beta = 1;
      }
      detail::gemm(false, true, rows, fout, fin, T(1), x.data<T>(), fin, w.data<T>(), fin, beta, y, fout);
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& mx = ctx.input(0);
    const TensorMeta& mw = ctx.input(1);
    const std::int64_t fin = mw.shape[1], fout = mw.shape[0];
    const std::int64_t rows = leading_rows(mx.shape);
    Tensor grad_x, grad_w, grad_b;
    if (is_grad_enabled()) {  // recorded (create_graph): the same products as ops
      const Tensor g = reshape(grad_out, {rows, fout});
      if (ctx.needs_input_grad(0)) grad_x = reshape(matmul(g, ctx.saved(1)), mx.shape);
      if (ctx.needs_input_grad(1)) {
        grad_w = matmul(transpose(g, 0, 1), reshape(ctx.saved(0), {rows, fin}));
      }
      if (ctx.needs_input_grad(2)) grad_b = sum(g, {0});
      return {grad_x, grad_w, grad_b};
    }
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      if (ctx.needs_input_grad(0)) {  // grad_x = grad_y·W
        grad_x = detail::make_tensor(mx);
        detail::gemm(false, false, rows, fin, fout, T(1), g, fout, ctx.saved(1).data<T>(), fin,
                     T(0), grad_x.data<T>(), fin);
      }
      if (ctx.needs_input_grad(1)) {  // grad_W = grad_yᵀ·x
        grad_w = detail::make_tensor(mw);
        detail::gemm(true, false, fout, fin, rows, T(1), g, fout, ctx.saved(0).data<T>(), fin,
                     T(0), grad_w.data<T>(), fin);
      }
      if (ctx.needs_input_grad(2)) grad_b = sum_rows<T>(g, rows, fout, ctx.input(2));
    });
    return {grad_x, grad_w, grad_b};
  }
  template <class T>
  static Tensor sum_rows(const T* g, std::int64_t rows, std::int64_t cols, const TensorMeta& meta) {
    Tensor out = zeros(meta.shape, meta.dtype);
    T* p = out.data<T>();
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) p[c] += g[r * cols + c];
    }
    return out;
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    return {{"x [4, 3], W [5, 3], b [5]",
             {sample_tensor({4, 3}, -1, 1, 71), sample_tensor({5, 3}, -1, 1, 72), sample_tensor({5}, -1, 1, 73)},
             [](const auto& in) { return linear(in[0], in[1], in[2]); }},
            {"x [2, 3, 4], W [2, 4], no bias",
             {sample_tensor({2, 3, 4}, -1, 1, 74), sample_tensor({2, 4}, -1, 1, 75)},
             [](const auto& in) { return linear(in[0], in[1]); }}};
  }
};

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) { return apply(Matmul{}, {a, b}); }
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return apply(Linear{}, {x, weight, bias});
}

TAPEGRAD_BUILTIN_OPS(matmul, Matmul, Linear)

}  // namespace tapegrad
