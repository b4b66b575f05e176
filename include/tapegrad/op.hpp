#pragma once
/// \file
/// Defining ops: the one path that serves both tapegrad's built-in ops and ops written in
/// user code.
///
/// An op is a struct with:
///   - `static constexpr std::string_view name`, e.g. "softplus";
///   - `TensorMeta infer(std::span<const Tensor> inputs) const`: checks the arguments and
///     returns the output's shape and dtype (throw a tapegrad::Error on bad input);
///   - `Tensor forward(OpContext& ctx, std::span<const Tensor> inputs)`: computes the
///     output; calls `ctx.save(t)` for each residual the VJP needs. Non-tensor residuals
///     (a dim, a flag) can simply be stored in the struct's own members;
///   - `std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out)`: returns one
///     gradient per input, with that input's exact shape and dtype, or an undefined Tensor
///     where `!ctx.needs_input_grad(i)`. It may use the public ops freely. Without
///     create_graph it runs with recording off; with it, it is recorded like any forward,
///     so that gradients can be differentiated again: a VJP written with public ops on
///     grad_out, the inputs and the output it saved is twice differentiable as it stands.
///     Without create_graph it may instead add its gradient for input i into
///     `ctx.grad_sum(i)`, when that is defined, and return that tensor (OpContext::grad_sum);
///   - optional `static constexpr bool differentiable_vjp = false` for a VJP that calls raw
///     kernels (or reads intermediates it saved): create_graph through it throws GraphError
///     naming the op instead of producing a wrong second derivative;
///   - optional `static constexpr bool view = true` for an op whose forward may return a
///     contiguous block of input 0 (`alias(in[0], shape, offset)`) and whose VJP then only
///     places grad_out at that block (zeros elsewhere, no gradient for other inputs): when
///     the output does share input 0's storage and nothing is recorded, backward adds
///     grad_out into input 0's gradient at that block without calling the VJP, so T slices
///     of one tensor cost O(its size), not O(T · its size);
///   - optional `std::string attributes() const`: "stride=[1, 1], groups=2", for reports;
///   - optional `static std::vector<Sample> samples()`: inputs for the gradient checker;
///   - optional `static constexpr std::string_view kinks`: where the op is not smooth, e.g.
///     "x = 0" (relu) or "ties within a window";
///   - optional, with `kinks`: `Tensor branches(std::span<const Tensor> inputs, const Tensor& out)
///     const`: for each element, which piece of the op's piecewise definition it took, as
///     any tensor whose values differ between pieces (relu: x > 0; abs: the sign;
///     max_pool2d: the winner's index). The gradient checker compares them at x and x ± eps,
///     trusts a finite difference only where no branch changed, and otherwise retries with
///     smaller or one-sided steps; a kink that no step avoids is reported as "kink at ...",
///     not as a failure. An op that declares `kinks` without `branches` is judged from the
///     one-sided differences alone (a step is excused when they disagree and the VJP lies
///     between them).
///
/// Apply it with `apply(MyOp{...}, {x, w})`; register it once with `register_op<MyOp>()`
/// so the checker and `tapegrad-check` sweep it.
#include <concepts>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad {

namespace detail {
struct Node;
}

/// What an op's forward and VJP share: saved tensors and the inputs' metadata.
class OpContext {
 public:
  /// Saves a residual for the VJP (ignored when the op is not recorded). An in-place
  /// change of a saved tensor before backward is detected and reported.
  void save(const Tensor& t);
  /// Residual i, in the order saved. Inside a VJP recorded for create_graph, a saved input
  /// comes with its graph and the saved output with this op as its producer, so a VJP
  /// written with public ops is differentiable again.
  Tensor saved(std::size_t i) const;
  /// Whether input i needs a gradient (false in forward when nothing is recorded).
  bool needs_input_grad(std::size_t i) const;
  /// Shape and dtype input i had in forward.
  const TensorMeta& input(std::size_t i) const;
  std::size_t num_inputs() const;
  /// True when this forward is being recorded.
  bool recording() const { return node_ != nullptr; }
  /// In a VJP: the gradient of input i that this backward pass has summed so far, when the
  /// VJP may add into it in place (the leaf's existing `grad()`, or a sum of gradients that
  /// reached a non-leaf input from other consumers before); undefined otherwise (no gradient
  /// yet, input i not wanted, create_graph, anomaly mode, or the sum shares storage with
  /// grad_out or a saved tensor). A VJP that adds its gradient for input i into it returns
  /// that same tensor for input i, and the engine adds nothing more; it must not read it.
  /// This saves writing a new gradient and reading it back to add it (cat's gradient of a
  /// slice, layer_norm's grad_x, a parameter's gradient after zero_grad). Optional: a new
  /// gradient is always a correct answer.
  Tensor grad_sum(std::size_t i) const;
  /// Adds a non-differentiable extra output (e.g. max_pool2d's indices), returned by
  /// `apply_with_extras`.
  void add_extra_output(const Tensor& t) { extras_.push_back(t); }

  /// `wanted` (one flag per input, for a backward pass that computes only some
  /// gradients) narrows needs_input_grad further.
  /// `grad_sums`, in a backward pass, answers grad_sum.
  explicit OpContext(detail::Node* node, const std::vector<char>* wanted = nullptr,
                     const std::function<Tensor(std::size_t)>* grad_sums = nullptr)
      : node_(node), wanted_(wanted), grad_sums_(grad_sums) {}
  std::vector<Tensor> take_extras() { return std::move(extras_); }

 private:
  detail::Node* node_;
  const std::vector<char>* wanted_ = nullptr;
  const std::function<Tensor(std::size_t)>* grad_sums_ = nullptr;
  std::vector<Tensor> extras_;
};

/// One case for the gradient checker: inputs (leaves; the floating ones are checked) and
/// the function under test. `fn` should call the op through its public function.
struct Sample {
  std::string label;
  std::vector<Tensor> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  /// Finite-difference step and tolerances for this case; 0 means the checker's default.
  /// Ops whose forward rounds through f32 need a larger step and looser tolerances.
  double eps = 0;
  double atol = 0;
  double rtol = 0;
};

template <class Op>
concept OpDefinition = requires(Op op, const Op cop, OpContext& ctx,
                                std::span<const Tensor> in, const Tensor& g) {
  { Op::name } -> std::convertible_to<std::string_view>;
  { cop.infer(in) } -> std::same_as<TensorMeta>;
  { op.forward(ctx, in) } -> std::same_as<Tensor>;
  { op.vjp(ctx, g) } -> std::same_as<std::vector<Tensor>>;
};

namespace detail {

/// Which piece of its definition each element of one op application took (see `branches`).
struct BranchRecord {
  std::string_view op;
  std::string_view kinks;
  Tensor which;
};
/// This thread's log of branches, or nullptr when nobody listens (the gradient checker sets
/// one around its evaluations); returns the previous log.
std::vector<BranchRecord>* set_branch_log(std::vector<BranchRecord>* log);
std::vector<BranchRecord>* branch_log();

template <class Op>
concept HasBranches = requires(const Op op, std::span<const Tensor> in, const Tensor& out) {
  { Op::kinks } -> std::convertible_to<std::string_view>;
  { op.branches(in, out) } -> std::same_as<Tensor>;
};

/// Type-erased view of an op held by a graph node.
struct OpHolder {
  virtual ~OpHolder() = default;
  /// Holders come from the per-thread caches of small blocks that records use.
  static void* operator new(std::size_t bytes);
  static void operator delete(void* p, std::size_t bytes) noexcept;
  virtual std::string_view name() const = 0;
  virtual std::string attributes() const = 0;
  /// Where the op is not smooth; empty for a smooth op.
  virtual std::string_view kinks() const = 0;
  /// Whether the op says which branch of its kinks each element took (`branches`).
  virtual bool has_branches() const = 0;
  /// Whether its VJP may be recorded for create_graph (`differentiable_vjp`, default true).
  virtual bool differentiable_vjp() const = 0;
  /// Whether the op is a view of input 0 when its output shares that storage (`view`).
  virtual bool view() const = 0;
  virtual Tensor forward(OpContext& ctx, std::span<const Tensor> inputs) = 0;
  virtual std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) = 0;
  /// Runs a fresh copy of the op on `inputs` (recorded as usual); for the graph checker.
  virtual Tensor rerun(std::span<const Tensor> inputs) const = 0;
};

/// Records `op` applied to `inputs` on this thread's tape and runs its forward.
Tensor record(std::unique_ptr<OpHolder> op, std::span<const Tensor> inputs,
              const TensorMeta& meta, std::vector<Tensor>* extras);
/// Marks an unrecorded output made from inputs requiring grad (NoGradGuard), so
/// explain_no_grad can name the op that cut the path.
void note_untracked(std::string_view op, std::span<const Tensor> inputs, const Tensor& out);
/// True when grad mode is on and some floating input requires grad.
bool should_record(std::span<const Tensor> inputs);
/// Throws GraphError when a forward broke its own shape rule.
void check_forward_output(std::string_view op, const Tensor& out, const TensorMeta& meta);

template <OpDefinition Op>
Tensor apply_op(Op op, std::span<const Tensor> inputs, std::vector<Tensor>* extras);

template <OpDefinition Op>
struct OpHolderImpl final : OpHolder {
  explicit OpHolderImpl(Op o) : op(std::move(o)) {}
  std::string_view name() const override { return Op::name; }
  std::string attributes() const override {
    if constexpr (requires { op.attributes(); }) return op.attributes();
    else return {};
  }
  std::string_view kinks() const override {
    if constexpr (requires { Op::kinks; }) return Op::kinks;
    else return {};
  }
  bool has_branches() const override { return HasBranches<Op>; }
  bool differentiable_vjp() const override {
    if constexpr (requires { Op::differentiable_vjp; }) return Op::differentiable_vjp;
    else return true;
  }
  bool view() const override {
    if constexpr (requires { Op::view; }) return Op::view;
    else return false;
  }
  Tensor forward(OpContext& ctx, std::span<const Tensor> inputs) override {
    return op.forward(ctx, inputs);
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out) override {
    return op.vjp(ctx, grad_out);
  }
  Tensor rerun(std::span<const Tensor> inputs) const override {
    return apply_op(op, inputs, nullptr);
  }
  Op op;
};

template <OpDefinition Op>
Tensor run_op(Op op, std::span<const Tensor> inputs, std::vector<Tensor>* extras) {
  const TensorMeta meta = op.infer(inputs);
  if (should_record(inputs)) {
    return record(std::make_unique<OpHolderImpl<Op>>(std::move(op)), inputs, meta, extras);
  }
  OpContext ctx(nullptr);
  Tensor out = op.forward(ctx, inputs);
  check_forward_output(Op::name, out, meta);
  note_untracked(Op::name, inputs, out);
  if (extras != nullptr) *extras = ctx.take_extras();
  return out;
}

template <OpDefinition Op>
Tensor apply_op(Op op, std::span<const Tensor> inputs, std::vector<Tensor>* extras) {
  if constexpr (HasBranches<Op>) {
    if (std::vector<BranchRecord>* log = branch_log()) {
      const Op copy = op;
      Tensor out = run_op(std::move(op), inputs, extras);
      Tensor which;
      {
        // Ops that branches() itself may call are not part of fn's evaluation.
        struct Resume {
          std::vector<BranchRecord>* log;
          ~Resume() { set_branch_log(log); }
        } resume{set_branch_log(nullptr)};
        which = copy.branches(inputs, out);
      }
      log->push_back({Op::name, Op::kinks, std::move(which)});
      return out;
    }
  }
  return run_op(std::move(op), inputs, extras);
}

}  // namespace detail

/// Applies `op` to `inputs` and returns its (differentiable) output.
template <OpDefinition Op>
Tensor apply(Op op, std::span<const Tensor> inputs) {
  return detail::apply_op(std::move(op), inputs, nullptr);
}
template <OpDefinition Op>
Tensor apply(Op op, std::initializer_list<Tensor> inputs) {
  return apply(std::move(op), std::span<const Tensor>(inputs.begin(), inputs.size()));
}
/// Applies `op`; returns the output followed by the extra outputs the op added.
template <OpDefinition Op>
std::vector<Tensor> apply_with_extras(Op op, std::initializer_list<Tensor> inputs) {
  std::vector<Tensor> extras;
  Tensor out = detail::apply_op(std::move(op),
                                std::span<const Tensor>(inputs.begin(), inputs.size()), &extras);
  extras.insert(extras.begin(), std::move(out));
  return extras;
}

/// What the registry knows of an op.
struct OpInfo {
  std::string name;
  std::function<std::vector<Sample>()> samples;  ///< empty when the op has none
  const void* key = nullptr;                     ///< identifies the op type
  bool differentiable_vjp = true;                ///< see OpDefinition's differentiable_vjp
};

namespace detail {
template <class Op>
inline constexpr char op_key = 0;
/// Adds an op without first loading the built-ins (used by the built-in list itself).
void add_op(OpInfo info);
}  // namespace detail

/// Registers an op. Registering the same op again does nothing; another op under a name
/// that is taken throws ValueError.
void register_op_info(OpInfo info);
template <OpDefinition Op>
OpInfo op_info() {
  OpInfo info{std::string(Op::name), {}, &detail::op_key<Op>};
  if constexpr (requires { Op::samples(); }) info.samples = [] { return Op::samples(); };
  if constexpr (requires { Op::differentiable_vjp; }) info.differentiable_vjp = Op::differentiable_vjp;
  return info;
}
template <OpDefinition Op>
void register_op() {
  register_op_info(op_info<Op>());
}
/// Every registered op, built-ins first, in registration order.
std::vector<OpInfo> registered_ops();
/// The op named `name`; throws ValueError listing the known names when there is none.
OpInfo find_op(std::string_view name);

}  // namespace tapegrad
