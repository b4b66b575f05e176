// vjp, jvp, hvp, jacobian and hessian, each a few calls of grad(): create_graph makes the
// gradients functions of their own inputs (and of the upstream gradient), so jvp is a VJP
// of a VJP and hvp a VJP of a gradient.
#include "tapegrad/functional.hpp"

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/ops.hpp"

namespace tapegrad {
namespace {

/// fn evaluated on its variables: each floating input as a tensor that requires grad (with
/// create_graph, an input that requires grad keeps its graph through a recorded alias;
/// otherwise a fresh leaf on its values). Recording is on for the caller's scope.
struct Evaluated {
  std::vector<Tensor> vars;
  std::vector<std::size_t> which;  ///< positions of the variables among the inputs
  std::vector<Tensor> wrt;         ///< vars[which[k]]
  Tensor output;

  Evaluated(const TensorFunction& fn, const std::vector<Tensor>& inputs, bool create_graph,
            const char* op) {
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = inputs[i];
      if (!t.defined() || !is_floating(t.dtype())) {
        vars.push_back(t);
        continue;
      }
      vars.push_back(create_graph && t.requires_grad() ? reshape(t, t.shape())
                                                       : t.detach().set_requires_grad(true));
      which.push_back(i);
      wrt.push_back(vars.back());
    }
    if (wrt.empty()) throw ValueError(fmt::format("{}: no floating input to differentiate", op));
    output = fn(vars);
    if (!output.defined() || !is_floating(output.dtype())) {
      throw ValueError(fmt::format("{}: fn must return a defined floating tensor", op));
    }
  }
  /// grad of `outs` (seeded by `seeds`) with respect to wrt, zeros where unused.
  std::vector<Tensor> gradient(const std::vector<Tensor>& outs, const std::vector<Tensor>& seeds,
                               bool create_graph, bool retain_graph = false) const {
    std::vector<Tensor> g(wrt.size());
    std::vector<Tensor> live_outs, live_seeds;
    for (std::size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].requires_grad()) continue;  // does not depend on any variable
      live_outs.push_back(outs[k]);
      if (!seeds.empty()) live_seeds.push_back(seeds[k]);
    }
    if (!live_outs.empty()) {
      g = grad(live_outs, wrt, live_seeds,
               {.retain_graph = retain_graph || create_graph, .create_graph = create_graph,
                .allow_unused = true});
    }
    for (std::size_t k = 0; k < g.size(); ++k) {
      if (!g[k].defined()) g[k] = zeros_like(wrt[k]);
    }
    return g;
  }
  /// One tensor per input: the variables' values in their positions.
  std::vector<Tensor> per_input(const std::vector<Tensor>& values, std::size_t n) const {
    std::vector<Tensor> out(n);
    for (std::size_t k = 0; k < which.size(); ++k) out[which[k]] = values[k];
    return out;
  }
};

/// The tensors of `per_input` at the variables' positions, checked against their shapes.
std::vector<Tensor> at_variables(const Evaluated& e, const std::vector<Tensor>& per_input,
                                 const std::vector<Tensor>& inputs, const char* op,
                                 const char* what) {
  if (per_input.size() != inputs.size()) {
    throw ValueError(fmt::format("{}: {} {} for {} inputs", op, per_input.size(), what,
                                 inputs.size()));
  }
  std::vector<Tensor> out;
  for (std::size_t k = 0; k < e.which.size(); ++k) {
    const Tensor& t = per_input[e.which[k]];
    const Tensor& x = e.wrt[k];
    if (t.defined() && t.shape() != x.shape()) {
      throw ShapeError(fmt::format("{}: {} {} is {} but input {} is {}", op, what, e.which[k],
                                   t.shape(), e.which[k], x.shape()));
    }
    out.push_back(t.defined() ? t.to(x.dtype()) : zeros_like(x));
  }
  return out;
}

Tensor finish(const Tensor& t, bool create_graph) { return create_graph ? t : t.detach(); }

std::vector<Tensor> finish(std::vector<Tensor> ts, bool create_graph) {
  for (Tensor& t : ts) {
    if (t.defined()) t = finish(t, create_graph);
  }
  return ts;
}

/// The one-hot seed e_k of `like`'s shape and dtype.
Tensor one_hot_seed(const Tensor& like, std::int64_t k) {
  std::vector<double> v(static_cast<std::size_t>(like.numel()), 0.0);
  v[static_cast<std::size_t>(k)] = 1.0;
  return from_vector(v, like.shape(), like.dtype());
}

Shape joined(const Shape& a, const Shape& b, const char* op) {
  if (a.size() + b.size() > Shape::kMaxRank) {
    throw ShapeError(fmt::format("{}: the result would have rank {} ({} then {}); at most {}", op,
                                 a.size() + b.size(), a, b, Shape::kMaxRank));
  }
  Shape s = a;
  for (std::size_t d = 0; d < b.size(); ++d) s.push_back(b[d]);
  return s;
}

/// Rows of d(outs[i] element k)/d wrt[j], one backward per element: result[i][j] is
/// [outs[i] dims..., wrt[j] dims...].
std::vector<std::vector<Tensor>> rows_of(const Evaluated& e, const std::vector<Tensor>& outs,
                                         const char* op) {
  std::vector<std::vector<Tensor>> result;
  for (const Tensor& out : outs) {
    std::vector<std::vector<double>> rows(e.wrt.size());
    for (std::int64_t k = 0; k < out.numel(); ++k) {
      const auto g = e.gradient({out}, {one_hot_seed(out, k)}, false, true);
      for (std::size_t j = 0; j < g.size(); ++j) {
        const auto v = g[j].to_vector<double>();
        rows[j].insert(rows[j].end(), v.begin(), v.end());
      }
    }
    std::vector<Tensor> blocks;
    for (std::size_t j = 0; j < e.wrt.size(); ++j) {
      blocks.push_back(from_vector(rows[j], joined(out.shape(), e.wrt[j].shape(), op),
                                   e.wrt[j].dtype()));
    }
    result.push_back(std::move(blocks));
  }
  return result;
}

void require_scalar(const Tensor& out, const char* op) {
  if (out.numel() != 1) {
    throw ShapeError(fmt::format("{}: fn must return one element, got {}", op, out.shape()));
  }
}

}  // namespace

FunctionalResult vjp(const TensorFunction& fn, const std::vector<Tensor>& inputs, const Tensor& v,
                     bool create_graph) {
  EnableGradGuard record;
  const Evaluated e(fn, inputs, create_graph, "vjp");
  if (!v.defined()) require_scalar(e.output, "vjp");
  if (v.defined() && v.shape() != e.output.shape()) {
    throw ShapeError(fmt::format("vjp: v is {} but fn's output is {}", v.shape(), e.output.shape()));
  }
  const std::vector<Tensor> seeds = v.defined() ? std::vector<Tensor>{v.to(e.output.dtype())}
                                                : std::vector<Tensor>{};
  const auto g = e.gradient({e.output}, seeds, create_graph);
  return {finish(e.output, create_graph), finish(e.per_input(g, inputs.size()), create_graph)};
}

FunctionalResult jvp(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& tangents, bool create_graph) {
  EnableGradGuard record;
  const Evaluated e(fn, inputs, create_graph, "jvp");
  const auto t = at_variables(e, tangents, inputs, "jvp", "tangent");
  // g(u) = Jᵀ·u for a dummy u; then J·t = d<g(u), t>/du.
  Tensor u = zeros_like(e.output).set_requires_grad(true);
  std::vector<Tensor> g(e.wrt.size());
  if (e.output.requires_grad()) {
    g = grad({e.output}, e.wrt, {u}, {.create_graph = true, .allow_unused = true});
  }
  std::vector<Tensor> outs, seeds;
  for (std::size_t k = 0; k < g.size(); ++k) {
    if (!g[k].defined() || !g[k].requires_grad()) continue;
    outs.push_back(g[k]);
    seeds.push_back(t[k]);
  }
  Tensor jt = zeros_like(e.output);
  if (!outs.empty()) {
    const auto r = grad(outs, {u}, seeds, {.create_graph = create_graph, .allow_unused = true});
    if (r[0].defined()) jt = r[0];
  }
  return {finish(e.output, create_graph), {finish(jt, create_graph)}};
}

FunctionalResult hvp(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& v, bool create_graph) {
  EnableGradGuard record;
  const Evaluated e(fn, inputs, create_graph, "hvp");
  require_scalar(e.output, "hvp");
  const auto dirs = at_variables(e, v, inputs, "hvp", "v");
  const auto g = e.gradient({e.output}, {}, true);
  const auto hv = e.gradient(g, dirs, create_graph);
  return {finish(e.output, create_graph), finish(e.per_input(hv, inputs.size()), create_graph)};
}

std::vector<Tensor> jacobian(const TensorFunction& fn, const std::vector<Tensor>& inputs) {
  EnableGradGuard record;
  const Evaluated e(fn, inputs, false, "jacobian");
  return e.per_input(rows_of(e, {e.output}, "jacobian")[0], inputs.size());
}

std::vector<std::vector<Tensor>> hessian(const TensorFunction& fn, const std::vector<Tensor>& inputs) {
  EnableGradGuard record;
  const Evaluated e(fn, inputs, false, "hessian");
  require_scalar(e.output, "hessian");
  const auto g = e.gradient({e.output}, {}, true);
  const auto blocks = rows_of(e, g, "hessian");
  std::vector<std::vector<Tensor>> h(inputs.size());
  for (std::size_t i = 0; i < e.which.size(); ++i) h[e.which[i]] = e.per_input(blocks[i], inputs.size());
  return h;
}

}  // namespace tapegrad
