// adaptive_avg_pool2d and adaptive_max_pool2d against PyTorch 1.13 (CPU, float64), read from
// tests/fixtures/pool_resize_reference.txt (make_pool_resize_reference.py writes it and
// documents the format). For each case out = pool(x, output_size), a random upstream v that
// itself requires grad and a random u:
//   g = d<out, v>/dx with create_graph,  s = <g, u>,  ds/dx and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0); for the max pool the
// winners' indices must be PyTorch's exactly (ties, NaN and -inf windows included).
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"

namespace tg = tapegrad;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/pool_resize_reference.txt";

tg::Size2 output_size(const tg::testing::FixtureCase& c) {
  const std::vector<double>& config = c.values("config");
  REQUIRE(config.size() == 2);
  return {static_cast<std::int64_t>(std::llround(config[0])), static_cast<std::int64_t>(std::llround(config[1]))};
}

void run_case(const tg::testing::FixtureCase& c) {
  const std::string& op = c.word("op");
  const tg::Size2 size = output_size(c);
  if (op == "adaptive_avg_pool2d") {
    tg::testing::check_case_derivatives(
        c, [&](const std::vector<tg::Tensor>& x) { return tg::adaptive_avg_pool2d(x[0], size); }, kAtol, kRtol);
  } else if (op == "adaptive_max_pool2d") {
    tg::testing::check_case_derivatives(
        c, [&](const std::vector<tg::Tensor>& x) { return tg::adaptive_max_pool2d(x[0], size); }, kAtol, kRtol);
    const tg::MaxPoolResult r = tg::adaptive_max_pool2d_with_indices(c.tensor("x0"), size);
    tg::testing::check_reference(c.name, "values of _with_indices", r.values, c.tensor("out"), kAtol, kRtol);
    tg::testing::check_reference(c.name, "indices", r.indices, c.tensor("indices", c.shape("out"), tg::DType::i64),
                                 0, 0);
  } else {
    FAIL(fmt::format("{}: case {} has op {}, which the test does not know", kFixture, c.name, op));
  }
}

}  // namespace

TEST_CASE("pool/resize reference: adaptive_avg_pool2d adaptive_max_pool2d forward, indices and derivatives to "
          "2nd order match PyTorch 1.13",
          "[ops][pool-resize-reference]") {
  const std::vector<tg::testing::FixtureCase> cases = tg::testing::read_fixture(kFixture);
  std::set<std::string> ops_seen;
  for (const auto& c : cases) ops_seen.insert(c.word("op"));
  CHECK(ops_seen == std::set<std::string>{"adaptive_avg_pool2d", "adaptive_max_pool2d"});
  CHECK(cases.size() >= 20);
  for (const auto& c : cases) {
    SECTION(c.name) { run_case(c); }
  }
}

TEST_CASE("pool/resize reference: f32 agrees with the f64 fixture to f32 precision", "[ops][pool-resize-reference]") {
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    const std::string& op = c.word("op");
    const tg::Size2 size = output_size(c);
    const tg::Tensor x = c.tensor("x0", tg::DType::f32).set_requires_grad(true);
    const tg::Tensor out = op == "adaptive_avg_pool2d" ? tg::adaptive_avg_pool2d(x, size) : tg::adaptive_max_pool2d(x, size);
    CHECK(out.dtype() == tg::DType::f32);
    tg::testing::check_reference(c.name, "f32 out", out.to(tg::DType::f64), c.tensor("out"), 1e-6, 1e-5);
    if (out.numel() == 0) continue;
    out.backward(c.tensor("v", c.shape("out"), tg::DType::f32));
    tg::testing::check_reference(c.name, "f32 g0", x.grad().to(tg::DType::f64), c.tensor("g0", c.shape("x0")), 1e-6, 1e-5);
  }
}
