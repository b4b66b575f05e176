// Indexing by i64 tensors: index_select, embedding, gather and scatter_add.
//   index_select: out[..., k, ...] = x[..., index[k], ...]         (an axis map, see axis_map.hpp)
//   embedding:    out[i, :] = weight[ids[i], :]                      (an axis map on weight's rows)
//   gather:       out[p] = x[p with p_dim replaced by index[p]]      (p runs over index's shape)
//   scatter_add:  out = x; out[p with p_dim replaced by index[p]] += src[p]
// Their VJPs add each gradient back into the element it read, so a repeated index collects the
// sum: index_select_backward and embedding_backward scatter, gather's VJP is scatter_add and
// scatter_add's VJP for src is gather (each the other's VJP, so every order stays explicit).
// embedding's padding row reads normally in forward but receives no gradient: its backward
// maps drop the ids equal to padding_idx. Every index is checked against its bound before any
// element is read (PyTorch raises there too; negative indices are errors, not wrap-arounds).
#include "ops/detail/axis_map.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

using detail::AxisCase;
using detail::AxisMaps;

/// The values of a 1-D (or 0-D) index, each checked to lie in [0, bound).
std::vector<std::int64_t> checked_indices(std::string_view op, const Tensor& index, std::int64_t bound,
                                          std::string_view what) {
  const std::int64_t* p = index.data<std::int64_t>();
  std::vector<std::int64_t> values(p, p + index.numel());
  for (std::int64_t v : values) {
    if (v < 0 || v >= bound) {
      throw ValueError(fmt::format("{}: index {} is out of range for {} (valid: 0 to {})", op, v,
                                   what, bound - 1));
    }
  }
  return values;
}

struct IndexSelectKind {
  static constexpr std::string_view name = "index_select";
  static constexpr std::string_view backward_name = "index_select_backward";
  static constexpr bool indexed = true;
  std::int64_t dim = 0;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  AxisMaps maps(const Shape& in, const Tensor& index) const {
    const std::size_t d = detail::normalize_dim(name, dim, in.size());
    if (index.dim() > 1) {
      throw ShapeError(fmt::format("index_select: index must be 0-D or 1-D, got {}", index.shape()));
    }
    AxisMaps m = detail::identity_maps(in);
    const std::int64_t n = in.empty() ? 1 : in[d];
    auto values = checked_indices(name, index, n, fmt::format("dim {} of size {} (input {})", dim, n, in));
    if (in.empty()) {
      if (values.size() != 1) {
        throw ShapeError(fmt::format("index_select: a 0-dim input takes one index, got {}", index.shape()));
      }
      return m;
    }
    m.out[d] = static_cast<std::int64_t>(values.size());
    m.src[d] = std::move(values);
    return m;
  }
  IndexSelectKind backward() const { return *this; }
  static std::vector<AxisCase<IndexSelectKind>> cases() {
    return {{"[4, 3] dim 0 index [2, 0, 2, 3] (repeats)", {0}, {4, 3}, from_vector(std::vector<std::int64_t>{2, 0, 2, 3}, {4})},
            {"[2, 5, 2] dim -2 index [4, 1]", {-2}, {2, 5, 2}, from_vector(std::vector<std::int64_t>{4, 1}, {2})}};
  }
};

struct EmbeddingKind {
  static constexpr std::string_view name = "embedding";
  static constexpr std::string_view backward_name = "embedding_backward";
  static constexpr bool indexed = true;
  std::optional<std::int64_t> padding_idx;  // in [0, num_embeddings)
  bool drop_padding = false;                // true in the backward maps
  std::string attributes() const {
    return padding_idx ? fmt::format("padding_idx={}", *padding_idx) : std::string();
  }
  AxisMaps maps(const Shape& weight, const Tensor& ids) const {
    if (weight.size() != 2) {
      throw ShapeError(fmt::format("embedding: weight must be [num_embeddings, embedding_dim], got {}", weight));
    }
    if (ids.dim() != 1) throw ShapeError(fmt::format("embedding: ids must be flattened, got {}", ids.shape()));
    AxisMaps m = detail::identity_maps(weight);
    m.src[0] = checked_indices(name, ids, weight[0], fmt::format("{} embeddings (weight {})", weight[0], weight));
    m.out[0] = ids.numel();
    if (drop_padding && padding_idx) {
      for (std::int64_t& r : m.src[0]) r = r == *padding_idx ? -1 : r;
    }
    return m;
  }
  EmbeddingKind backward() const { return {padding_idx, true}; }
  // A padding id among the ids makes embedding's VJP differ from finite differences on
  // purpose (PyTorch's rule), so only embedding_backward samples that case.
  static std::vector<AxisCase<EmbeddingKind>> cases() {
    const Tensor ids = from_vector(std::vector<std::int64_t>{1, 3, 1, 0, 4}, {5});
    return {{"[5, 3] ids [1, 3, 1, 0, 4]", {}, {5, 3}, ids},
            {"[5, 3] ids [1, 3, 1, 0, 4] padding_idx 2 (not among the ids)", {2}, {5, 3}, ids},
            {"[4, 2] ids [3, 0, 3] padding_idx 3", {3}, {4, 2},
             from_vector(std::vector<std::int64_t>{3, 0, 3}, {3}), 0, false}};
  }
};

using IndexSelect = detail::AxisGather<IndexSelectKind>;
using IndexSelectBackward = detail::AxisScatter<IndexSelectKind>;
using Embedding = detail::AxisGather<EmbeddingKind>;
using EmbeddingBackward = detail::AxisScatter<EmbeddingKind>;

/// A 0-dim shape seen as [1] (gather and scatter_add treat a scalar as one element).
Shape at_least_1d(const Shape& s) { return s.empty() ? Shape{1} : s; }

/// Checks gather's and scatter_add's index against the indexed tensor `full` (and src, for
/// scatter_add): one rank, index.size(d) <= full.size(d) for d != dim (and <= src.size(d) for
/// every d), every value in [0, full.size(dim)). Returns dim normalised.
std::size_t check_index_along(std::string_view op, std::int64_t dim, const Shape& full,
                              const Tensor& index, const Shape* src) {
  detail::check_index(op, index);
  const std::size_t d = detail::normalize_dim(op, dim, full.size());
  const Shape f = at_least_1d(full), i = at_least_1d(index.shape());
  if (index.dim() != full.size() || (src != nullptr && src->size() != full.size())) {
    throw ShapeError(fmt::format("{}: index {}{} must have the rank of the input {}", op, index.shape(),
                                 src ? fmt::format(" and src {}", *src) : std::string(), full));
  }
  for (std::size_t k = 0; k < i.size(); ++k) {
    if (k != d && i[k] > f[k]) {
      throw ShapeError(fmt::format("{}: index {} must be no larger than the input {} in dim {} "
                                   "(every dim but dim {})", op, index.shape(), full, k, dim));
    }
    if (src != nullptr && i[k] > at_least_1d(*src)[k]) {
      throw ShapeError(fmt::format("{}: index {} must be no larger than src {} in dim {}", op,
                                   index.shape(), *src, k));
    }
  }
  checked_indices(op, index, f[d], fmt::format("dim {} of size {} (input {})", dim, f[d], full));
  return d;
}

/// Calls f(offset in `same` of index position p, offset in `full` of p with dim d replaced by
/// index[p]) for every position p of index (shapes at least 1-D, index checked).
template <class F>
void for_each_index(const Tensor& index, std::size_t d, const Shape& full, const Shape& same, F f) {
  const Shape is = at_least_1d(index.shape()), fs = at_least_1d(full), ss = at_least_1d(same);
  const std::size_t rank = is.size();
  std::array<std::int64_t, Shape::kMaxRank> full_stride{}, same_stride{}, idx{};
  for (std::size_t k = rank, fstep = 1, sstep = 1; k-- > 0;) {
    full_stride[k] = static_cast<std::int64_t>(fstep);
    same_stride[k] = static_cast<std::int64_t>(sstep);
    fstep *= static_cast<std::size_t>(fs[k]);
    sstep *= static_cast<std::size_t>(ss[k]);
  }
  const std::int64_t* pi = index.data<std::int64_t>();
  for (std::int64_t p = 0; p < index.numel(); ++p) {
    std::int64_t full_off = 0, same_off = 0;
    for (std::size_t k = 0; k < rank; ++k) {
      full_off += (k == d ? pi[p] : idx[k]) * full_stride[k];
      same_off += idx[k] * same_stride[k];
    }
    f(same_off, full_off);
    for (std::size_t k = rank; k-- > 0;) {
      if (++idx[k] < is[k]) break;
      idx[k] = 0;
    }
  }
}

struct Gather {
  static constexpr std::string_view name = "gather";
  std::int64_t dim = 0;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_defined(name, in[0]);
    check_index_along(name, dim, in[0].shape(), in[1], nullptr);
    return {in[1].shape(), in[0].dtype()};
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[1]);
    const Tensor &x = in[0], &index = in[1];
    Tensor out = detail::make_tensor(index.shape(), x.dtype());
    const std::size_t d = detail::normalize_dim(name, dim, x.dim());
    detail::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      for_each_index(index, d, x.shape(), index.shape(), [&](std::int64_t o, std::int64_t i) { po[o] = px[i]; });
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    const TensorMeta& x = ctx.input(0);
    return {scatter_add(zeros(x.shape, x.dtype), dim, ctx.saved(0), grad_out), Tensor()};
  }
  static std::vector<Sample> samples();
};

struct ScatterAdd {
  static constexpr std::string_view name = "scatter_add";
  std::int64_t dim = 0;
  std::string attributes() const { return fmt::format("dim={}", dim); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_defined(name, in[0]);
    detail::check_defined(name, in[2], "src");
    if (in[0].dtype() != in[2].dtype()) {
      throw DTypeError(fmt::format("scatter_add: input {} {} and src {} {} must have one dtype", in[0].shape(),
                                   in[0].dtype(), in[2].shape(), in[2].dtype()));
    }
    const Shape src = in[2].shape();
    check_index_along(name, dim, in[0].shape(), in[1], &src);
    return in[0].meta();
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> in) {
    ctx.save(in[1]);
    const Tensor &x = in[0], &index = in[1], &src = in[2];
    Tensor out = detail::copy_data(x);
    const std::size_t d = detail::normalize_dim(name, dim, x.dim());
    detail::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* ps = src.data<T>();
      T* po = out.data<T>();
      for_each_index(index, d, x.shape(), src.shape(), [&](std::int64_t s, std::int64_t o) { po[o] += ps[s]; });
    });
    return out;
  }
  // src elements that no index position covers (src larger than index) get gradient 0.
  // PyTorch 1.13 raises in backward there ("invalid gradient"); this is the true derivative.
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) {
    std::vector<Tensor> grads(3);
    if (ctx.needs_input_grad(0)) grads[0] = grad_out;
    if (ctx.needs_input_grad(2)) {
      const Tensor index = ctx.saved(0);
      Tensor g = gather(grad_out, dim, index);
      const Shape& src = ctx.input(2).shape;
      if (g.shape() != src) {
        std::vector<std::int64_t> widths;
        for (std::size_t k = src.size(); k-- > 0;) widths.insert(widths.end(), {0, src[k] - index.shape()[k]});
        g = pad(g, widths);
      }
      grads[2] = g;
    }
    return grads;
  }
  static std::vector<Sample> samples();
};

std::vector<Sample> Gather::samples() {
  using detail::sample_tensor;
  const Tensor index = from_vector(std::vector<std::int64_t>{3, 0, 3, 1, 2, 2}, {3, 2});
  const Tensor rows = from_vector(std::vector<std::int64_t>{2, 0, 0, 1, 1, 1, 2, 0}, {2, 4});
  return {{"[3, 4] dim 1 index [3, 2] (repeats)", {sample_tensor({3, 4}, -1, 1, 101), index},
           [](const auto& in) { return gather(in[0], 1, in[1]); }},
          {"[3, 5] dim -2 index [2, 4]", {sample_tensor({3, 5}, -1, 1, 102), rows},
           [](const auto& in) { return gather(in[0], -2, in[1]); }}};
}

std::vector<Sample> ScatterAdd::samples() {
  using detail::sample_tensor;
  const Tensor rows = from_vector(std::vector<std::int64_t>{2, 0, 0, 1, 1, 1, 2, 0}, {2, 4});
  return {{"[3, 4] dim 0 index [2, 4] src [2, 4] (repeats)",
           {sample_tensor({3, 4}, -1, 1, 103), rows, sample_tensor({2, 4}, -1, 1, 104)},
           [](const auto& in) { return scatter_add(in[0], 0, in[1], in[2]); }},
          {"[3, 5] dim -2 index [2, 4] src [3, 5] (src larger)",
           {sample_tensor({3, 5}, -1, 1, 105), rows, sample_tensor({3, 5}, -1, 1, 106)},
           [](const auto& in) { return scatter_add(in[0], -2, in[1], in[2]); }}};
}

}  // namespace

Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index) {
  return apply(IndexSelect{{dim}}, {x, index});
}

Tensor embedding(const Tensor& ids, const Tensor& weight, std::optional<std::int64_t> padding_idx) {
  detail::check_index("embedding", ids, "ids");
  detail::check_floating("embedding", weight, "weight");
  if (weight.dim() != 2) {
    throw ShapeError(fmt::format("embedding: weight must be [num_embeddings, embedding_dim], got {}", weight.shape()));
  }
  const std::int64_t num = weight.shape()[0];
  if (padding_idx && (*padding_idx < -num || *padding_idx >= num)) {
    throw ValueError(fmt::format("embedding: padding_idx {} is out of range for {} embeddings (valid: "
                                 "{} to {})", *padding_idx, num, -num, num - 1));
  }
  if (padding_idx && *padding_idx < 0) padding_idx = *padding_idx + num;
  Shape out = ids.shape();
  out.push_back(weight.shape()[1]);
  return reshape(apply(Embedding{{padding_idx}}, {weight, reshape(ids, {-1})}), out);
}

Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index) { return apply(Gather{dim}, {x, index}); }

Tensor scatter_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src) {
  return apply(ScatterAdd{dim}, {x, index, src});
}

TAPEGRAD_BUILTIN_OPS(index, IndexSelect, IndexSelectBackward, Embedding, EmbeddingBackward, Gather, ScatterAdd)

}  // namespace tapegrad
