// scaled_dot_product_attention against the composite softmax(q·kᵀ/√E + mask)·v in PyTorch 1.13
// (CPU, float64), read from tests/fixtures/attention_reference.txt
// (make_attention_reference.py writes it and documents the format): no mask, bool and float
// masks (broadcast, with -inf entries), causal with L = S, L < S and L > S, length 1,
// broadcast batch dims and a fully masked row (NaN, as the composite). For each case the
// output, the gradient of every input (the float mask's too) and the second derivatives
// (check_case_derivatives) must agree to 1e-9 relative (1e-12 absolute near 0).
#include <cmath>
#include <cstdint>
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
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/attention_reference.txt";

struct Config {
  bool causal;
  int mask_kind;  // 0 none, 1 bool (item "mask"), 2 float (input x3)
};

Config config(const tg::testing::FixtureCase& c) {
  const std::vector<double>& v = c.values("config");
  REQUIRE(v.size() == 2);
  return {v[0] != 0.0, static_cast<int>(std::lround(v[1]))};
}

tg::testing::TensorFn attention_fn(const tg::testing::FixtureCase& c) {
  const Config cfg = config(c);
  const tg::Tensor bool_mask = cfg.mask_kind == 1 ? c.tensor("mask", tg::DType::boolean) : tg::Tensor();
  return [cfg, bool_mask](const std::vector<tg::Tensor>& x) {
    const tg::Tensor mask = cfg.mask_kind == 1 ? bool_mask : cfg.mask_kind == 2 ? x[3] : tg::Tensor();
    return tg::scaled_dot_product_attention(x[0], x[1], x[2], mask, 0.0, cfg.causal);
  };
}

}  // namespace

TEST_CASE("attention reference: scaled_dot_product_attention forward and derivatives to 2nd order match the "
          "PyTorch 1.13 composite",
          "[ops][attention-reference]") {
  std::size_t sdpa_cases = 0;
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    if (c.word("op") != "sdpa") continue;
    ++sdpa_cases;
    SECTION(c.name) { tg::testing::check_case_derivatives(c, attention_fn(c), kAtol, kRtol); }
  }
  CHECK(sdpa_cases >= 13);
}

TEST_CASE("attention reference: f32 agrees with the f64 fixture to f32 precision", "[ops][attention-reference]") {
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    if (c.word("op") != "sdpa") continue;
    const Config cfg = config(c);
    std::vector<tg::Tensor> x;
    for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
      x.push_back(c.tensor(fmt::format("x{}", i), tg::DType::f32).set_requires_grad(true));
    }
    const tg::Tensor mask = cfg.mask_kind == 1 ? c.tensor("mask", tg::DType::boolean) : cfg.mask_kind == 2 ? x[3] : tg::Tensor();
    const tg::Tensor out = tg::scaled_dot_product_attention(x[0], x[1], x[2], mask, 0.0, cfg.causal);
    CHECK(out.dtype() == tg::DType::f32);
    tg::testing::check_reference(c.name, "f32 out", out.to(tg::DType::f64), c.tensor("out"), 1e-5, 1e-4);
    out.backward(c.tensor("v", c.shape("out"), tg::DType::f32));
    for (std::size_t i = 0; i < x.size(); ++i) {
      tg::testing::check_reference(c.name, fmt::format("f32 g{}", i), x[i].grad().to(tg::DType::f64),
                                   c.tensor(fmt::format("g{}", i), x[i].shape()), 1e-4, 1e-4);
    }
  }
}
