// Joining tensors along a dim: cat, and stack (cat of unsqueezed tensors).
//   cat: out = [x_0 | x_1 | ... ] along dim;  grad_x_i = narrow(grad_out, dim, offset_i, size_i)
// The VJP is made of narrow (a registered slice), so cat is differentiable to every order;
// without create_graph it adds each slice straight into a gradient already being summed
// (OpContext::grad_sum), where a narrow along an inner dim would be a copy first.
// PyTorch 1.13 still skips 1-D empty tensors ([0]) in a cat of higher-rank tensors (a legacy
// rule kept for code that starts from torch.tensor([])); they get an empty gradient.
#include <algorithm>

#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

/// Whether a tensor of `shape` is a legacy empty tensor that cat skips, given the rank of the
/// tensors it joins.
bool skipped(const Shape& shape, std::size_t rank) {
  return shape.size() == 1 && shape[0] == 0 && rank != 1;
}

/// The rank of the tensors cat joins: that of the first one that is not [0].
std::size_t joined_rank(const std::vector<Shape>& shapes) {
  for (const Shape& s : shapes) {
    if (!(s.size() == 1 && s[0] == 0)) return s.size();
  }
  return 1;
}

struct Cat {
  static constexpr std::string_view name = "cat";
  std::int64_t dim = 0;
  std::string attributes() const { return fmt::format("dim={}", dim); }

  TensorMeta infer(std::span<const Tensor> in) const {
    if (in.empty()) throw ValueError("cat: expects a non-empty list of tensors");
    std::vector<Shape> shapes;
    for (std::size_t i = 0; i < in.size(); ++i) {
      detail::check_defined(name, in[i], fmt::format("tensor {}", i));
      shapes.push_back(in[i].shape());
    }
    const std::size_t rank = joined_rank(shapes);
    if (rank == 0) throw ShapeError("cat: 0-dim tensors cannot be concatenated (unsqueeze or stack them)");
    const std::size_t d = detail::normalize_dim(name, dim, rank);
    const Tensor* ref = nullptr;
    Shape out;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (skipped(shapes[i], rank)) continue;
      if (ref == nullptr) {
        ref = &in[i];
        out = shapes[i];
        out[d] = 0;
      }
      if (in[i].dtype() != ref->dtype()) {
        throw DTypeError(fmt::format("cat: tensor {} is {}, tensor 0 is {}; convert with .to()", i,
                                     in[i].dtype(), ref->dtype()));
      }
      bool fits = shapes[i].size() == rank;
      for (std::size_t k = 0; fits && k < rank; ++k) fits = k == d || shapes[i][k] == ref->shape()[k];
      if (!fits) {
        throw ShapeError(fmt::format("cat: tensor {} has shape {}, which does not match {} outside "
                                     "dim {}", i, shapes[i], ref->shape(), dim));
      }
      out[d] += shapes[i][d];
    }
    if (ref == nullptr) return {Shape{0}, in[0].dtype()};
    return {out, ref->dtype()};
  }

  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const TensorMeta meta = infer(in);
    Tensor out = detail::make_tensor(meta);
    const std::size_t d = detail::normalize_dim(name, dim, meta.shape.size());
    const detail::DimSplit split(meta.shape, d);
    const std::int64_t out_row = split.n * split.inner;
    detail::dispatch_all(meta.dtype, [&](auto tag) {
      using T = decltype(tag);
      T* dst = out.data<T>();
      const bool streaming = detail::streams<T>(out.numel());
      std::int64_t offset = 0;  // where the current tensor starts within an output row
      for (const Tensor& t : in) {
        if (skipped(t.shape(), meta.shape.size())) continue;
        const std::int64_t row = t.shape()[d] * split.inner;
        const T* src = t.data<T>();
        detail::for_blocks(split.outer * row, [&](std::int64_t begin, std::int64_t end) {
          while (begin < end) {  // the rows, or pieces of rows, of this block of t
            const std::int64_t o = begin / row, j = begin % row, length = std::min(end - begin, row - j);
            if (streaming) detail::stream_copy(src + begin, dst + o * out_row + offset + j, length);
            else std::copy_n(src + begin, length, dst + o * out_row + offset + j);
            begin += length;
          }
          if (streaming) detail::stream_fence();
        });
        offset += row;
      }
    });
    return out;
  }

  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    std::vector<Shape> shapes;
    for (std::size_t i = 0; i < ctx.num_inputs(); ++i) shapes.push_back(ctx.input(i).shape);
    const std::size_t rank = grad_out.dim();
    const std::size_t d = detail::normalize_dim(name, dim, rank);
    std::vector<Tensor> grads(shapes.size());
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      if (skipped(shapes[i], rank)) {
        if (ctx.needs_input_grad(i)) grads[i] = zeros(shapes[i], grad_out.dtype());
        continue;
      }
      if (Tensor sum = ctx.grad_sum(i); sum.defined()) {
        detail::add_gathered(name, sum, grad_out, detail::strided_maps(grad_out.shape(), d, offset, shapes[i][d]));
        grads[i] = sum;
      } else if (ctx.needs_input_grad(i)) {
        grads[i] = narrow(grad_out, dim, offset, shapes[i][d]);
      }
      offset += shapes[i][d];
    }
    return grads;
  }

  static std::vector<Sample> samples() {
    using detail::sample_tensor;
    const auto cat_fn = [](std::int64_t d) {
      return [d](const std::vector<Tensor>& in) { return cat(in, d); };
    };
    return {{"[2, 1, 3], [2, 4, 3], [2, 2, 3] along dim 1",
             {sample_tensor({2, 1, 3}, -1, 1, 81), sample_tensor({2, 4, 3}, -1, 1, 82),
              sample_tensor({2, 2, 3}, -1, 1, 83)}, cat_fn(1)},
            {"[3, 2], [3, 0], [3, 1] along dim -1 (an empty part)",
             {sample_tensor({3, 2}, -1, 1, 84), sample_tensor({3, 0}, -1, 1, 85),
              sample_tensor({3, 1}, -1, 1, 86)}, cat_fn(-1)},
            {"[2, 3] with a legacy [0] along dim 0",
             {sample_tensor({2, 3}, -1, 1, 87), sample_tensor({0}, -1, 1, 88)}, cat_fn(0)},
            {"stack of two [2, 3] at dim -1",
             {sample_tensor({2, 3}, -1, 1, 89), sample_tensor({2, 3}, -1, 1, 90)},
             [](const std::vector<Tensor>& in) { return stack(in, -1); }}};
  }
};

}  // namespace

Tensor cat(const std::vector<Tensor>& tensors, std::int64_t dim) {
  return apply(Cat{dim}, std::span<const Tensor>(tensors));
}

Tensor stack(const std::vector<Tensor>& tensors, std::int64_t dim) {
  if (tensors.empty()) throw ValueError("stack: expects a non-empty list of tensors");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    detail::check_defined("stack", tensors[i], fmt::format("tensor {}", i));
    if (tensors[i].shape() != tensors[0].shape()) {
      throw ShapeError(fmt::format("stack: tensor {} has shape {}, tensor 0 has {}; stack needs "
                                   "one shape", i, tensors[i].shape(), tensors[0].shape()));
    }
    if (tensors[i].dtype() != tensors[0].dtype()) {
      throw DTypeError(fmt::format("stack: tensor {} is {}, tensor 0 is {}; convert with .to()", i,
                                   tensors[i].dtype(), tensors[0].dtype()));
    }
  }
  detail::normalize_dim("stack", dim, tensors[0].dim() + 1);
  std::vector<Tensor> parts;
  for (const Tensor& t : tensors) parts.push_back(unsqueeze(t, dim));
  return cat(parts, dim);
}

TAPEGRAD_BUILTIN_OPS(join, Cat)

}  // namespace tapegrad
