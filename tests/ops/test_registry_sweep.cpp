// Every registered op has gradient-checker samples, and every sample's VJP matches finite
// differences: a wrong VJP in any built-in fails here even if its own tests miss it.
#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;

TEST_CASE("registry: the built-in ops are all registered, once each", "[ops][registry]") {
  const auto ops = tg::registered_ops();
  std::set<std::string> names;
  for (const auto& op : ops) {
    INFO(op.name);
    CHECK(names.insert(op.name).second);
    CHECK(op.key != nullptr);
  }
  for (const char* expected :
       {"add",        "sub",         "mul",         "div",     "add_scalar",  "mul_scalar",
        "div_scalar", "rsub_scalar", "rdiv_scalar", "pow",     "neg",         "exp",
        "log",        "sqrt",        "abs",         "relu",    "sigmoid",     "tanh",
        "sum",        "mean",        "max",         "reshape", "permute",     "clone",
        "to",         "matmul",      "linear",      "softmax", "log_softmax", "nll_loss",
        "mse_loss",   "dropout"}) {
    INFO(expected);
    CHECK(names.count(expected) == 1);
    CHECK(tg::find_op(expected).name == expected);
  }
  REQUIRE_THROWS_AS(tg::find_op("no_such_op"), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::find_op("no_such_op"),
                      Catch::Contains("no_such_op") && Catch::Contains("matmul"));
}

TEST_CASE("registry: every sample of every registered op passes check_vjp",
          "[ops][registry][vjp]") {
  std::uint64_t seed = 9000;
  std::size_t samples_checked = 0;
  for (const auto& op : tg::registered_ops()) {
    INFO("op " << op.name);
    REQUIRE(op.samples);
    const auto samples = op.samples();
    CHECK_FALSE(samples.empty());
    for (const auto& sample : samples) {
      INFO("sample '" << sample.label << "'");
      CHECK_FALSE(sample.label.empty());
      REQUIRE(sample.fn);
      const bool any_grad =
          std::any_of(sample.inputs.begin(), sample.inputs.end(),
                      [](const tg::Tensor& t) { return t.defined() && t.requires_grad(); });
      CHECK(any_grad);
      VjpOptions opts;
      if (sample.eps != 0) opts.eps = sample.eps;
      if (sample.atol != 0) opts.atol = sample.atol;
      if (sample.rtol != 0) opts.rtol = sample.rtol;
      // The sample must actually exercise the op it belongs to.
      {
        const tg::Tensor out = sample.fn(sample.inputs);
        CHECK(out.requires_grad());
      }
      check_vjp(sample.fn, sample.inputs, ++seed, opts);
      ++samples_checked;
    }
  }
  CHECK(samples_checked >= 40);
}

namespace {

/// The gradients of the sample's leaves for the upstream gradient `cotangent`, computed
/// with OpContext::grad_sum available (`sums`) or not (an AnomalyGuard turns it off), on
/// paths where a VJP finds a gradient already being summed for its input:
///   others = 0: the leaves already have a grad() (a second backward accumulates into it);
///   others > 0: each input is a non-leaf h = x·1 that `others` more ops consume; they run
///               before the op's VJP (they consume its output), so the op finds their
///               gradient (one: a tensor nothing else holds) or the sum of them (two).
std::vector<tg::Tensor> summed_grads(const tg::Sample& sample, const tg::Tensor& cotangent,
                                     bool sums, int others) {
  const bool slot = others > 0;
  std::vector<tg::Tensor> leaves;
  for (const tg::Tensor& t : sample.inputs) {
    if (!t.defined()) {
      leaves.push_back(t);
      continue;
    }
    leaves.push_back(copy_values(t));
    if (t.requires_grad()) leaves.back().set_requires_grad(true);
  }
  std::optional<tg::AnomalyGuard> no_sums;
  if (!sums) no_sums.emplace();
  for (int pass = 0; pass < (slot ? 1 : 2); ++pass) {
    tg::manual_seed(77);  // the same dropout mask every time
    if (!slot) {
      sample.fn(leaves).backward(cotangent);
      continue;
    }
    std::vector<tg::Tensor> h = leaves;
    for (tg::Tensor& t : h) {
      if (t.defined() && t.requires_grad()) t = t * 1.0;
    }
    const tg::Tensor w = tg::sum(sample.fn(h) * cotangent);
    tg::Tensor total = w;
    for (const tg::Tensor& t : h) {
      if (!t.defined() || !t.requires_grad()) continue;
      for (int k = 1; k <= others; ++k) total = total + tg::sum(t * w * static_cast<double>(k));
    }
    total.backward();
  }
  std::vector<tg::Tensor> grads;
  for (const tg::Tensor& t : leaves) {
    if (t.defined() && t.requires_grad()) grads.push_back(t.grad());
  }
  return grads;
}

}  // namespace

TEST_CASE("registry: every VJP that adds into a gradient being summed matches the plain sum",
          "[ops][registry][grad_sum]") {
  std::uint64_t seed = 9500;
  for (const auto& op : tg::registered_ops()) {
    INFO("op " << op.name);
    for (const auto& sample : op.samples()) {
      INFO("sample '" << sample.label << "'");
      tg::manual_seed(77);
      const tg::Tensor out = sample.fn(sample.inputs);
      const tg::Tensor cotangent = random_cotangent(out.shape(), out.dtype(), ++seed);
      for (int others : {0, 1, 2}) {
        INFO("other consumers of each input: " << others << " (0: summed into leaves' grad())");
        const auto expected = summed_grads(sample, cotangent, false, others);
        const auto actual = summed_grads(sample, cotangent, true, others);
        REQUIRE(actual.size() == expected.size());
        for (std::size_t i = 0; i < actual.size(); ++i) {
          INFO("input " << i);
          REQUIRE(actual[i].defined() == expected[i].defined());
          const double tol = expected[i].dtype() == tg::DType::f32 ? 1e-5 : 1e-12;
          if (actual[i].defined()) CHECK_THAT(actual[i], AllClose(expected[i], tol, tol));
        }
      }
    }
  }
}
