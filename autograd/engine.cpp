// The tape and the backward engine.
//
// Recording: every op applied to an input that requires grad becomes a Node owned by its
// output tensor; a Node owns the Nodes that produced its inputs, so a graph lives exactly
// as long as some tensor can reach it, and a training loop's memory stays flat.
//
// Backward: the part of the graph reachable from the outputs is laid out as a Boost.Graph
// compressed_sparse_row_graph (nodes as vertices, an edge from each consumer to the
// producer of each of its inputs), ordered with topological_sort, and walked
// consumers-first. Each VJP runs with recording off, or, with create_graph, recorded like
// a forward (saved inputs then come back with their graph, a saved output with its own
// node as producer), so that the gradients can be differentiated again. The engine checks
// every VJP returned one gradient per input with that input's exact shape and dtype
// before routing the gradients on.
#include <algorithm>
#include <cmath>
#include <atomic>
#include <unordered_map>
#include <utility>

#include <boost/graph/topological_sort.hpp>
#include <fmt/format.h>

#include "autograd/dispatch.hpp"
#include "autograd/graph.hpp"
#include "autograd/tensor_impl.hpp"
#include "tapegrad/autograd.hpp"
#include "tapegrad/op.hpp"
#include "tapegrad/ops.hpp"

namespace tapegrad {
namespace detail {

namespace {
thread_local bool grad_enabled = true;
thread_local bool anomaly_enabled = false;
thread_local bool keep_inputs = false;
thread_local std::vector<BranchRecord>* branches = nullptr;
std::atomic<std::int64_t> live_nodes{0};

// Destroying a long chain of Nodes recursively would overflow the stack: the outermost
// destructor on a thread owns a list of producers about to die and destroys them one at a
// time; nested destructors only add to it. The thread_local is a plain pointer, so it
// works even while other thread_locals (holding graphs) are destroyed at thread exit.
thread_local std::vector<std::shared_ptr<Node>>* graveyard = nullptr;
}  // namespace

Node::Node() { live_nodes.fetch_add(1, std::memory_order_relaxed); }

Node::~Node() {
  live_nodes.fetch_sub(1, std::memory_order_relaxed);
  std::vector<std::shared_ptr<Node>> local;
  const bool outermost = graveyard == nullptr;
  if (outermost) graveyard = &local;
  for (auto& in : inputs) {
    if (in.producer && in.producer.use_count() == 1) graveyard->push_back(std::move(in.producer));
  }
  if (!outermost) return;
  while (!local.empty()) {
    auto last = std::move(local.back());
    local.pop_back();
    last.reset();
  }
  graveyard = nullptr;
}

bool should_record(std::span<const Tensor> inputs) {
  if (!grad_enabled) return false;
  return std::any_of(inputs.begin(), inputs.end(),
                     [](const Tensor& t) { return t.defined() && t.impl()->requires_grad; });
}

bool set_keep_inputs(bool keep) { return std::exchange(keep_inputs, keep); }

std::vector<BranchRecord>* set_branch_log(std::vector<BranchRecord>* log) {
  return std::exchange(branches, log);
}
std::vector<BranchRecord>* branch_log() { return branches; }

void note_untracked(std::string_view op, std::span<const Tensor> inputs, const Tensor& out) {
  if (grad_enabled || !out.defined() || !is_floating(out.dtype())) return;
  std::vector<std::weak_ptr<TensorImpl>> from;
  for (const Tensor& t : inputs) {
    if (!t.defined()) continue;
    if (t.impl() == out.impl()) return;  // the op handed back an input: nothing new was made
    if (t.impl()->requires_grad) from.push_back(t.impl());
  }
  if (from.empty()) return;
  out.impl()->untracked = std::make_unique<TensorImpl::Untracked>(TensorImpl::Untracked{op, std::move(from)});
}

void check_forward_output(std::string_view op, const Tensor& out, const TensorMeta& meta) {
  if (!out.defined()) {
    throw GraphError(fmt::format("{}: forward returned an undefined tensor", op));
  }
  if (out.meta() != meta) {
    throw GraphError(fmt::format("{}: forward returned {} {} but the op's shape rule says {} {}",
                                 op, out.shape(), out.dtype(), meta.shape, meta.dtype));
  }
}

Tensor record(std::unique_ptr<OpHolder> op, std::span<const Tensor> inputs,
              const TensorMeta& meta, std::vector<Tensor>* extras) {
  auto node = std::allocate_shared<Node>(PoolAllocator<Node>{});
  node->op = std::move(op);
  node->out_meta = meta;
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Node::Input in;
    if (t.defined()) {
      const auto& impl = t.impl();
      in.meta = t.meta();
      in.needs_grad = impl->requires_grad;
      if (!impl->requires_grad) {  // where explain_no_grad looks for a cut
        in.unrecorded = std::make_unique<Node::Input::Unrecorded>(Node::Input::Unrecorded{impl, impl->storage});
      }
      if (impl->grad_fn) in.producer = impl->grad_fn;
      else if (impl->requires_grad) in.leaf = impl;
    }
    node->inputs.push_back(std::move(in));
    if (keep_inputs) node->kept_inputs.push_back(t.defined() ? copy_data(t) : Tensor());
  }
  OpContext ctx(node.get());
  Tensor out;
  {
    // The forward itself is not recorded: it may use the public ops as building blocks.
    NoGradGuard no_grad;
    out = node->op->forward(ctx, inputs);
  }
  check_forward_output(node->op->name(), out, meta);
  if (node->op->view() && inputs[0].defined() && out.impl()->storage == inputs[0].impl()->storage) {
    const std::size_t bytes = out.impl()->offset - inputs[0].impl()->offset;
    node->view_offset = static_cast<std::int64_t>(bytes / dtype_size(meta.dtype));
  }
  for (SavedTensor& s : node->saved) {
    if (!s.source && s.tensor.defined() && s.tensor.impl()->storage == out.impl()->storage) {
      s.output_of = node;
    }
  }
  if (extras != nullptr) *extras = ctx.take_extras();
  if (!is_floating(meta.dtype)) return out;  // integer results carry no gradient
  for (const Tensor& t : inputs) {
    // A forward that hands back an input (or a view of one) must not rewire that tensor.
    if (t.defined() && t.impl() == out.impl()) out = alias(out, out.shape());
  }
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return out;
}

// ---- the graph of a backward pass ---------------------------------------------------------

TapeGraph build_graph(const std::vector<Node*>& roots) {
  TapeGraph tg;
  std::vector<Node*> stack;
  std::vector<std::pair<std::size_t, std::size_t>> edges;
  std::vector<EdgeProps> edge_props;
  auto visit = [&](Node* n) {
    if (n->vertex >= 0) return;
    n->vertex = static_cast<std::int64_t>(tg.nodes.size());
    tg.nodes.push_back(n);
    stack.push_back(n);
  };
  for (Node* r : roots) visit(r);
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (std::size_t i = 0; i < n->inputs.size(); ++i) {
      Node* p = n->inputs[i].producer.get();
      if (p == nullptr) continue;
      visit(p);
      edges.emplace_back(static_cast<std::size_t>(n->vertex), static_cast<std::size_t>(p->vertex));
      edge_props.push_back({i});
    }
  }
  tg.graph = Graph(boost::edges_are_unsorted_multi_pass, edges.begin(), edges.end(), edge_props.begin(),
                   tg.nodes.size());
  for (std::size_t v = 0; v < tg.nodes.size(); ++v) tg.graph[v].node = tg.nodes[v];
  return tg;
}

TapeGraph::~TapeGraph() {
  for (Node* n : nodes) n->vertex = -1;
}

std::vector<std::size_t> consumers_first(const TapeGraph& tg) {
  std::vector<std::size_t> order;
  order.reserve(boost::num_vertices(tg.graph));
  boost::topological_sort(tg.graph, std::back_inserter(order));
  // topological_sort emits producers first; backward needs every consumer done first.
  std::reverse(order.begin(), order.end());
  return order;
}

namespace {

/// Sets grad mode on this thread for its scope (on for a backward with create_graph).
class GradMode {
 public:
  explicit GradMode(bool enabled) : previous_(std::exchange(grad_enabled, enabled)) {}
  ~GradMode() { grad_enabled = previous_; }
  GradMode(const GradMode&) = delete;
  GradMode& operator=(const GradMode&) = delete;

 private:
  bool previous_;
};

/// The gradient summed so far for one vertex or captured leaf. A slot first holds the
/// gradient it was given, which may be shared (a VJP can return one tensor for two inputs);
/// the first sum makes a tensor of its own (`owned`), which later gradients are added into in
/// place, so k gradients of one tensor cost k additions, not k copies.
struct GradSlot {
  Tensor sum;
  bool owned = false;
};

/// slot += g; recorded when grad mode is on (create_graph).
void accumulate(GradSlot& slot, const Tensor& g) {
  if (!slot.sum.defined()) {
    slot.sum = g;
  } else if (grad_enabled) {
    slot.sum = slot.sum + g;
  } else if (slot.owned) {
    slot.sum.add_(g);
  } else {
    slot.sum = slot.sum + g;
    slot.owned = true;
  }
}

/// Adds g into `sum` (of `meta`; undefined: zeros) at elements [offset, offset + g.numel()):
/// a view op's gradient (Node::view_offset), never recorded. `sum` must be owned.
void add_block(Tensor& sum, const TensorMeta& meta, const Tensor& g, std::int64_t offset) {
  if (!sum.defined()) sum = zeros(meta.shape, meta.dtype);
  alias(sum, g.shape(), offset).add_(g);
}

/// slot += g placed at `offset` of a tensor of `meta` (zeros elsewhere).
void accumulate_block(GradSlot& slot, const TensorMeta& meta, const Tensor& g, std::int64_t offset) {
  if (slot.sum.defined() && !slot.owned) slot.sum = copy_data(slot.sum);
  add_block(slot.sum, meta, g, offset);
  slot.owned = true;
}

/// Whether nothing but this handle holds t or its storage.
bool unshared(const Tensor& t) {
  return t.impl().use_count() == 1 && t.impl()->storage.use_count() == 1;
}

/// A gradient that will be stored and later updated in place must not alias anything else.
Tensor owned(const Tensor& g) { return unshared(g) ? g : copy_data(g); }

std::string describe(const Node& n) {
  const std::string attrs = n.op->attributes();
  return attrs.empty() ? std::string(n.op->name()) : fmt::format("{}({})", n.op->name(), attrs);
}

/// "NaN" or "Inf" for the first non-finite element of a floating tensor, "" when all are finite.
std::string_view first_non_finite(const Tensor& t) {
  return dispatch_floating(t.dtype(), "backward", [&](auto tag) -> std::string_view {
    using T = decltype(tag);
    const T* p = t.data<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      if (std::isnan(p[i])) return "NaN";
      if (std::isinf(p[i])) return "Inf";
    }
    return "";
  });
}

/// Under an AnomalyGuard: throws at the first gradient with a NaN or Inf.
void check_finite(const Node& n, const std::vector<Tensor>& grads) {
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined() || !n.inputs[i].needs_grad) continue;
    const std::string_view bad = first_non_finite(grads[i]);
    if (bad.empty()) continue;
    const auto& in = n.inputs[i];
    throw GraphError(fmt::format(
        "backward (anomaly detection): the VJP of {} produced {} in the gradient of its input {} "
        "({} {}), which was made by {}", describe(n), bad, i, in.meta.shape, in.meta.dtype,
        in.producer ? describe(*in.producer) : std::string("a leaf tensor")));
  }
}

/// Whether a backward pass wants the gradient of n's input i (`wanted`: grad()'s mask).
bool wants(const Node& n, const std::vector<char>* wanted, std::size_t i) {
  return n.inputs[i].needs_grad && (wanted == nullptr || (*wanted)[i] != 0);
}

void check_vjp_result(const Node& n, const std::vector<char>* wanted, const std::vector<Tensor>& grads) {
  if (grads.size() != n.inputs.size()) {
    throw GraphError(fmt::format("{}: VJP returned {} gradients for {} inputs", describe(n),
                                 grads.size(), n.inputs.size()));
  }
  // A gradient the pass does not want may be left undefined, but one returned anyway must
  // still fit its input.
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const auto& in = n.inputs[i];
    if (!in.needs_grad || (!grads[i].defined() && !wants(n, wanted, i))) continue;
    if (!grads[i].defined()) {
      throw GraphError(fmt::format("{}: VJP returned no gradient for input {} ({} {}), which "
                                   "needs one", describe(n), i, in.meta.shape, in.meta.dtype));
    }
    if (grads[i].meta() != in.meta) {
      throw GraphError(fmt::format("{}: VJP returned a gradient of {} {} for input {}, which is "
                                   "{} {}", describe(n), grads[i].shape(), grads[i].dtype(), i,
                                   in.meta.shape, in.meta.dtype));
    }
  }
}

Tensor seed_for(const Tensor& out, const Tensor& grad_output, const char* fn) {
  if (!grad_output.defined()) {
    if (out.numel() != 1) {
      throw GraphError(fmt::format("{}: output has shape {}; a seed gradient is needed for a "
                                   "non-scalar output (pass grad_output of that shape)", fn,
                                   out.shape()));
    }
    return ones(out.shape(), out.dtype());
  }
  if (grad_output.meta() != out.meta()) {
    throw GraphError(fmt::format("{}: grad_output is {} {} but the output is {} {}", fn,
                                 grad_output.shape(), grad_output.dtype(), out.shape(),
                                 out.dtype()));
  }
  return grad_output;
}

/// What grad() returns for an input the outputs do not depend on.
enum class Unused { zeros, undefined, error };

/// Runs backward from `outputs`. With `captures` empty, gradients of leaves accumulate
/// into their grad(); otherwise the gradients of exactly the captured tensors are returned.
/// With `create_graph` every VJP is recorded, so the gradients carry a graph of their own.
std::vector<Tensor> run_backward(const std::vector<Tensor>& outputs,
                                 const std::vector<Tensor>& grad_outputs, bool retain_graph,
                                 bool create_graph, const std::vector<Tensor>* captures,
                                 Unused unused, const char* fn) {
  if (grad_outputs.size() != outputs.size() && !grad_outputs.empty()) {
    throw GraphError(fmt::format("{}: {} grad_outputs for {} outputs", fn, grad_outputs.size(),
                                 outputs.size()));
  }
  std::vector<Node*> roots;
  std::vector<Tensor> seeds;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    if (!out.defined()) throw GraphError(fmt::format("{}: output {} is undefined", fn, i));
    if (!out.requires_grad()) {
      throw GraphError(fmt::format(
          "{}: output {} ({} {}) does not require grad: no input of the ops that made it "
          "requires grad, it was computed under a NoGradGuard, or it was detached", fn, i,
          out.shape(), out.dtype()));
    }
    seeds.push_back(seed_for(out, grad_outputs.empty() ? Tensor() : grad_outputs[i], fn));
    if (out.impl()->grad_fn) roots.push_back(out.impl()->grad_fn.get());
  }

  TapeGraph tg = build_graph(roots);
  const auto order = consumers_first(tg);
  for (Node* n : tg.nodes) {
    if (n->released) {
      throw GraphError(fmt::format(
          "{}: trying to backward through the graph a second time: the saved tensors of {} "
          "were freed by an earlier backward. Pass retain_graph=true to the first backward "
          "if you need to backward through the graph again", fn, describe(*n)));
    }
  }

  std::vector<GradSlot> vertex_grad(tg.nodes.size());
  std::unordered_map<const TensorImpl*, GradSlot> leaf_grad;  // used when capturing
  std::unordered_map<const Node*, std::vector<std::size_t>> captured_nodes;
  std::vector<Tensor> captured;
  if (captures != nullptr) {
    captured.resize(captures->size());
    for (std::size_t i = 0; i < captures->size(); ++i) {
      const Tensor& c = (*captures)[i];
      if (!c.defined() || !c.requires_grad()) {
        throw GraphError(fmt::format(
            "{}: input {} does not require grad, so it has no gradient to compute", fn, i));
      }
      if (c.impl()->grad_fn) captured_nodes[c.impl()->grad_fn.get()].push_back(i);
    }
  }

  // grad() computes only what leads to its inputs: an input of a node is wanted when it is a
  // captured leaf or its producer is captured or has a wanted input itself; a node with no
  // wanted input is skipped. (backward() wants every leaf: no mask.)
  std::vector<std::vector<char>> wanted;
  std::vector<char> useful;
  if (captures != nullptr) {
    std::unordered_map<const TensorImpl*, bool> captured_leaves;
    for (const Tensor& c : *captures) {
      if (!c.impl()->grad_fn) captured_leaves[c.impl().get()] = true;
    }
    wanted.resize(tg.nodes.size());
    useful.assign(tg.nodes.size(), 0);
    for (auto it = order.rbegin(); it != order.rend(); ++it) {  // producers first
      const Node& n = *tg.graph[*it].node;
      auto& w = wanted[*it];
      w.assign(n.inputs.size(), 0);
      for (std::size_t i = 0; i < n.inputs.size(); ++i) {
        const auto& in = n.inputs[i];
        if (!in.needs_grad) continue;
        w[i] = in.producer ? useful[static_cast<std::size_t>(in.producer->vertex)] ||
                                 captured_nodes.count(in.producer.get()) > 0
                           : in.leaf && captured_leaves.count(in.leaf.get()) > 0;
        useful[*it] |= w[i];
      }
    }
  }

  GradMode mode(create_graph);
  // Adds g to the gradient of a leaf whose value was `meta` in the graph: all of it, or, for a
  // view op (offset >= 0, not recording), g placed at elements [offset, offset + g.numel()).
  auto deliver_to_leaf = [&](const std::shared_ptr<TensorImpl>& leaf, const TensorMeta& meta,
                             const Tensor& g, std::int64_t offset) {
    if (captures == nullptr && (leaf->dtype != meta.dtype || leaf->shape != meta.shape)) {
      // set_data (Module::to) changed the leaf after this graph was recorded.
      throw GraphError(fmt::format("backward: a leaf used by this graph as {} {} is now {} {} "
                                   "(its data was replaced, e.g. by Module::to, after the "
                                   "forward); run the forward again", meta.shape, meta.dtype,
                                   leaf->shape, leaf->dtype));
    }
    if (captures != nullptr) {
      auto& slot = leaf_grad[leaf.get()];
      if (offset >= 0) accumulate_block(slot, meta, g, offset);
      else accumulate(slot, g);
    } else if (create_graph) {  // grad() carries the graph: never updated in place
      leaf->grad = (leaf->grad ? Tensor(leaf->grad) + g : g.clone()).impl();
    } else if (offset >= 0) {  // a leaf's grad() is its own: updated in place
      Tensor sum = leaf->grad ? Tensor(leaf->grad) : Tensor();
      add_block(sum, meta, g, offset);
      leaf->grad = sum.impl();
    } else if (!leaf->grad) {
      leaf->grad = owned(g).impl();
    } else {
      Tensor(leaf->grad).add_(g);
    }
  };
  // Routes g to input i of n: into its producer's slot or to its leaf.
  auto deliver = [&](const Node& n, std::size_t i, const Tensor& g, std::int64_t offset) {
    const auto& in = n.inputs[i];
    if (in.producer) {
      auto& slot = vertex_grad[static_cast<std::size_t>(in.producer->vertex)];
      if (offset >= 0) accumulate_block(slot, in.meta, g, offset);
      else accumulate(slot, g);
    } else if (in.leaf) {
      deliver_to_leaf(in.leaf, in.meta, g, offset);
    }
  };

  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const auto& impl = outputs[i].impl();
    if (impl->grad_fn) {
      accumulate(vertex_grad[static_cast<std::size_t>(impl->grad_fn->vertex)], seeds[i]);
    } else {
      deliver_to_leaf(impl, seeds[i].meta(), seeds[i], -1);
    }
  }

  // OpContext::grad_sum for input i of `current`: the sum its gradient would be added into,
  // when that is the pass's own tensor (a slot's sum nothing else holds, or the leaf's grad)
  // and the VJP does not read it. `handed` remembers what was given out, so that a VJP
  // returning it is taken as already added.
  const auto claim = [](GradSlot& slot) {
    // A gradient handed on unchanged (add's VJP gives grad_out to both inputs) is no longer
    // shared once the other holders are done with it.
    if (slot.sum.defined() && unshared(slot.sum)) slot.owned = true;
    return slot.owned ? slot.sum : Tensor();
  };
  const Node* current = nullptr;
  const Tensor* current_grad_out = nullptr;
  std::vector<const TensorImpl*> handed;
  const std::function<Tensor(std::size_t)> grad_sums = [&](std::size_t i) -> Tensor {
    const Node::Input& in = current->inputs[i];
    Tensor sum;
    if (in.producer) {
      sum = claim(vertex_grad[static_cast<std::size_t>(in.producer->vertex)]);
    } else if (in.leaf && captures != nullptr) {
      auto it = leaf_grad.find(in.leaf.get());
      if (it != leaf_grad.end()) sum = claim(it->second);
    } else if (in.leaf && in.leaf->grad && in.leaf->shape == in.meta.shape &&
               in.leaf->dtype == in.meta.dtype) {
      sum = Tensor(in.leaf->grad);
    }
    if (!sum.defined() || sum.meta() != in.meta || sum.requires_grad()) return {};
    const auto& storage = sum.impl()->storage;
    if (current_grad_out->impl()->storage == storage) return {};
    for (const SavedTensor& s : current->saved) {
      if (s.tensor.defined() && s.tensor.impl()->storage == storage) return {};
    }
    if (handed.empty()) handed.assign(current->inputs.size(), nullptr);
    handed[i] = sum.impl().get();
    return sum;
  };
  const bool sums_allowed = !create_graph && !anomaly_enabled;

  for (std::size_t v : order) {
    Node& n = *tg.graph[v].node;
    Tensor grad_out = std::move(vertex_grad[v].sum);
    if (!grad_out.defined()) continue;
    if (!captured_nodes.empty()) {
      if (auto it = captured_nodes.find(&n); it != captured_nodes.end()) {
        for (std::size_t i : it->second) captured[i] = grad_out;
      }
    }
    if (!useful.empty() && !useful[v]) continue;
    if (create_graph && !n.op->differentiable_vjp()) {
      throw GraphError(fmt::format(
          "{}: create_graph=true records every VJP so that gradients can be differentiated "
          "again, but the VJP of {} calls raw kernels (it declares differentiable_vjp = false), "
          "so its gradient cannot carry a graph", fn, describe(n)));
    }
    const std::vector<char>* mask = wanted.empty() ? nullptr : &wanted[v];
    if (n.view_offset >= 0 && !create_graph && !anomaly_enabled) {
      // A view of input 0 (OpHolder::view): its VJP would place grad_out at this block of a
      // tensor of zeros; add it there instead.
      if (!retain_graph) {
        n.saved.clear();
        n.released = true;
      }
      if (wants(n, mask, 0)) deliver(n, 0, grad_out, n.view_offset);
      continue;
    }
    current = &n;
    current_grad_out = &grad_out;
    handed.clear();
    OpContext ctx(&n, mask, sums_allowed ? &grad_sums : nullptr);
    std::vector<Tensor> grads = n.op->vjp(ctx, grad_out);
    check_vjp_result(n, mask, grads);
    if (anomaly_enabled) check_finite(n, grads);
    if (!retain_graph) {
      n.saved.clear();
      n.released = true;
    }
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!wants(n, mask, i)) continue;
      if (!handed.empty() && handed[i] != nullptr && grads[i].impl().get() == handed[i]) {
        bump_version(grads[i]);  // added into by the VJP (OpContext::grad_sum)
      } else {
        deliver(n, i, grads[i], -1);
      }
    }
  }
  // Nodes that got no gradient were still part of this pass: release them too.
  if (!retain_graph) {
    for (Node* n : tg.nodes) {
      n->saved.clear();
      n->released = true;
    }
  }

  if (captures == nullptr) return {};
  for (std::size_t i = 0; i < captures->size(); ++i) {
    const Tensor& c = (*captures)[i];
    if (!c.impl()->grad_fn) {
      auto it = leaf_grad.find(c.impl().get());
      if (it != leaf_grad.end()) captured[i] = it->second.sum;
    }
    if (captured[i].defined()) continue;
    if (unused == Unused::error) {
      throw GraphError(fmt::format(
          "{}: input {} ({} {}) is not used by the outputs' graph, so it has no gradient; pass "
          "allow_unused = true to get an undefined Tensor for it", fn, i, c.shape(), c.dtype()));
    }
    if (unused == Unused::zeros) captured[i] = zeros(c.shape(), c.dtype());
  }
  return captured;
}

}  // namespace
}  // namespace detail

// ---- OpContext ------------------------------------------------------------------------------

void OpContext::save(const Tensor& t) {
  if (node_ == nullptr) return;
  // Saved as a detached handle: a node saving its own output must not own itself. An input
  // that requires grad is also kept as it is, for VJPs recorded under create_graph.
  if (!t.defined()) {
    node_->saved.push_back({});
    return;
  }
  node_->saved.push_back({t.detach(), t.version(), t.requires_grad() ? t.impl() : nullptr, {}});
}

Tensor OpContext::saved(std::size_t i) const {
  if (node_ == nullptr || i >= node_->saved.size()) {
    throw GraphError(fmt::format("{}: saved tensor {} does not exist ({} saved{})",
                                 node_ ? node_->op->name() : "op", i,
                                 node_ ? node_->saved.size() : 0,
                                 node_ && node_->released ? "; freed by an earlier backward" : ""));
  }
  const auto& s = node_->saved[i];
  if (s.tensor.defined() && s.tensor.version() != s.version) {
    throw GraphError(fmt::format(
        "{}: one of the tensors it saved for backward ({} {}, saved #{}) was modified by an "
        "in-place operation (version {} -> {}); clone it before changing it", node_->op->name(),
        s.tensor.shape(), s.tensor.dtype(), i, s.version, s.tensor.version()));
  }
  // Recording is on inside a VJP only under create_graph: hand out the graph too.
  if (!detail::grad_enabled) return s.tensor;
  if (s.source) return Tensor(s.source);
  if (auto producer = s.output_of.lock()) {
    Tensor out = detail::alias(s.tensor, s.tensor.shape());
    out.impl()->requires_grad = true;
    out.impl()->grad_fn = std::move(producer);
    return out;
  }
  return s.tensor;
}

Tensor OpContext::grad_sum(std::size_t i) const {
  return grad_sums_ != nullptr && needs_input_grad(i) ? (*grad_sums_)(i) : Tensor();
}

bool OpContext::needs_input_grad(std::size_t i) const {
  return node_ != nullptr && i < node_->inputs.size() && detail::wants(*node_, wanted_, i);
}

const TensorMeta& OpContext::input(std::size_t i) const {
  if (node_ == nullptr || i >= node_->inputs.size()) {
    throw GraphError(fmt::format("OpContext::input: no input {} here", i));
  }
  return node_->inputs[i].meta;
}

std::size_t OpContext::num_inputs() const { return node_ ? node_->inputs.size() : 0; }

// ---- public entry points ----------------------------------------------------------------------

void backward(const Tensor& output, const Tensor& grad_output,
              std::optional<bool> retain_graph, bool create_graph) {
  std::vector<Tensor> seeds;
  if (grad_output.defined()) seeds.push_back(grad_output);
  detail::run_backward({output}, seeds, retain_graph.value_or(create_graph), create_graph,
                       nullptr, detail::Unused::zeros, "backward");
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, bool retain_graph) {
  return detail::run_backward(outputs, grad_outputs, retain_graph, false, &inputs,
                              detail::Unused::zeros, "grad");
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, const GradOptions& options) {
  return detail::run_backward(
      outputs, grad_outputs, options.retain_graph.value_or(options.create_graph),
      options.create_graph, &inputs,
      options.allow_unused ? detail::Unused::undefined : detail::Unused::error, "grad");
}

bool is_grad_enabled() { return detail::grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(detail::grad_enabled) { detail::grad_enabled = false; }
EnableGradGuard::EnableGradGuard() : previous_(std::exchange(detail::grad_enabled, true)) {}
EnableGradGuard::~EnableGradGuard() { detail::grad_enabled = previous_; }
AnomalyGuard::AnomalyGuard() : previous_(detail::anomaly_enabled) { detail::anomaly_enabled = true; }
AnomalyGuard::~AnomalyGuard() { detail::anomaly_enabled = previous_; }
bool is_anomaly_enabled() { return detail::anomaly_enabled; }
NoGradGuard::~NoGradGuard() { detail::grad_enabled = previous_; }

std::int64_t live_tape_records() { return detail::live_nodes.load(); }

}  // namespace tapegrad
