// Every registered op has gradient-checker samples, and every sample's VJP matches finite
// differences: a wrong VJP in any built-in fails here even if its own tests miss it.
#include <algorithm>
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
