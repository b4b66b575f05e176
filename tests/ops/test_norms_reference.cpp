// layer_norm, group_norm, batch_norm ([N, C] and [N, C, L]) and batch_norm2d against PyTorch
// 1.13 (CPU, float64), read from tests/fixtures/norms_reference.txt (make_norms_reference.py
// writes it and documents the format). For each case out = f(x, weight, bias) (the affine
// parameters when the case has them), a random upstream v that itself requires grad and
// random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = sum_i <g_i, u_i>,  ds/dx_j and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0), and so must the running
// statistics a batch_norm call leaves. A last case trains BatchNorm1d with momentum=None (a
// cumulative average) over three batches and evaluates it.
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/norms_reference.txt";

struct Case : tg::testing::FixtureCase {
  double option(std::size_t i) const {
    const std::vector<double>& config = values("config");
    if (i >= config.size())
      FAIL(fmt::format("{}: config has {} values, option {} was asked for", name, config.size(), i));
    return config[i];
  }
  std::int64_t integer(std::size_t i) const { return static_cast<std::int64_t>(std::llround(option(i))); }
  bool flag(std::size_t i) const { return integer(i) != 0; }
  /// The running statistic c<i> before the call (a fresh tensor, which the call may update).
  tg::Tensor running(std::size_t i) const { return tensor(fmt::format("c{}", i)); }
};

struct Affine {
  tg::Tensor weight, bias;
};
/// The weight and bias among the inputs x = {input, [weight], [bias]}.
Affine affine(const Case& c, const std::vector<tg::Tensor>& x, std::size_t has_weight_at) {
  const bool has_weight = c.flag(has_weight_at), has_bias = c.flag(has_weight_at + 1);
  return {has_weight ? x.at(1) : tg::Tensor(), has_bias ? x.at(has_weight ? 2 : 1) : tg::Tensor()};
}

/// config: eps, has_weight, has_bias, normalized_shape...
tg::Tensor layer_norm_case(const Case& c, const std::vector<tg::Tensor>& x) {
  std::vector<std::int64_t> normalized;
  for (std::size_t i = 3; i < c.values("config").size(); ++i) normalized.push_back(c.integer(i));
  const Affine a = affine(c, x, 1);
  return tg::layer_norm(x[0], tg::Shape(normalized), a.weight, a.bias, c.option(0));
}

/// config: num_groups, eps, has_weight, has_bias
tg::Tensor group_norm_case(const Case& c, const std::vector<tg::Tensor>& x) {
  const Affine a = affine(c, x, 2);
  return tg::group_norm(x[0], c.integer(0), a.weight, a.bias, c.option(1));
}

/// config: training, momentum, eps, has_weight, has_bias, has_running. Checks the running
/// statistics after the call.
void run_batch_norm_case(const Case& c, bool image) {
  const bool has_running = c.flag(5);
  const tg::Tensor rm = has_running ? c.running(0) : tg::Tensor();
  const tg::Tensor rv = has_running ? c.running(1) : tg::Tensor();
  tg::testing::check_case_derivatives(c, [&](const std::vector<tg::Tensor>& x) {
    const Affine a = affine(c, x, 3);
    return (image ? tg::batch_norm2d : tg::batch_norm)(x[0], rm, rv, a.weight, a.bias, c.flag(0),
                                                       c.option(1), c.option(2));
  }, kAtol, kRtol);
  if (!has_running) return;
  tg::testing::check_reference(c.name, "running_mean after", rm, c.tensor("c0_after", c.shape("c0")),
                               kAtol, kRtol);
  tg::testing::check_reference(c.name, "running_var after", rv, c.tensor("c1_after", c.shape("c1")),
                               kAtol, kRtol);
}

/// BatchNorm1d(C, momentum=None) trained on x0, x1, x2, then evaluated on x3.
void run_batch_norm1d_module_case(const Case& c) {
  nn::BatchNorm1d bn(c.integer(0), {.momentum = std::nullopt});
  bn.to(tg::DType::f64);
  for (int i = 0; i < 3; ++i) bn(c.tensor(fmt::format("x{}", i)));
  bn.eval();
  const tg::Tensor out = bn(c.tensor("x3"));
  const tg::Shape channels{c.integer(0)};
  tg::testing::check_reference(c.name, "running_mean", bn.running_mean(),
                               c.tensor("running_mean", channels), kAtol, kRtol);
  tg::testing::check_reference(c.name, "running_var", bn.running_var(),
                               c.tensor("running_var", channels), kAtol, kRtol);
  CHECK(bn.num_batches_tracked().item<std::int64_t>() ==
        static_cast<std::int64_t>(c.values("num_batches_tracked").at(0)));
  tg::testing::check_reference(c.name, "eval out", out, c.tensor("out"), kAtol, kRtol);
}

using CaseRunner = std::function<void(const Case&)>;

const std::map<std::string, CaseRunner>& runners() {
  static const std::map<std::string, CaseRunner> table = {
      {"layer_norm",
       [](const Case& c) {
         tg::testing::check_case_derivatives(
             c, [&](const std::vector<tg::Tensor>& x) { return layer_norm_case(c, x); }, kAtol, kRtol);
       }},
      {"group_norm",
       [](const Case& c) {
         tg::testing::check_case_derivatives(
             c, [&](const std::vector<tg::Tensor>& x) { return group_norm_case(c, x); }, kAtol, kRtol);
       }},
      {"batch_norm", [](const Case& c) { run_batch_norm_case(c, false); }},
      {"batch_norm2d", [](const Case& c) { run_batch_norm_case(c, true); }},
      {"batch_norm1d_module", run_batch_norm1d_module_case},
  };
  return table;
}

}  // namespace

TEST_CASE("norms reference: layer_norm group_norm batch_norm forward and derivatives to 2nd order match PyTorch 1.13",
          "[ops][norms-reference]") {
  std::vector<Case> cases;
  for (tg::testing::FixtureCase& c : tg::testing::read_fixture(kFixture)) cases.push_back({std::move(c)});
  std::set<std::string> ops_seen;
  for (const Case& c : cases) ops_seen.insert(c.word("op"));
  for (const auto& [op, runner] : runners()) {
    INFO(fmt::format("{} has no case of op {}", kFixture, op));
    CHECK(ops_seen.count(op) == 1);
  }
  CHECK(cases.size() >= 25);
  for (const Case& c : cases) {
    const auto it = runners().find(c.word("op"));
    if (it == runners().end())
      FAIL(fmt::format("{}: case {} has op {}, which the test does not know", kFixture, c.name, c.word("op")));
    SECTION(c.name) { it->second(c); }
  }
}
