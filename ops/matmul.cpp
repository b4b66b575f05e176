// matmul and linear, on the GEMM interface.
//   matmul: C = A·B,  grad_A = grad_C·Bᵀ,  grad_B = Aᵀ·grad_C, as torch.matmul:
//     A [..., M, K] with B [..., K, N] -> [..., M, N], the batch dims (all but the last two)
//     broadcast as NumPy does: [2, 1, 3, 4]·[5, 4, 6] -> [2, 5, 3, 6]. A 1-D A is [1, K] and a
//     1-D B is [K, 1], that 1 then left out of the result: [K]·[K] -> [] (a dot product),
//     [M, K]·[K] -> [M], [K]·[..., K, N] -> [..., N]. 0-dim operands are an error (PyTorch's).
//     An operand broadcast over batch entries gets the sum of their gradients.
//   linear: y = x·Wᵀ + b with x [..., in], W [out, in], b [out] or undefined;
//     grad_x = grad_y·W, grad_W = grad_yᵀ·x (summed over all leading dims),
//     grad_b = grad_y summed over all leading dims.
#include <vector>

#include <omp.h>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/kernels/gemm.hpp"
#include "ops/registration.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace {

/// matmul's geometry and its schedule of GEMM calls, from the operands' shapes alone. Each call multiplies a [rows, k] block of A by a [k, n] block of
/// B into a [rows, n] block of C. When B has one matrix and A is not broadcast (2-D·2-D,
/// [..., M, K]·[K, N], any·1-D), A's batch folds into the rows of a single call.
struct MatmulPlan {
  Shape a_batch, b_batch, batch;  // batch: the broadcast of both
  std::int64_t m = 1, k = 1, n = 1;
  bool a_vector = false, b_vector = false;
  bool fold = false;
  std::int64_t rows = 1;                   // rows of A per call: m, or batch·m when folded
  bool accumulate_a = false, accumulate_b = false;  // an operand broadcast over the batch

  MatmulPlan() = default;
  MatmulPlan(const Shape& a, const Shape& b) {
    if (a.empty() || b.empty()) {
      throw ShapeError(fmt::format("matmul: both operands need at least 1 dim, got {} and {} "
                                   "(scale by a 0-dim tensor with *)", a, b));
    }
    a_vector = a.size() == 1;
    b_vector = b.size() == 1;
    const std::size_t a_inner = a.size() - 1;
    const std::size_t b_inner = b_vector ? 0 : b.size() - 2;
    k = a[a_inner];
    if (b[b_inner] != k) {
      throw ShapeError(fmt::format("matmul: inner sizes differ: {}·{} (dim {} of the first is {}, "
                                   "dim {} of the second is {})", a, b, a_inner, k, b_inner,
                                   b[b_inner]));
    }
    m = a_vector ? 1 : a[a.size() - 2];
    n = b_vector ? 1 : b.back();
    for (std::size_t d = 0; d + 2 < a.size(); ++d) a_batch.push_back(a[d]);
    for (std::size_t d = 0; d + 2 < b.size(); ++d) b_batch.push_back(b[d]);
    const std::size_t rank = std::max(a_batch.size(), b_batch.size());
    for (std::size_t i = 0; i < rank; ++i) {
      const std::size_t ia = i + a_batch.size(), ib = i + b_batch.size();  // minus rank: the operand's dim
      const std::int64_t sa = ia >= rank ? a_batch[ia - rank] : 1;
      const std::int64_t sb = ib >= rank ? b_batch[ib - rank] : 1;
      if (sa != sb && sa != 1 && sb != 1) {
        throw ShapeError(fmt::format("matmul: batch dims of {} and {} do not broadcast: dim {} of "
                                     "the first is {}, dim {} of the second is {} (each pair must "
                                     "be equal or 1)", a, b, ia - rank, sa, ib - rank, sb));
      }
      batch.push_back(sa == 1 ? sb : sa);
    }
    const std::int64_t count = batch.numel();
    fold = b_batch.numel() == 1 && a_batch.numel() == count;
    rows = fold ? count * m : m;
    accumulate_a = !fold && a_batch.numel() != count;
    accumulate_b = !fold && b_batch.numel() != count;
  }
  Shape out() const { return with(batch, !a_vector, !b_vector, m, n); }
  /// The operands and result with their matrix dims spelled out (a 1-D A as [1, K]).
  Shape a_matrices() const { return with(a_batch, true, true, m, k); }
  Shape b_matrices() const { return with(b_batch, true, true, k, n); }
  Shape out_matrices() const { return with(batch, true, true, m, n); }
  /// f(c, a, b) once per GEMM call, with the block indices of C, A and B.
  template <class F>
  void each_call(F f) const {
    if (fold) return f(std::int64_t{0}, std::int64_t{0}, std::int64_t{0});
    detail::each_broadcast(batch, std::array<Shape, 2>{a_batch, b_batch},
                           [&](std::int64_t i, const std::array<std::int64_t, 2>& at) { f(i, at[0], at[1]); });
  }

 private:
  static Shape with(Shape s, bool keep_rows, bool keep_cols, std::int64_t r, std::int64_t c) {
    if (keep_rows) s.push_back(r);
    if (keep_cols) s.push_back(c);
    return s;
  }
};

struct Matmul {
  static constexpr std::string_view name = "matmul";
  MatmulPlan plan{};  // set by forward, read by the VJP
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_same_floating(name, in[0], in[1]);
    return {MatmulPlan(in[0].shape(), in[1].shape()).out(), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    const Tensor& a = in[0];
    const Tensor& b = in[1];
    ctx.save(ctx.needs_input_grad(1) ? a : Tensor());
    ctx.save(ctx.needs_input_grad(0) ? b : Tensor());
    plan = MatmulPlan(a.shape(), b.shape());
    Tensor out = detail::make_tensor(plan.out(), a.dtype());
    const std::int64_t rows = plan.rows, k = plan.k, n = plan.n;
    detail::dispatch_floating(a.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* pc = out.data<T>();
      plan.each_call([&](std::int64_t ic, std::int64_t ia, std::int64_t ib) {
        detail::gemm(false, false, rows, n, k, T(1), pa + ia * rows * k, k, pb + ib * k * n, n, T(0),
                     pc + ic * rows * n, n);
      });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    if (is_grad_enabled()) return recorded_vjp(ctx, grad_out);
    const TensorMeta& ma = ctx.input(0);
    const TensorMeta& mb = ctx.input(1);
    const std::int64_t rows = plan.rows, k = plan.k, n = plan.n;
    // A broadcast operand's blocks are written by several calls: they add into zeros.
    auto gradient = [](const TensorMeta& meta, bool accumulate) {
      return accumulate ? zeros(meta.shape, meta.dtype) : detail::make_tensor(meta);
    };
    Tensor grad_a, grad_b;
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      if (ctx.needs_input_grad(0)) {  // grad_A = grad_C·Bᵀ
        grad_a = gradient(ma, plan.accumulate_a);
        const T* pb = ctx.saved(1).data<T>();
        T* pa = grad_a.data<T>();
        const T beta = plan.accumulate_a ? T(1) : T(0);
        plan.each_call([&](std::int64_t ic, std::int64_t ia, std::int64_t ib) {
          detail::gemm(false, true, rows, k, n, T(1), g + ic * rows * n, n, pb + ib * k * n, n, beta,
                       pa + ia * rows * k, k);
        });
      }
      if (ctx.needs_input_grad(1)) {  // grad_B = Aᵀ·grad_C
        grad_b = gradient(mb, plan.accumulate_b);
        const T* pa = ctx.saved(0).data<T>();
        T* pb = grad_b.data<T>();
        const T beta = plan.accumulate_b ? T(1) : T(0);
        plan.each_call([&](std::int64_t ic, std::int64_t ia, std::int64_t ib) {
          detail::gemm(true, false, k, n, rows, T(1), pa + ia * rows * k, k, g + ic * rows * n, n, beta,
                       pb + ib * k * n, n);
        });
      }
    });
    return {grad_a, grad_b};
  }
  // Recorded for create_graph: the same products written with ops, on the operands with
  // their matrix dims spelled out; sum_to adds up a broadcast operand's gradient. A folded
  // B gets Aᵀ·grad_C over all rows of the batch at once.
  std::vector<Tensor> recorded_vjp(const OpContext& ctx, const Tensor& grad_out) const {
    const Shape& sa = ctx.input(0).shape;
    const Shape& sb = ctx.input(1).shape;
    const Tensor g = reshape(grad_out, plan.out_matrices());
    Tensor grad_a, grad_b;
    if (ctx.needs_input_grad(0)) {
      const Tensor b = reshape(ctx.saved(1), plan.b_matrices());
      grad_a = reshape(detail::sum_to(matmul(g, transpose(b, -2, -1)), plan.a_matrices()), sa);
    }
    if (ctx.needs_input_grad(1)) {
      const Tensor a = ctx.saved(0);
      if (plan.fold) {
        grad_b = reshape(matmul(transpose(reshape(a, {plan.rows, plan.k}), 0, 1),
                                reshape(g, {plan.rows, plan.n})), sb);
      } else {
        const Tensor at = transpose(reshape(a, plan.a_matrices()), -2, -1);
        grad_b = reshape(detail::sum_to(matmul(at, g), plan.b_matrices()), sb);
      }
    }
    return {grad_a, grad_b};
  }
  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    auto call = [](const auto& in) { return matmul(in[0], in[1]); };
    auto pair = [&](std::string label, const Shape& a, const Shape& b, std::uint64_t seed) {
      return Sample{std::move(label), {sample_tensor(a, -1, 1, seed), sample_tensor(b, -1, 1, seed + 1)}, call};
    };
    return {pair("[3, 4]·[4, 5]", {3, 4}, {4, 5}, 61),
            pair("[2, 3, 4]·[2, 4, 2]", {2, 3, 4}, {2, 4, 2}, 63),
            pair("[2, 3, 4]·[4, 5] shared", {2, 3, 4}, {4, 5}, 65),
            pair("[4]·[4] dot", {4}, {4}, 67),
            pair("[3]·[3, 2]", {3}, {3, 2}, 69),
            pair("[2, 3]·[3]", {2, 3}, {3}, 161),
            pair("[3]·[2, 3, 2]", {3}, {2, 3, 2}, 163),
            pair("[2, 2, 3]·[3]", {2, 2, 3}, {3}, 165),
            pair("[2, 3]·[2, 3, 2] shared A", {2, 3}, {2, 3, 2}, 167),
            pair("[2, 1, 2, 3]·[3, 3, 2] broadcast both ways", {2, 1, 2, 3}, {3, 3, 2}, 169),
            pair("[1, 2, 3]·[2, 3, 2] size-1 batch", {1, 2, 3}, {2, 3, 2}, 171),
            pair("[0, 2, 3]·[1, 3, 2] empty batch", {0, 2, 3}, {1, 3, 2}, 173)};
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
        const T* bias = b.data<T>();
#pragma omp parallel for schedule(static) if (rows * fout >= detail::kParallelElements)
        for (std::int64_t r = 0; r < rows; ++r) std::copy_n(bias, fout, y + r * fout);
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
    // Each gradient is added into the sum the backward is making for its input, where there
    // is one (OpContext::grad_sum: a parameter's grad() after zero_grad): GEMMs with beta 1.
    const Tensor sum_x = ctx.grad_sum(0), sum_w = ctx.grad_sum(1);
    if (ctx.needs_input_grad(0)) grad_x = sum_x.defined() ? sum_x : detail::make_tensor(mx);
    if (ctx.needs_input_grad(1)) grad_w = sum_w.defined() ? sum_w : detail::make_tensor(mw);
    detail::dispatch_floating(grad_out.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      const T* g = grad_out.data<T>();
      if (grad_x.defined()) {  // grad_x = grad_y·W
        detail::gemm(false, false, rows, fin, fout, T(1), g, fout, ctx.saved(1).data<T>(), fin,
                     T(sum_x.defined() ? 1 : 0), grad_x.data<T>(), fin);
      }
      if (grad_w.defined()) {  // grad_W = grad_yᵀ·x
        detail::gemm(true, false, fout, fin, rows, T(1), g, fout, ctx.saved(0).data<T>(), fin,
                     T(sum_w.defined() ? 1 : 0), grad_w.data<T>(), fin);
      }
      if (ctx.needs_input_grad(2)) grad_b = sum_rows<T>(g, rows, fout, ctx.input(2), ctx.grad_sum(2));
    });
    return {grad_x, grad_w, grad_b};
  }
  /// Σ_r g[r, :], added into `into` when that is defined: with many rows, each thread sums an
  /// even range of rows and the partial sums are added in thread order (the same result for a
  /// given thread count).
  template <class T>
  static Tensor sum_rows(const T* g, std::int64_t rows, std::int64_t cols, const TensorMeta& meta,
                         const Tensor& into) {
    Tensor out = into.defined() ? into : zeros(meta.shape, meta.dtype);
    T* p = out.data<T>();
    const bool parallel = rows * cols >= detail::kParallelElements && omp_get_max_threads() > 1;
    const std::int64_t parts = parallel ? omp_get_max_threads() : 1;
    std::vector<T> partial(static_cast<std::size_t>(parts * cols), T(0));
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t t = 0; t < parts; ++t) {
      T* sums = partial.data() + t * cols;
      for (std::int64_t r = rows * t / parts; r < rows * (t + 1) / parts; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) sums[c] += g[r * cols + c];
      }
    }
    for (std::int64_t t = 0; t < parts; ++t) {
      for (std::int64_t c = 0; c < cols; ++c) p[c] += partial[static_cast<std::size_t>(t * cols + c)];
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
