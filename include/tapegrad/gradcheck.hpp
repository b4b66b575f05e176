#pragma once
/// \file
/// The gradient checker: VJPs against central finite differences, localisation of the op
/// that is wrong inside a whole graph, the contract checks every registered op gets, graph
/// export to GraphViz DOT, and an explanation of why a tensor has no gradient.
///
/// Precision: the checker works in f64. f32 inputs are checked through f64 copies: `fn`
/// runs on the copies, so it exercises the ops' f64 kernels (the f32 kernels are the same
/// code instantiated for float). The report says which inputs were converted.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tapegrad/op.hpp"
#include "tapegrad/tensor.hpp"

namespace tapegrad {

enum class GradcheckMode : std::uint8_t {
  /// For each of `probes` random upstream gradients c: every input element's
  /// ∂<fn(x), c>/∂x by central differences against the VJP Jᵀc. Cost: 2·numel(inputs)
  /// forwards and `probes` backwards. The default: it localises the worst element.
  elementwise,
  /// The whole Jacobian, entry by entry (one backward per output element). Small cases only.
  full,
  /// For each probe, random directions t (per input) and c: <J·t, c> by central
  /// differences against <t, Jᵀ·c>. Cost: 2 forwards and 1 backward per probe and input.
  /// A probe that fails only says where to look: its direction is split in halves, each
  /// compared as a direction of its own (a half that passes is trusted like any probe), down
  /// to single elements compared element-wise, which decide the verdict. The re-check stops
  /// at the first element it confirms wrong: about 4·log2(n) forwards for one wrong element.
  fast,
};

/// Tolerance: a compared value fails when
///   |analytic - numeric| > atol + rtol·|numeric| + rounding,
/// where `rounding` bounds what floating point alone does to the numeric value. For a
/// central difference projected on an upstream gradient c over fn's n outputs f_i,
/// numeric = Σ_i c_i (f_i(x+h) - f_i(x-h)) / 2h, computed difference-first, and
///   rounding = [ 2^-52 · Σ_i |c_i| (|f_i(x+h)| + |f_i(x-h)|)  +  γ_n · Σ_i |c_i (f_i(x+h) - f_i(x-h))| ] / 2h,
/// with γ_n = n·u / (1 - n·u), u = 2^-53 (the n-term sum); 2^-52 allows two roundings on
/// each value fn returns. Outputs bitwise equal at x+h and x-h add nothing (no step moved
/// them). A one-sided second-order step weighs f(x), f(x±h), f(x±2h) by 3, 4, 1 over 2h.
/// For n outputs of size ~1 that is about n · 2.2e-16 / eps: 3.6e-6 for n = 16,384 at the
/// default eps, far below the 3e-4 relative error of a VJP scaled by 1 + 3e-4.
///
/// Kinks: when an op of fn that declares `branches` (relu, abs, max_pool2d, max) takes
/// another branch at x ± h than at x, the difference is not trusted: the checker retries
/// with steps h/10 and h/100, each central first, then one-sided (second order) on a side
/// that changes no branch. Only when no step avoids a kink may the value be excused as one
/// (the one-sided differences disagree and the VJP lies between them).
struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step (the first one tried)
  double atol = 1e-7;
  double rtol = 1e-5;
  GradcheckMode mode = GradcheckMode::elementwise;
  int probes = 3;  ///< random upstream gradients (elementwise, fast)
  std::uint64_t seed = 0;
};

/// What the checker found for one input.
struct GradcheckInput {
  std::size_t index = 0;  ///< position in the inputs
  bool defined = true;    ///< false for an absent optional input (an undefined Tensor)
  TensorMeta meta;        ///< as passed in (f32 inputs are checked through an f64 copy)
  bool checked = false;   ///< false for inputs that do not require grad
  std::int64_t compared = 0;  ///< values compared (elements × probes, or Jacobian entries)
  std::int64_t failing = 0;   ///< of those, how many exceed the tolerance
  double max_abs_error = 0;
  double max_rel_error = 0;  ///< |a - n| / max(|a|, |n|)
  /// The worst element (by error over the allowed error): its multi-index in the input,
  /// the probe (or, in full mode, the flat output index), and both values there.
  std::vector<std::int64_t> worst_index;
  std::int64_t worst_probe = -1;
  double analytic = 0;
  double numeric = 0;
  /// Values at a kink that no step avoided: the one-sided differences disagree and the
  /// analytic value lies between them. Not failures.
  std::int64_t kinks = 0;
  std::vector<std::int64_t> kink_index;
  double kink_forward = 0;   ///< one-sided differences at the first kink
  double kink_backward = 0;
  std::string kink_op;       ///< "relu (x = 0)": the op whose kink it is
  /// Steps whose first try crossed a kink (an op's branch changed) and that were compared
  /// on a smaller or one-sided step instead, and the op of the first.
  std::int64_t retried = 0;
  std::string retried_op;
  /// Fast mode: probes whose projection failed, re-checked by halves.
  std::int64_t rechecked_probes = 0;
  bool passed() const { return failing == 0; }
};

struct GradcheckReport {
  bool passed = false;
  GradcheckMode mode = GradcheckMode::elementwise;
  GradcheckOptions options;
  std::string error;  ///< set when the check could not run (fn threw, nothing to check...)
  std::vector<GradcheckInput> inputs;  ///< one per input, in order
  std::vector<std::string> kinked_ops;  ///< ops in fn's graph that declare kinks
  double max_rel_error() const;
  /// A few lines: verdict, then one line per checked input. Never a whole Jacobian.
  std::string to_string() const;
};

using TensorFunction = std::function<Tensor(const std::vector<Tensor>&)>;

/// Checks fn's gradient with respect to every input that requires grad. Other inputs
/// (i64 targets, constants, undefined tensors) are passed through. fn is called many
/// times and must be deterministic (reseed inside fn if it draws random numbers).
GradcheckReport gradcheck(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

// ---- second order ---------------------------------------------------------------------------

/// gradgradcheck: the VJP's own VJP. For each input i that requires grad, the gradient
///   G_i(inputs, grad_output) = d<fn(inputs), grad_output>/d inputs[i]
/// (computed with create_graph) is gradchecked as a function of every input and of
/// grad_output: its VJP (the second-order graph) against finite differences of the
/// VJP. Finite differences evaluate G_i without create_graph, so the first-order VJP
/// that runs there is the plain one: the two VJP paths of an op are compared too.
struct GradgradcheckReport {
  bool passed = false;
  std::string error;  ///< set when the check could not run
  /// One per input that requires grad (`of_input`): its gradient as a function of
  /// (inputs..., grad_output); the report's last input is grad_output.
  std::vector<GradcheckReport> gradients;
  std::vector<std::size_t> of_input;
  std::string to_string() const;
};

/// grad_output: fn's upstream gradient, of its output's shape; undefined draws a random
/// one (magnitudes in [0.5, 1.5), random signs) from options.seed. Modes, tolerances and
/// kinks as gradcheck.
GradgradcheckReport gradgradcheck(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                                  const Tensor& grad_output = Tensor(),
                                  const GradcheckOptions& options = {});

// ---- localising the wrong op ---------------------------------------------------------------

/// Inside its scope every recorded op also keeps a copy of its input values, so that
/// check_graph can re-check each VJP at the exact inputs it saw. Costs one copy of every
/// input of every op: use it for a checking run, not for training.
class RecordInputsGuard {
 public:
  RecordInputsGuard();
  ~RecordInputsGuard();
  RecordInputsGuard(const RecordInputsGuard&) = delete;
  RecordInputsGuard& operator=(const RecordInputsGuard&) = delete;

 private:
  bool previous_;
};

/// One recorded op, re-checked.
struct NodeCheck {
  std::size_t position = 0;  ///< in topological (forward) order, from 0
  std::string op;
  std::string attributes;
  std::vector<TensorMeta> inputs;
  TensorMeta output;
  GradcheckReport report;  ///< the first order: the op's VJP
  /// The second order (check_graph with order 2): the VJP's own VJP (gradgradcheck), for
  /// an op whose first order passed and whose VJP is differentiable.
  bool second_order_checked = false;
  GradgradcheckReport second_order;
  /// 0 when the op passed, else the order that is wrong (1: its VJP, 2: its VJP's VJP).
  int wrong_order() const;
  bool passed() const { return wrong_order() == 0; }
};

struct GraphCheckReport {
  bool passed = false;
  std::string error;             ///< set when the graph could not be checked
  std::vector<NodeCheck> nodes;  ///< every node, producers first
  /// The first failing node in forward order, or nullptr.
  const NodeCheck* first_failure() const;
  /// Names of every failing op, in forward order.
  std::vector<std::string> failing_ops() const;
  std::string to_string() const;
};

/// Re-checks the VJP of every op recorded under a RecordInputsGuard that `output` depends
/// on, each at the exact inputs it saw, producers first; names the first that is wrong.
/// Ops that draw random numbers (dropout) see the global generator reseeded before every
/// evaluation, so it is left in another (deterministic) state.
///
/// With `order` 2 every op whose VJP passed is also gradgradchecked: for a graph that
/// differentiates a gradient (a gradient penalty, an HVP, recorded with create_graph under
/// the guard), where an op can have a VJP that is right but not differentiated right. The
/// report says which order of which op is wrong.
GraphCheckReport check_graph(const Tensor& output, const GradcheckOptions& options = {},
                             int order = 1);

// ---- the contract every op gets --------------------------------------------------------------

/// One sample of one op against the op contract.
struct ContractReport {
  std::string op;
  std::string sample;
  GradcheckReport gradcheck;
  /// The second order (gradgradcheck), for an op whose VJP is differentiable.
  bool second_order_checked = false;
  GradgradcheckReport gradgradcheck;
  /// Broken rules, one sentence each: VJP shapes, accumulation, determinism, linearity in
  /// grad_out, gradients computed for inputs that need none.
  std::vector<std::string> failures;
  bool passed() const {
    return gradcheck.passed && failures.empty() && (!second_order_checked || gradgradcheck.passed);
  }
};

struct OpCheckReport {
  std::string op;
  std::string error;  ///< e.g. "registered without sample inputs"
  std::vector<ContractReport> cases;
  bool passed() const;
  double max_rel_error() const;
  std::string to_string(bool verbose = false) const;
};

/// Runs one sample through gradcheck (with the sample's eps/atol/rtol when set), the
/// contract checks and, when the op's VJP is differentiable, gradgradcheck.
ContractReport check_op_sample(const OpInfo& op, const Sample& sample,
                               const GradcheckOptions& options = {});
/// Every sample of `op`; an op without samples fails.
OpCheckReport check_op(const OpInfo& op, const GradcheckOptions& options = {});

// ---- seeing the graph --------------------------------------------------------------------------

/// The graph recorded for `output` as GraphViz DOT: one node per op (name, attributes,
/// output shape and dtype, bytes saved for backward), leaves requiring grad as boxes,
/// edges from producer to consumer labelled with the tensor's shape.
std::string to_dot(const Tensor& output);
/// Writes to_dot(output) to `path`; throws IoError when it cannot.
void write_dot(const Tensor& output, const std::string& path);

/// Why `tensor` gets no gradient from a backward of `output`, in one or two sentences that
/// name the op cutting the path: no path to the output, computed under a NoGradGuard,
/// integer dtype, detached, not a leaf, or set to require grad after it was used. Says so
/// when the tensor does get a gradient.
std::string explain_no_grad(const Tensor& output, const Tensor& tensor);

}  // namespace tapegrad

template <>
struct fmt::formatter<tapegrad::GradcheckReport> : fmt::formatter<std::string_view> {
  auto format(const tapegrad::GradcheckReport& r, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(r.to_string(), ctx);
  }
};
template <>
struct fmt::formatter<tapegrad::GraphCheckReport> : fmt::formatter<std::string_view> {
  auto format(const tapegrad::GraphCheckReport& r, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(r.to_string(), ctx);
  }
};
