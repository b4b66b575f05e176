// Masks and what reads them against PyTorch 1.13 (CPU, float64), from
// tests/fixtures/masks_reference.txt (make_masks_reference.py writes it and documents the
// format): where and masked_fill forward, first and second derivatives at 1e-9 relative, and
// the comparisons, logical ops, argsort and one_hot exactly.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using tg::testing::AllClose;
using tg::testing::FixtureCase;

namespace {

constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/masks_reference.txt";
constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;

using Inputs = std::vector<tg::Tensor>;
using DifferentiableFn = std::function<tg::Tensor(const Inputs&, const tg::Tensor& mask)>;

const std::map<std::string, DifferentiableFn>& differentiable_cases() {
  static const std::map<std::string, DifferentiableFn> cases{
      {"where_same", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, x[0], x[1]); }},
      {"where_broadcast", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, x[0], x[1]); }},
      {"where_condition_widest", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, x[0], x[1]); }},
      {"where_number_b", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, x[0], 0.5); }},
      {"where_number_a", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, -2.0, x[0]); }},
      {"where_empty", [](const Inputs& x, const tg::Tensor& m) { return tg::where(m, x[0], x[1]); }},
      {"masked_fill_number", [](const Inputs& x, const tg::Tensor& m) { return tg::masked_fill(x[0], m, -1.5); }},
      {"masked_fill_tensor", [](const Inputs& x, const tg::Tensor& m) { return tg::masked_fill(x[0], m, x[1]); }},
      {"masked_fill_wider_mask", [](const Inputs& x, const tg::Tensor& m) { return tg::masked_fill(x[0], m, 3.0); }},
  };
  return cases;
}

/// A forward-only case: the function and the dtypes its inputs a (and b) are read as.
struct ForwardCase {
  std::function<tg::Tensor(const tg::Tensor& a, const tg::Tensor& b)> f;
  tg::DType a = tg::DType::f64, b = tg::DType::f64;
};

const std::map<std::string, ForwardCase>& forward_cases() {
  using tg::DType;
  static const std::map<std::string, ForwardCase> cases = [] {
    std::map<std::string, ForwardCase> c{
        {"lt_i64", {[](auto& a, auto& b) { return tg::lt(a, b); }, DType::i64, DType::i64}},
        {"eq_i64_number", {[](auto& a, auto&) { return tg::eq(a, 3.0); }, DType::i64}},
        {"logical_and", {[](auto& a, auto& b) { return tg::logical_and(a, b); }, DType::boolean}},
        {"logical_or", {[](auto& a, auto& b) { return tg::logical_or(a, b); }, DType::boolean}},
        {"logical_xor", {[](auto& a, auto& b) { return tg::logical_xor(a, b); }, DType::boolean}},
        {"logical_not", {[](auto& a, auto&) { return tg::logical_not(a); }}},
        {"argsort_last", {[](auto& a, auto&) { return tg::argsort(a); }}},
        {"argsort_last_descending", {[](auto& a, auto&) { return tg::argsort(a, -1, true); }}},
        {"argsort_dim0", {[](auto& a, auto&) { return tg::argsort(a, 0); }}},
        {"argsort_dim0_descending", {[](auto& a, auto&) { return tg::argsort(a, 0, true); }}},
        {"argsort_i64", {[](auto& a, auto&) { return tg::argsort(a, 1); }, DType::i64}},
        {"one_hot_inferred", {[](auto& a, auto&) { return tg::one_hot(a); }, DType::i64}},
        {"one_hot_5", {[](auto& a, auto&) { return tg::one_hot(a, 5); }, DType::i64}},
    };
    using Compare = tg::Tensor (*)(const tg::Tensor&, const tg::Tensor&);
    using CompareNumber = tg::Tensor (*)(const tg::Tensor&, double);
    const std::vector<std::tuple<std::string, Compare, CompareNumber>> comparisons{
        {"eq", tg::eq, tg::eq}, {"ne", tg::ne, tg::ne}, {"lt", tg::lt, tg::lt},
        {"le", tg::le, tg::le}, {"gt", tg::gt, tg::gt}, {"ge", tg::ge, tg::ge}};
    for (const auto& [name, tensor_fn, number_fn] : comparisons) {
      c[name + "_tensor"] = {[f = tensor_fn](auto& a, auto& b) { return f(a, b); }};
      c[name + "_number"] = {[f = number_fn](auto& a, auto&) { return f(a, 0.5); }};
    }
    return c;
  }();
  return cases;
}

void check_differentiable(const FixtureCase& c, const DifferentiableFn& f) {
  const tg::Tensor mask = c.tensor("m", tg::DType::boolean);
  Inputs x;
  for (std::size_t i = 0; c.has(fmt::format("x{}", i)); ++i) x.push_back(c.tensor(fmt::format("x{}", i)).set_requires_grad());
  tg::Tensor v = c.tensor("v").set_requires_grad();
  const tg::Tensor out = f(x, mask);
  CHECK_THAT(out, AllClose(c.tensor("out"), kAtol, kRtol));
  const std::vector<tg::Tensor> g = tg::grad({out}, x, {v}, {.create_graph = true});
  tg::Tensor s = tg::zeros({}, tg::DType::f64);
  for (std::size_t i = 0; i < x.size(); ++i) {
    CHECK_THAT(g[i], AllClose(c.tensor(fmt::format("g{}", i), x[i].shape()), kAtol, kRtol));
    s = s + tg::sum(g[i] * c.tensor(fmt::format("u{}", i), x[i].shape()));
  }
  Inputs wrt = x;
  wrt.push_back(v);
  const std::vector<tg::Tensor> h = tg::grad({s}, wrt, {}, {.allow_unused = true});
  for (std::size_t i = 0; i < wrt.size(); ++i) {
    const std::string key = i < x.size() ? fmt::format("ds_dx{}", i) : std::string("ds_dv");
    const tg::Tensor expected = c.tensor(key, wrt[i].shape());
    CHECK_THAT(h[i].defined() ? h[i] : tg::zeros_like(expected), AllClose(expected, kAtol, kRtol));
  }
}

}  // namespace

TEST_CASE("where and masked_fill match PyTorch to second order", "[masks][reference]") {
  std::size_t seen = 0;
  for (const FixtureCase& c : tg::testing::read_fixture(kFixture)) {
    const auto it = differentiable_cases().find(c.name);
    if (it == differentiable_cases().end()) continue;
    INFO("case " << c.name);
    check_differentiable(c, it->second);
    ++seen;
  }
  CHECK(seen == differentiable_cases().size());
}

TEST_CASE("comparisons, logical ops, argsort and one_hot match PyTorch", "[masks][reference]") {
  std::size_t seen = 0;
  for (const FixtureCase& c : tg::testing::read_fixture(kFixture)) {
    if (differentiable_cases().count(c.name)) continue;
    INFO("case " << c.name);
    const auto it = forward_cases().find(c.name);
    if (it == forward_cases().end()) FAIL("the fixture has a case the test does not know: " << c.name);
    const ForwardCase& fc = it->second;
    const tg::Tensor a = c.tensor("a", fc.a);
    const tg::Tensor b = c.has("b") ? c.tensor("b", fc.b) : tg::Tensor();
    const tg::Tensor out = fc.f(a, b);
    const bool is_mask = c.name.rfind("argsort", 0) != 0 && c.name.rfind("one_hot", 0) != 0;
    CHECK(out.dtype() == (is_mask ? tg::DType::boolean : tg::DType::i64));
    CHECK(out.shape() == c.shape("out"));
    CHECK(out.to_vector<std::int64_t>() == c.tensor("out", tg::DType::i64).to_vector<std::int64_t>());
    ++seen;
  }
  CHECK(seen == forward_cases().size());
}
