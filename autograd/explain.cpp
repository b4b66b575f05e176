// explain_no_grad: why a tensor gets no gradient from a backward of some output.
//
// The recorded graph only links tensors that require grad, so the cut itself is found
// through what the engine notes on the side: every node input that did not require grad
// remembers the tensor passed in (Node::Input::source), and a tensor made under a NoGradGuard from inputs requiring
// grad remembers the op and those inputs (TensorImpl::untracked).
#include <unordered_set>

#include <fmt/format.h>

#include "autograd/tensor_impl.hpp"
#include "tapegrad/gradcheck.hpp"

namespace tapegrad {
namespace {

using Impl = detail::TensorImpl;

bool node_derives(const detail::Node* n, const Impl* target,
                  std::unordered_set<const void*>& seen);

/// Whether `target` is an ancestor of `t` (or `t` itself), following recorded inputs and
/// the inputs noted for tensors made under a NoGradGuard.
bool derives_from(const Impl* t, const Impl* target, std::unordered_set<const void*>& seen) {
  if (t == nullptr) return false;
  if (t == target) return true;
  if (!seen.insert(t).second) return false;
  if (t->untracked) {
    for (const auto& w : t->untracked->from) {
      if (derives_from(w.lock().get(), target, seen)) return true;
    }
  }
  return t->grad_fn && node_derives(t->grad_fn.get(), target, seen);
}

bool node_derives(const detail::Node* n, const Impl* target,
                  std::unordered_set<const void*>& seen) {
  if (!seen.insert(n).second) return false;
  for (const auto& in : n->inputs) {
    if (in.leaf.get() == target) return true;
    if (in.producer && in.producer == target->grad_fn) return true;
    // (source is noted only for inputs that did not require grad.)
    if (derives_from(in.leaf ? in.leaf.get() : in.source().get(), target, seen)) return true;
    if (in.producer && node_derives(in.producer.get(), target, seen)) return true;
  }
  return false;
}

std::string node_name(const detail::Node& n) {
  const std::string attrs = n.op->attributes();
  return attrs.empty() ? std::string(n.op->name()) : fmt::format("{}({})", n.op->name(), attrs);
}

}  // namespace

std::string explain_no_grad(const Tensor& output, const Tensor& tensor) {
  if (!tensor.defined()) return "the tensor is undefined";
  if (!output.defined()) return "the output is undefined";
  const Impl* target = tensor.impl().get();
  if (!is_floating(tensor.dtype())) {
    return fmt::format("the tensor is {} {}: integer tensors carry no gradient", tensor.shape(),
                       tensor.dtype());
  }
  if (!output.requires_grad()) {
    if (output.impl()->untracked) {
      return fmt::format("the output was computed by {} under a NoGradGuard (recording was "
                         "off), so nothing was recorded for it", output.impl()->untracked->op);
    }
    return "the output does not require grad: no input of the ops that made it required grad";
  }
  // Walk the recorded graph: does the tensor reach the output, and where is a cut?
  std::vector<const detail::Node*> stack{output.impl()->grad_fn.get()};
  std::unordered_set<const detail::Node*> visited;
  std::string cut;
  while (!stack.empty()) {
    const detail::Node* n = stack.back();
    stack.pop_back();
    if (n == nullptr || !visited.insert(n).second) continue;
    for (std::size_t i = 0; i < n->inputs.size(); ++i) {
      const auto& in = n->inputs[i];
      if (in.leaf.get() == target || (in.producer && in.producer == tensor.impl()->grad_fn)) {
        if (!tensor.is_leaf()) {
          return fmt::format("the tensor reaches the output through {}, but it is not a leaf: "
                             "backward accumulates grad() only into leaves; use "
                             "tapegrad::grad({{output}}, {{tensor}}) for its gradient",
                             node_name(*n));
        }
        return fmt::format("the tensor does get a gradient: {} uses it as input {}",
                           node_name(*n), i);
      }
      if (in.producer) {
        stack.push_back(in.producer.get());
        continue;
      }
      if (!cut.empty() || in.needs_grad) continue;
      if (!in.unrecorded) continue;
      const auto src = in.source();
      if (in.unrecorded->storage.lock() == tensor.impl()->storage && src.get() != target) {
        cut = fmt::format("{} used a detached copy of the tensor as input {} (same storage, "
                          "does not require grad): detach() cut the path", node_name(*n), i);
        continue;
      }
      if (!src) continue;
      if (src.get() == target) {
        cut = fmt::format("{} used the tensor as input {} while it did not require grad{}",
                          node_name(*n), i,
                          tensor.requires_grad()
                              ? " yet (set_requires_grad(true) must come before the forward)"
                              : " (call set_requires_grad(true) on it before the forward)");
      } else if (src->untracked) {
        std::unordered_set<const void*> seen;
        if (derives_from(src.get(), target, seen)) {
          cut = fmt::format("input {} of {} was computed from the tensor by {} under a "
                            "NoGradGuard, which cut the path", i, node_name(*n),
                            src->untracked->op);
        }
      } else {
        std::unordered_set<const void*> seen;
        if (derives_from(src.get(), target, seen)) {
          cut = fmt::format("input {} of {} comes from the tensor but does not require grad "
                            "(detached somewhere upstream)", i, node_name(*n));
        }
      }
    }
  }
  if (!cut.empty()) return cut;
  if (!tensor.requires_grad()) {
    if (tensor.impl()->untracked) {
      return fmt::format("the tensor was computed by {} under a NoGradGuard, so it does not "
                         "require grad", tensor.impl()->untracked->op);
    }
    return "the tensor does not require grad: call set_requires_grad(true) on it (a leaf) "
           "before the forward; a detach()ed copy never requires grad";
  }
  return "no path: no recorded op between the tensor and the output uses it";
}

}  // namespace tapegrad
