// interpolate against PyTorch 1.13 (CPU, float64), read from tests/fixtures/interpolate_reference.txt
// (make_interpolate_reference.py writes it and documents the format). For each case
// out = interpolate(x, options), a random upstream v that itself requires grad and a random u:
//   g = d<out, v>/dx with create_graph,  s = <g, u>,  ds/dx (zero: the map is linear) and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0). Every call PyTorch rejects
// must throw a tapegrad::Error.
#include <cmath>
#include <cstdint>
#include <optional>
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
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/interpolate_reference.txt";

/// An item's numbers, or nothing when it reads `none`.
std::vector<double> numbers_or_none(const tg::testing::FixtureCase& c, const std::string& key) {
  if (c.tokens(key) == std::vector<std::string>{"none"}) return {};
  return c.values(key);
}

std::optional<bool> flag(const tg::testing::FixtureCase& c, const std::string& key) {
  const std::vector<double> v = numbers_or_none(c, key);
  if (v.empty()) return std::nullopt;
  REQUIRE(v.size() == 1);
  return v[0] != 0;
}

tg::InterpolateOptions options(const tg::testing::FixtureCase& c) {
  tg::InterpolateOptions o;
  for (double s : numbers_or_none(c, "size")) o.size.push_back(static_cast<std::int64_t>(std::llround(s)));
  o.scale_factor = numbers_or_none(c, "scale_factor");
  const std::string& mode = c.word("mode");
  if (mode == "nearest") {
    o.mode = tg::InterpolateMode::nearest;
  } else if (mode == "nearest-exact") {
    o.mode = tg::InterpolateMode::nearest_exact;
  } else if (mode == "linear") {
    o.mode = tg::InterpolateMode::linear;
  } else if (mode == "bilinear") {
    o.mode = tg::InterpolateMode::bilinear;
  } else {
    FAIL(fmt::format("{}: case {} has mode {}, which the test does not know", kFixture, c.name, mode));
  }
  o.align_corners = flag(c, "align_corners");
  o.recompute_scale_factor = flag(c, "recompute_scale_factor");
  return o;
}

}  // namespace

TEST_CASE("interpolate reference: nearest nearest_exact linear bilinear forward and derivatives to 2nd order "
          "match PyTorch 1.13",
          "[ops][interpolate-reference]") {
  const std::vector<tg::testing::FixtureCase> cases = tg::testing::read_fixture(kFixture);
  std::set<std::string> modes;
  std::size_t computed = 0;
  for (const auto& c : cases) {
    REQUIRE(c.word("op") == "interpolate");
    modes.insert(c.word("mode"));
    if (!c.has("error")) ++computed;
  }
  CHECK(modes == std::set<std::string>{"nearest", "nearest-exact", "linear", "bilinear"});
  CHECK(computed >= 40);
  for (const auto& c : cases) {
    if (c.has("error")) continue;
    SECTION(c.name) {
      const tg::InterpolateOptions o = options(c);
      tg::testing::check_case_derivatives(
          c, [&](const std::vector<tg::Tensor>& x) { return tg::interpolate(x[0], o); }, kAtol, kRtol);
    }
  }
}

TEST_CASE("interpolate reference: every call PyTorch rejects throws a tapegrad::Error naming interpolate",
          "[ops][interpolate-reference][errors]") {
  std::size_t errors = 0;
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    if (!c.has("error")) continue;
    ++errors;
    INFO(fmt::format("{}: PyTorch raises {}", c.name, c.word("error")));
    const tg::Tensor x = tg::zeros(c.shape("x0"), tg::DType::f64);
    const tg::InterpolateOptions o = options(c);
    CHECK_THROWS_AS(tg::interpolate(x, o), tg::Error);
    CHECK_THROWS_WITH(tg::interpolate(x, o), Catch::Matchers::StartsWith("interpolate: "));
  }
  CHECK(errors >= 15);
}

TEST_CASE("interpolate reference: f32 agrees with the f64 fixture to f32 precision",
          "[ops][interpolate-reference]") {
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    if (c.has("error")) continue;
    INFO(c.name);
    const tg::InterpolateOptions o = options(c);
    const tg::Tensor x = c.tensor("x0", tg::DType::f32).set_requires_grad(true);
    const tg::Tensor out = tg::interpolate(x, o);
    CHECK(out.dtype() == tg::DType::f32);
    tg::testing::check_reference(c.name, "f32 out", out.to(tg::DType::f64), c.tensor("out"), 1e-5, 1e-5);
    if (out.numel() == 0) continue;
    out.backward(c.tensor("v", c.shape("out"), tg::DType::f32));
    tg::testing::check_reference(c.name, "f32 g0", x.grad().to(tg::DType::f64), c.tensor("g0", c.shape("x0")),
                                 1e-5, 1e-5);
  }
}
