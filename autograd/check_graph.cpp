// Localising the wrong op in a graph (check_graph) and the contract checks every
// registered op gets (check_op).
//
// check_graph re-runs each recorded op on copies of the inputs it saw (kept by a
// RecordInputsGuard) through OpHolder::rerun, and gradchecks that one op: a wrong VJP
// fails at its own node only, because each node is checked in isolation.
#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "autograd/gradcheck_detail.hpp"
#include "autograd/graph.hpp"
#include "autograd/random.hpp"
#include "autograd/tensor_impl.hpp"
#include "tapegrad/autograd.hpp"
#include "tapegrad/gradcheck.hpp"
#include "tapegrad/ops.hpp"

namespace tapegrad {

RecordInputsGuard::RecordInputsGuard() : previous_(detail::set_keep_inputs(true)) {}
RecordInputsGuard::~RecordInputsGuard() { detail::set_keep_inputs(previous_); }

namespace {

std::string metas_text(const std::vector<TensorMeta>& metas) {
  std::vector<std::string> parts;
  for (const auto& m : metas) parts.push_back(fmt::format("{} {}", m.shape, m.dtype));
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::string node_title(const NodeCheck& n) {
  return fmt::format("#{} {}{}", n.position, n.op,
                     n.attributes.empty() ? std::string() : fmt::format("({})", n.attributes));
}

}  // namespace

GraphCheckReport check_graph(const Tensor& output, const GradcheckOptions& options, int order) {
  GraphCheckReport report;
  if (order != 1 && order != 2) {
    report.error = fmt::format("check_graph: order must be 1 or 2, got {}", order);
    return report;
  }
  if (!output.defined() || !output.impl()->grad_fn) {
    report.error = "check_graph: the output was not produced by a recorded op";
    return report;
  }
  detail::TapeGraph tg = detail::build_graph({output.impl()->grad_fn.get()});
  auto forward_order = detail::consumers_first(tg);
  std::reverse(forward_order.begin(), forward_order.end());  // producers first
  // Ops that draw random numbers must see the same ones at every evaluation.
  const std::uint64_t rng_seed = detail::next_random_u64();
  std::vector<detail::Node*> nodes;
  for (std::size_t v : forward_order) nodes.push_back(tg.graph[v].node);
  for (std::size_t pos = 0; pos < nodes.size(); ++pos) {
    detail::Node& n = *nodes[pos];
    NodeCheck nc;
    nc.position = pos;
    nc.op = std::string(n.op->name());
    nc.attributes = n.op->attributes();
    for (const auto& in : n.inputs) nc.inputs.push_back(in.meta);
    nc.output = n.out_meta;
    if (n.kept_inputs.size() != n.inputs.size()) {
      nc.report.error = fmt::format(
          "{} was recorded without a RecordInputsGuard, so its inputs were not kept", nc.op);
    } else {
      std::vector<Tensor> ins;
      for (std::size_t i = 0; i < n.inputs.size(); ++i) {
        Tensor t = detail::f64_copy(n.kept_inputs[i]);
        if (t.defined() && n.inputs[i].needs_grad) t.set_requires_grad(true);
        ins.push_back(t);
      }
      const detail::OpHolder* op = n.op.get();
      const TensorFunction rerun = [op, rng_seed](const std::vector<Tensor>& in) {
        manual_seed(rng_seed);
        return op->rerun(in);
      };
      nc.report = gradcheck(rerun, ins, options);
      if (order == 2 && nc.report.passed && op->differentiable_vjp()) {
        nc.second_order_checked = true;
        nc.second_order = gradgradcheck(rerun, ins, Tensor(), options);
      }
    }
    report.nodes.push_back(std::move(nc));
  }
  manual_seed(detail::next_random_u64() ^ rng_seed);
  report.passed = std::all_of(report.nodes.begin(), report.nodes.end(),
                              [](const NodeCheck& n) { return n.passed(); });
  return report;
}

int NodeCheck::wrong_order() const {
  if (!report.passed) return 1;
  return second_order_checked && !second_order.passed ? 2 : 0;
}

const NodeCheck* GraphCheckReport::first_failure() const {
  for (const auto& n : nodes) {
    if (!n.passed()) return &n;
  }
  return nullptr;
}

std::vector<std::string> GraphCheckReport::failing_ops() const {
  std::vector<std::string> names;
  for (const auto& n : nodes) {
    if (!n.passed()) names.push_back(n.op);
  }
  return names;
}

std::string GraphCheckReport::to_string() const {
  if (!error.empty()) return error;
  const NodeCheck* first = first_failure();
  if (first == nullptr) {
    std::int64_t retried = 0, kinks = 0;
    for (const auto& n : nodes) {
      for (const auto& r : n.report.inputs) {
        retried += r.retried;
        kinks += r.kinks;
      }
    }
    std::vector<std::string> notes;
    if (retried > 0) notes.push_back(fmt::format("{} steps crossed a kink and were retried", retried));
    if (kinks > 0) notes.push_back(fmt::format("{} values at kinks no step avoided", kinks));
    const bool second = std::any_of(nodes.begin(), nodes.end(),
                                    [](const NodeCheck& n) { return n.second_order_checked; });
    return fmt::format("check_graph passed: {} ops re-checked at the inputs they saw{}{}",
                       nodes.size(), second ? ", to the second order" : "",
                       notes.empty() ? "" : fmt::format(" ({})", fmt::join(notes, "; ")));
  }
  std::vector<std::string> others;
  for (const auto& n : nodes) {
    if (!n.passed() && &n != first) {
      others.push_back(fmt::format("{} (order {})", node_title(n), n.wrong_order()));
    }
  }
  const bool vjp_wrong = first->wrong_order() == 1;
  std::string detail = vjp_wrong ? first->report.to_string() : first->second_order.to_string();
  for (std::size_t p = detail.find('\n'); p != std::string::npos; p = detail.find('\n', p + 3)) {
    detail.replace(p, 1, "\n  ");
  }
  return fmt::format(
      "check_graph FAILED: {} of {} ops are wrong\n"
      "first failing op: {}: {}\n  inputs: {}\n  output: {} {}\n  {}{}",
      others.size() + 1, nodes.size(), node_title(*first),
      vjp_wrong ? "its VJP is wrong (first order)"
                : "its VJP is right, but the VJP's own VJP is wrong (second order)",
      metas_text(first->inputs), first->output.shape, first->output.dtype, detail,
      others.empty() ? std::string() : fmt::format("\nalso failing: {}", fmt::join(others, ", ")));
}

// ---- contract checks -----------------------------------------------------------------------

namespace {

std::vector<Tensor> fresh_leaves(const std::vector<Tensor>& inputs, std::size_t skip = SIZE_MAX) {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    Tensor c = t.defined() && is_floating(t.dtype())
                   ? from_vector(t.to_vector<double>(), t.shape(), t.dtype())
                   : t;
    if (t.defined() && t.requires_grad() && i != skip) c.set_requires_grad(true);
    out.push_back(c);
  }
  return out;
}

std::vector<Tensor> requiring(const std::vector<Tensor>& v) {
  std::vector<Tensor> out;
  for (const Tensor& t : v) {
    if (t.defined() && t.requires_grad()) out.push_back(t);
  }
  return out;
}

Tensor cotangent(const Tensor& out, std::uint64_t seed) {
  return from_vector(detail::random_cotangent(out.numel(), seed), out.shape(), out.dtype());
}

/// max |a - b| / (tol_scale + max |b|) over elements.
double relative_gap(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double gap = 0, scale = 1e-300;
  for (std::size_t i = 0; i < va.size(); ++i) {
    gap = std::max(gap, std::abs(va[i] - vb[i]));
    scale = std::max(scale, std::abs(vb[i]));
  }
  return gap / scale;
}

/// The topmost node of `op` in out's graph, or nullptr.
detail::Node* find_node(const Tensor& out, const std::string& op) {
  if (!out.impl()->grad_fn) return nullptr;
  detail::TapeGraph tg = detail::build_graph({out.impl()->grad_fn.get()});
  for (std::size_t v : detail::consumers_first(tg)) {
    if (tg.graph[v].node->op->name() == op) return tg.graph[v].node;
  }
  return nullptr;
}

}  // namespace

ContractReport check_op_sample(const OpInfo& op, const Sample& sample,
                               const GradcheckOptions& options) {
  ContractReport r;
  r.op = op.name;
  r.sample = sample.label;
  GradcheckOptions o = options;
  if (sample.eps != 0) o.eps = sample.eps;
  if (sample.atol != 0) o.atol = sample.atol;
  if (sample.rtol != 0) o.rtol = sample.rtol;
  r.gradcheck = gradcheck(sample.fn, sample.inputs, o);
  if (op.differentiable_vjp) {
    r.second_order_checked = true;
    r.gradgradcheck = gradgradcheck(sample.fn, sample.inputs, Tensor(), o);
  }
  auto fail = [&](std::string what) { r.failures.push_back(std::move(what)); };
  try {
    const std::uint64_t seed = options.seed + 17;
    std::vector<Tensor> in = fresh_leaves(sample.inputs);
    std::vector<Tensor> wrt = requiring(in);
    Tensor out = sample.fn(in);
    if (!out.requires_grad() || find_node(out, op.name) == nullptr) {
      fail(fmt::format("the sample's fn does not record {} on inputs that require grad",
                       op.name));
      return r;
    }
    const Tensor c1 = cotangent(out, seed), c2 = cotangent(out, seed + 1);
    // Shapes: the engine rejects a VJP gradient whose shape or dtype differ from its input.
    std::vector<Tensor> g1;
    try {
      g1 = grad({out}, wrt, {c1}, true);
    } catch (const GraphError& e) {
      fail(fmt::format("VJP broke the shape contract: {}", e.what()));
      return r;
    }
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      if (g1[k].meta() != wrt[k].meta()) {
        fail(fmt::format("gradient {} is {} {} but its input is {} {}", k, g1[k].shape(),
                         g1[k].dtype(), wrt[k].shape(), wrt[k].dtype()));
      }
    }
    // Determinism: the same backward twice gives bitwise the same gradients.
    const auto g1_again = grad({out}, wrt, {c1}, true);
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      if (!detail::bitwise_equal(g1[k], g1_again[k])) {
        fail(fmt::format("not deterministic: gradient {} differs bitwise between two identical "
                         "backward passes (max relative gap {:.3g})", k,
                         relative_gap(g1[k], g1_again[k])));
      }
    }
    // Linearity in grad_out: VJP(2 c1 - 3 c2) = 2 VJP(c1) - 3 VJP(c2), up to rounding (a
    // sample with its own rtol rounds through f32).
    const double linear_tol = sample.rtol != 0 ? sample.rtol * 1e-2 : 1e-9;
    const auto g2 = grad({out}, wrt, {c2}, true);
    Tensor mixed;
    {
      NoGradGuard no_grad;
      mixed = c1 * 2.0 - c2 * 3.0;
    }
    const auto gm = grad({out}, wrt, {mixed}, true);
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      NoGradGuard no_grad;
      const Tensor expected = g1[k] * 2.0 - g2[k] * 3.0;
      const double gap = relative_gap(gm[k], expected);
      if (gap > linear_tol) {
        fail(fmt::format("VJP is not linear in grad_out: for input {}, VJP(2a - 3b) differs "
                         "from 2 VJP(a) - 3 VJP(b) by {:.3g} (relative)", k, gap));
      }
    }
    // Accumulation: backward adds into gradients already present (poisoned here).
    std::vector<Tensor> expected;
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      const Tensor poison = from_vector(detail::random_cotangent(wrt[k].numel(), seed + 10 + k),
                                        wrt[k].shape(), wrt[k].dtype());
      NoGradGuard no_grad;
      expected.push_back(poison + g1[k]);
      wrt[k].set_grad(poison);
    }
    out.backward(c1, true);
    for (std::size_t k = 0; k < wrt.size(); ++k) {
      const double gap = relative_gap(wrt[k].grad(), expected[k]);
      if (gap > 1e-12) {
        fail(fmt::format("backward overwrote instead of adding: grad() of input {} is not the "
                         "earlier gradient plus the new one (relative gap {:.3g})", k, gap));
      }
    }
    // Needs-grad: with one input not requiring grad, the op's VJP must not compute its
    // gradient, the input's grad() stays undefined and the other gradients are unchanged.
    for (std::size_t i = 0; i < sample.inputs.size(); ++i) {
      if (!sample.inputs[i].defined() || !sample.inputs[i].requires_grad()) continue;
      std::vector<Tensor> in2 = fresh_leaves(sample.inputs, i);
      if (requiring(in2).empty()) continue;
      Tensor out2 = sample.fn(in2);
      detail::Node* node = find_node(out2, op.name);
      if (node == nullptr) continue;  // the op is no longer recorded without input i
      {
        NoGradGuard no_grad;
        OpContext ctx(node);
        const Tensor g = cotangent(Tensor(detail::make_tensor(node->out_meta)), seed + 30);
        const auto direct = node->op->vjp(ctx, g);
        for (std::size_t s = 0; s < node->inputs.size() && s < direct.size(); ++s) {
          if (!node->inputs[s].needs_grad && direct[s].defined()) {
            fail(fmt::format("with input {} not requiring grad, the VJP still computed a "
                             "gradient for its input slot {} (ctx.needs_input_grad({}) is "
                             "false)", i, s, s));
          }
        }
      }
      out2.backward(c1);
      if (in2[i].grad().defined()) {
        fail(fmt::format("input {} does not require grad but got a grad()", i));
      }
      std::size_t k = 0;
      for (std::size_t j = 0; j < in2.size(); ++j) {
        if (!sample.inputs[j].defined() || !sample.inputs[j].requires_grad()) continue;
        if (j != i) {
          const Tensor gj = in2[j].grad();
          if (!gj.defined() || relative_gap(gj, g1[k]) > 1e-12) {
            fail(fmt::format("with input {} not requiring grad, the gradient of input {} "
                             "changed", i, j));
          }
        }
        ++k;
      }
    }
  } catch (const std::exception& e) {
    fail(fmt::format("threw: {}", e.what()));
  }
  return r;
}

OpCheckReport check_op(const OpInfo& op, const GradcheckOptions& options) {
  OpCheckReport report;
  report.op = op.name;
  if (!op.samples) {
    report.error = fmt::format("{} was registered without sample inputs (add a static "
                               "samples() to the op)", op.name);
    return report;
  }
  std::vector<Sample> samples;
  try {
    samples = op.samples();
  } catch (const std::exception& e) {
    report.error = fmt::format("{}: samples() threw: {}", op.name, e.what());
    return report;
  }
  if (samples.empty()) {
    report.error = fmt::format("{}: samples() returned no samples", op.name);
    return report;
  }
  GradcheckOptions o = options;
  for (const Sample& s : samples) {
    report.cases.push_back(check_op_sample(op, s, o));
    ++o.seed;
  }
  return report;
}

bool OpCheckReport::passed() const {
  return error.empty() && !cases.empty() &&
         std::all_of(cases.begin(), cases.end(), [](const ContractReport& c) { return c.passed(); });
}

double OpCheckReport::max_rel_error() const {
  double worst = 0;
  for (const auto& c : cases) worst = std::max(worst, c.gradcheck.max_rel_error());
  return worst;
}

std::string OpCheckReport::to_string(bool verbose) const {
  const bool second = !cases.empty() && cases.front().second_order_checked;
  std::string s = fmt::format("{:<20} {:>3} cases  worst rel error {:9.3g}  {}{}", op,
                              cases.size(), max_rel_error(), passed() ? "ok" : "FAILED",
                              second ? "" : "  (first order only: its VJP is not differentiable)");
  if (!error.empty()) s += fmt::format("\n  {}", error);
  for (const auto& c : cases) {
    if (c.passed() && !verbose) continue;
    s += fmt::format("\n  sample '{}': {}", c.sample, c.passed() ? "ok" : "FAILED");
    if (verbose || !c.gradcheck.passed) {
      std::string g = c.gradcheck.to_string();
      for (std::size_t p = g.find('\n'); p != std::string::npos; p = g.find('\n', p + 5)) {
        g.replace(p, 1, "\n    ");
      }
      s += fmt::format("\n    {}", g);
    }
    if (c.second_order_checked && (verbose || !c.gradgradcheck.passed)) {
      std::string g = c.gradgradcheck.to_string();
      for (std::size_t p = g.find('\n'); p != std::string::npos; p = g.find('\n', p + 5)) {
        g.replace(p, 1, "\n    ");
      }
      s += fmt::format("\n    {}", g);
    }
    for (const auto& f : c.failures) s += fmt::format("\n    contract: {}", f);
  }
  return s;
}

}  // namespace tapegrad
