// Element-wise ops and activations (glu included) against values PyTorch 1.13 computed (CPU, float64), read
// from tests/fixtures/elementwise_reference.txt (make_elementwise_reference.py writes it and
// documents the format). A case <op>__<variant> runs out = op(x0[, x1]) with the options in its
// config and checks, at 1e-9 relative (1e-12 absolute near 0; NaN and inf must match exactly):
// the forward, g_i = d<out, v>/dx_i with create_graph, and for s = sum_i <g_i, u_i> the second
// derivatives ds/dx_j and ds/dv. The inputs hold values exactly at kinks and bounds, ties,
// NaN, 0-dim and empty tensors, so PyTorch's rules there are checked too.
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using tg::testing::FixtureCase;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/elementwise_reference.txt";

using Inputs = std::vector<tg::Tensor>;
/// op(inputs) with the case's config as the op's options.
using OpFn = std::function<tg::Tensor(const std::vector<double>& config, const Inputs& x)>;

OpFn unary(tg::Tensor (*f)(const tg::Tensor&)) {
  return [f](const std::vector<double>&, const Inputs& x) { return f(x[0]); };
}
OpFn binary(tg::Tensor (*f)(const tg::Tensor&, const tg::Tensor&)) {
  return [f](const std::vector<double>&, const Inputs& x) { return f(x[0], x[1]); };
}

/// The config each op reads is listed in the generator's OPTIONS.
const std::map<std::string, OpFn>& ops() {
  static const std::map<std::string, OpFn> table = {
      {"log1p", unary(tg::log1p)},
      {"expm1", unary(tg::expm1)},
      {"sin", unary(tg::sin)},
      {"cos", unary(tg::cos)},
      {"erf", unary(tg::erf)},
      {"rsqrt", unary(tg::rsqrt)},
      {"sign", unary(tg::sign)},
      {"floor", unary(tg::floor)},
      {"round", unary(tg::round)},
      {"silu", unary(tg::silu)},
      {"log_sigmoid", unary(tg::log_sigmoid)},
      {"minimum", binary(tg::minimum)},
      {"maximum", binary(tg::maximum)},
      {"pow", binary(tg::pow)},
      {"clamp",
       [](const std::vector<double>& c, const Inputs& x) {
         return tg::clamp(x[0], c.at(0) != 0 ? std::optional<double>(c.at(1)) : std::nullopt,
                          c.at(2) != 0 ? std::optional<double>(c.at(3)) : std::nullopt);
       }},
      {"hardtanh",
       [](const std::vector<double>& c, const Inputs& x) {
         return tg::hardtanh(x[0], c.at(0), c.at(1));
       }},
      {"leaky_relu",
       [](const std::vector<double>& c, const Inputs& x) { return tg::leaky_relu(x[0], c.at(0)); }},
      {"elu", [](const std::vector<double>& c, const Inputs& x) { return tg::elu(x[0], c.at(0)); }},
      {"softplus",
       [](const std::vector<double>& c, const Inputs& x) {
         return tg::softplus(x[0], c.at(0), c.at(1));
       }},
      {"glu",
       [](const std::vector<double>& c, const Inputs& x) {
         return tg::glu(x[0], static_cast<std::int64_t>(c.at(0)));
       }},
      {"gelu",
       [](const std::vector<double>& c, const Inputs& x) {
         return tg::gelu(x[0], c.at(0) != 0 ? tg::GeluApproximate::tanh : tg::GeluApproximate::none);
       }},
  };
  return table;
}

void check_values(const std::string& case_name, const std::string& what, const tg::Tensor& got,
                  const tg::Tensor& want) {
  tg::testing::check_reference(case_name, what, got, want, kAtol, kRtol);
}

void run_case(const FixtureCase& c, const OpFn& op) {
  const std::vector<double> config = c.has("config") ? c.values("config") : std::vector<double>{};
  std::vector<tg::Tensor> xs;
  for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
    const tg::Shape shape = c.shape(fmt::format("x{}", i));
    xs.push_back(c.tensor(fmt::format("x{}", i), shape).set_requires_grad(true));
  }
  REQUIRE_FALSE(xs.empty());
  const tg::Shape out_shape = c.shape("v");
  const tg::Tensor v = c.tensor("v", out_shape).set_requires_grad(true);

  const tg::Tensor out = op(config, xs);
  check_values(c.name, "out", out, c.tensor("out", out_shape));
  const std::vector<tg::Tensor> g = tg::grad({out}, xs, {v}, {.create_graph = true});
  REQUIRE(g.size() == xs.size());
  for (std::size_t i = 0; i < g.size(); ++i)
    check_values(c.name, fmt::format("g{}", i), g[i], c.tensor(fmt::format("g{}", i), xs[i].shape()));
  if (!c.has("ds_dv")) return;  // a first-order case

  tg::Tensor s;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const tg::Tensor term = tg::sum(g[i] * c.tensor(fmt::format("u{}", i), xs[i].shape()));
    s = s.defined() ? s + term : term;
  }
  std::vector<tg::Tensor> wrt = xs;
  wrt.push_back(v);
  // s may depend on nothing (sign, floor, round): then every second derivative is 0.
  std::vector<tg::Tensor> h(wrt.size());
  if (s.requires_grad()) h = tg::grad({s}, wrt, {}, {.allow_unused = true});
  REQUIRE(h.size() == wrt.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    const bool is_v = i == xs.size();
    const std::string key = is_v ? std::string("ds_dv") : fmt::format("ds_dx{}", i);
    check_values(c.name, key, h[i].defined() ? h[i] : tg::zeros_like(wrt[i]),
                 c.tensor(key, wrt[i].shape()));
  }
}

}  // namespace

TEST_CASE("element-wise ops and activations: forward, gradients and second derivatives match "
          "PyTorch 1.13 in f64",
          "[ops][elementwise-reference]") {
  const std::vector<FixtureCase> cases = tg::testing::read_fixture(kFixture);
  std::set<std::string> ops_seen;
  for (const FixtureCase& c : cases) {
    const auto sep = c.name.find("__");
    if (sep == std::string::npos) FAIL(fmt::format("{}: case {} is not <op>__<variant>", kFixture, c.name));
    const std::string op = c.name.substr(0, sep);
    const auto it = ops().find(op);
    if (it == ops().end()) FAIL(fmt::format("{}: case {} names no known op {}", kFixture, c.name, op));
    ops_seen.insert(op);
    SECTION(c.name) { run_case(c, it->second); }
  }
  for (const auto& [op, fn] : ops()) {
    INFO(fmt::format("{} has no case for {}", kFixture, op));
    CHECK(ops_seen.count(op) == 1);
  }
}
