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
  /// An input that fails is then re-checked element-wise to localise the worst element.
  fast,
};

struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step
  double atol = 1e-7;  ///< an element fails when |analytic - numeric| > atol + rtol·|numeric|
  double rtol = 1e-5;
  GradcheckMode mode = GradcheckMode::elementwise;
  int probes = 3;  ///< random upstream gradients (elementwise, fast)
  std::uint64_t seed = 0;
};

/// What the checker found for one input.
struct GradcheckInput {
  std::size_t index = 0;  ///< position in the inputs
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
  /// Steps that crossed a kink of an op declaring one: the one-sided differences disagree
  /// and the analytic value lies between them. Not failures.
  std::int64_t kinks = 0;
  std::vector<std::int64_t> kink_index;
  double kink_forward = 0;   ///< one-sided differences at the first kink
  double kink_backward = 0;
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
  GradcheckReport report;
  bool passed() const { return report.passed; }
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
GraphCheckReport check_graph(const Tensor& output, const GradcheckOptions& options = {});

// ---- the contract every op gets --------------------------------------------------------------

/// One sample of one op against the op contract.
struct ContractReport {
  std::string op;
  std::string sample;
  GradcheckReport gradcheck;
  /// Broken rules, one sentence each: VJP shapes, accumulation, determinism, linearity in
  /// grad_out, gradients computed for inputs that need none.
  std::vector<std::string> failures;
  bool passed() const { return gradcheck.passed && failures.empty(); }
};

struct OpCheckReport {
  std::string op;
  std::string error;  ///< e.g. "registered without sample inputs"
  std::vector<ContractReport> cases;
  bool passed() const;
  double max_rel_error() const;
  std::string to_string(bool verbose = false) const;
};

/// Runs one sample through gradcheck (with the sample's eps/atol/rtol when set) and the
/// contract checks.
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
