// The element-wise ops and activations added for issue 14 (clamp, minimum, maximum, pow of two
// tensors, log1p, expm1, sin, cos, erf, rsqrt, sign, floor, round, gelu, silu, leaky_relu, elu,
// softplus, hardtanh, log_sigmoid, glu): f32 against f64, the bad inputs each op refuses, and the
// rules at kinks and ties on hand-computed values. Their values, gradients and second
// derivatives against PyTorch are in test_elementwise_reference.cpp; their checker samples run
// in test_registry_sweep.cpp.
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

struct Case {
  std::string name;
  TensorFn fn;
  std::size_t arity;
  double low, high;  ///< inputs uniform in [low, high), away from kinks
};

TensorFn one(std::function<Tensor(const Tensor&)> f) {
  return [f](const std::vector<Tensor>& in) { return f(in[0]); };
}
TensorFn two(Tensor (*f)(const Tensor&, const Tensor&)) {
  return [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); };
}

const std::vector<Case>& cases() {
  static const std::vector<Case> table = {
      {"log1p", one(tg::log1p), 1, -0.5, 2},
      {"expm1", one(tg::expm1), 1, -2, 2},
      {"sin", one(tg::sin), 1, -3, 3},
      {"cos", one(tg::cos), 1, -3, 3},
      {"erf", one(tg::erf), 1, -2, 2},
      {"rsqrt", one(tg::rsqrt), 1, 0.2, 3},
      {"sign", one(tg::sign), 1, -2, 2},
      {"floor", one(tg::floor), 1, 0.1, 0.9},
      {"round", one(tg::round), 1, 0.6, 1.4},
      {"silu", one(tg::silu), 1, -3, 3},
      {"log_sigmoid", one(tg::log_sigmoid), 1, -3, 3},
      {"gelu", one([](const Tensor& x) { return tg::gelu(x); }), 1, -3, 3},
      {"gelu tanh", one([](const Tensor& x) { return tg::gelu(x, tg::GeluApproximate::tanh); }),
       1, -3, 3},
      {"leaky_relu", one([](const Tensor& x) { return tg::leaky_relu(x, 0.2); }), 1, 0.1, 2},
      {"elu", one([](const Tensor& x) { return tg::elu(x, 1.5); }), 1, -2, -0.1},
      {"softplus", one([](const Tensor& x) { return tg::softplus(x, 2.0, 3.0); }), 1, -2, 1.4},
      {"hardtanh", one([](const Tensor& x) { return tg::hardtanh(x, -0.5, 0.5); }), 1, -0.4, 0.4},
      {"clamp", one([](const Tensor& x) { return tg::clamp(x, -0.5, 0.5); }), 1, -0.4, 0.4},
      {"minimum", two(tg::minimum), 2, -2, 2},
      {"maximum", two(tg::maximum), 2, -2, 2},
      {"pow", two(tg::pow), 2, 0.5, 2},
      {"glu", one([](const Tensor& x) { return tg::glu(x); }), 1, -2, 2},
  };
  return table;
}

std::vector<Tensor> inputs(const Case& c, const tg::Shape& shape, std::uint64_t seed) {
  std::vector<Tensor> in;
  for (std::size_t i = 0; i < c.arity; ++i) in.push_back(leaf(shape, seed + i, c.low, c.high));
  return in;
}

}  // namespace

TEST_CASE("element-wise ops: registered once each, with checker samples", "[ops][elementwise][registry]") {
  for (const char* name :
       {"clamp", "minimum", "maximum", "pow_tensor", "log1p", "expm1", "sin", "cos", "erf",
        "rsqrt", "sign", "floor", "round", "gelu", "silu", "leaky_relu", "elu", "softplus",
        "hardtanh", "log_sigmoid", "glu", "glu_half", "glu_half_backward"}) {
    INFO(name);
    const tg::OpInfo op = tg::find_op(name);
    REQUIRE(op.samples);
    CHECK_FALSE(op.samples().empty());
    CHECK(op.differentiable_vjp);
  }
}

TEST_CASE("element-wise ops: f32 agrees with f64, values and gradients", "[ops][elementwise][f32]") {
  std::uint64_t seed = 3000;
  for (const Case& c : cases()) {
    INFO(c.name);
    seed += 10;
    const auto in = inputs(c, {3, 8}, seed);
    check_f32_matches_f64(c.fn, in);
    check_f32_grads_match_f64(c.fn, in, seed + 5);
  }
}

TEST_CASE("element-wise ops: VJP matches finite differences away from kinks",
          "[ops][elementwise][vjp]") {
  std::uint64_t seed = 4000;
  for (const Case& c : cases()) {
    for (const tg::Shape& shape : {tg::Shape{2, 3, 4}, tg::Shape{}}) {
      if (c.name == "glu" && shape.size() == 0) continue;  // glu halves a dim
      INFO(c.name << " on " << tg::to_string(shape));
      seed += 10;
      check_vjp(c.fn, inputs(c, shape, seed), seed + 5);
    }
  }
}

TEST_CASE("element-wise ops: integer and undefined inputs are refused, naming the op",
          "[ops][elementwise][errors]") {
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3}, {3});
  const Tensor x = f64({1, 2, 3}, {3});
  const Tensor n4 = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4}, {4});
  for (const Case& c : cases()) {
    INFO(c.name);
    std::vector<Tensor> in(c.arity, c.name == "glu" ? n4 : n);
    const std::string op = c.name.substr(0, c.name.find(' '));
    REQUIRE_THROWS_AS(c.fn(in), tg::DTypeError);
    REQUIRE_THROWS_WITH(c.fn(in), Catch::StartsWith(op == "pow" ? "pow_tensor:" : op + ":") &&
                                      Catch::Contains("i64") &&
                                      Catch::Contains(c.name == "glu" ? "[4]" : "[3]"));
    if (c.arity == 2) {
      REQUIRE_THROWS_AS(c.fn({x, n}), tg::DTypeError);
      REQUIRE_THROWS_AS(c.fn({x, x.to(DType::f32)}), tg::DTypeError);
      REQUIRE_THROWS_AS(c.fn({x, Tensor()}), tg::Error);
    } else {
      REQUIRE_THROWS_AS(c.fn({Tensor()}), tg::ValueError);
    }
  }
}

TEST_CASE("element-wise ops: shapes that do not broadcast are refused with both shapes",
          "[ops][elementwise][errors]") {
  const Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = f64({1, 2}, {2});
  REQUIRE_THROWS_AS(tg::minimum(a, b), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::maximum(a, b), Catch::StartsWith("maximum:") &&
                                             Catch::Contains("[2, 3]") && Catch::Contains("[2]"));
  REQUIRE_THROWS_WITH(tg::pow(a, b), Catch::StartsWith("pow_tensor:") && Catch::Contains("[2, 3]"));
}

TEST_CASE("glu: a dim that cannot be halved is refused", "[ops][elementwise][errors]") {
  const Tensor x = tg::zeros({3, 3}, DType::f64);
  REQUIRE_THROWS_AS(tg::glu(x), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::glu(x), Catch::StartsWith("glu:") && Catch::Contains("[3, 3]") &&
                                      Catch::Contains("even"));
  REQUIRE_THROWS_AS(tg::glu(tg::zeros({4, 3}, DType::f64), 1), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::glu(tg::scalar_tensor(1, DType::f64)), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::glu(tg::scalar_tensor(1, DType::f64)),
                      Catch::StartsWith("glu:") && Catch::Contains("0-dim"));
  REQUIRE_THROWS_AS(tg::glu(tg::zeros({3, 4}, DType::f64), 2), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::glu(tg::zeros({3, 4}, DType::f64), -3),
                      Catch::StartsWith("glu:") && Catch::Contains("dim -3"));
  SECTION("glu on hand-computed values: a·sigmoid(b) along dim") {
    const Tensor y = tg::glu(f64({1, 2, 0, 100, -3, 4, 0, -100}, {2, 4}));
    CHECK_THAT(y, AllClose({0.5, 2, -1.5, 0}, {2, 2}));
  }
}

TEST_CASE("clamp and hardtanh: bounds PyTorch refuses are refused", "[ops][elementwise][errors]") {
  const Tensor x = f64({1, 2, 3}, {3});
  REQUIRE_THROWS_AS(tg::clamp(x, std::nullopt, std::nullopt), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::clamp(x, std::nullopt, std::nullopt),
                      Catch::StartsWith("clamp:") && Catch::Contains("min and max") &&
                          Catch::Contains("[3]"));
  REQUIRE_THROWS_AS(tg::hardtanh(x, 1.0, -1.0), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::hardtanh(x, 1.0, -1.0),
                      Catch::StartsWith("hardtanh:") && Catch::Contains("min_val=1") &&
                          Catch::Contains("max_val=-1") && Catch::Contains("[3]"));
  SECTION("clamp with min > max is every element = max, gradient 0 (PyTorch's rule)") {
    const Tensor z = f64({-1, 0, 2}, {3}).set_requires_grad(true);
    const Tensor y = tg::clamp(z, 0.5, -0.5);
    CHECK_THAT(y, AllClose({-0.5, -0.5, -0.5}, {3}));
    CHECK_THAT(tg::grad({y}, {z}, {f64({1, 2, 3}, {3})})[0], AllClose({0, 0, 0}, {3}));
  }
}

TEST_CASE("element-wise ops: gradients at kinks, bounds and ties follow PyTorch 1.13",
          "[ops][elementwise][kink]") {
  const auto grad_of = [](const TensorFn& fn, const std::vector<Tensor>& in, const Tensor& c) {
    std::vector<Tensor> leaves;
    for (const Tensor& t : in) leaves.push_back(copy_values(t).set_requires_grad(true));
    return tg::grad({fn(leaves)}, leaves, {c});
  };
  const Tensor c = f64({0.5, -1.5, 2, 3}, {4});
  const Tensor at = f64({-1, 1, 0, 2}, {4});
  CHECK_THAT(grad_of(one([](const Tensor& x) { return tg::clamp(x, -1.0, 1.0); }), {at}, c)[0],
             AllClose({0.5, -1.5, 2, 0}, {4}));  // clamp: bounds included
  CHECK_THAT(grad_of(one([](const Tensor& x) { return tg::hardtanh(x); }), {at}, c)[0],
             AllClose({0, 0, 2, 0}, {4}));  // hardtanh: bounds excluded
  CHECK_THAT(grad_of(one([](const Tensor& x) { return tg::leaky_relu(x, 0.1); }), {at}, c)[0],
             AllClose({0.05, -1.5, 0.2, 3}, {4}));  // slope at 0
  CHECK_THAT(grad_of(one([](const Tensor& x) { return tg::elu(x, 1.5); }), {at}, c)[0],
             AllClose({0.5 * 1.5 * std::exp(-1.0), -1.5, 2 * 1.5, 3}, {4}));  // alpha at 0
  for (const auto& fn : {tg::sign, tg::floor, tg::round})
    CHECK_THAT(grad_of(one(fn), {f64({0, 1, 0.5, -2.5}, {4})}, c)[0], AllClose({0, 0, 0, 0}, {4}));
  // maximum/minimum: ties split half/half
  const Tensor a = f64({1, 2, 3, 4}, {4});
  const Tensor b = f64({1, 5, 3, 0}, {4});
  const auto gmax = grad_of(two(tg::maximum), {a, b}, c);
  CHECK_THAT(gmax[0], AllClose({0.25, 0, 1, 3}, {4}));
  CHECK_THAT(gmax[1], AllClose({0.25, -1.5, 1, 0}, {4}));
  const auto gmin = grad_of(two(tg::minimum), {a, b}, c);
  CHECK_THAT(gmin[0], AllClose({0.25, -1.5, 1, 0}, {4}));
  CHECK_THAT(gmin[1], AllClose({0.25, 0, 1, 3}, {4}));
}

TEST_CASE("element-wise ops: forward on hand-computed values", "[ops][elementwise]") {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THAT(tg::round(f64({0.5, 1.5, 2.5, -0.5, -2.5, 0.4}, {6})),
             AllClose({0, 2, 2, -0.0, -2, 0}, {6}));  // half to even
  CHECK_THAT(tg::sign(f64({-3, 0, 2, nan}, {4})), AllClose({-1, 0, 1, 0}, {4}));  // sign(NaN) = 0
  CHECK_THAT(tg::floor(f64({-0.5, 2, 2.7}, {3})), AllClose({-1, 2, 2}, {3}));
  for (const auto& fn : {tg::maximum, tg::minimum}) {  // NaN wins
    const auto v = fn(f64({1, nan}, {2}), f64({nan, 0}, {2})).to_vector<double>();
    CHECK((std::isnan(v[0]) && std::isnan(v[1])));
  }
  CHECK_THAT(tg::softplus(f64({30, -800, 800}, {3})),
             AllClose({30, 0, 800}, {3}));  // threshold, no overflow
  CHECK_THAT(tg::log_sigmoid(f64({-800, 800, 0}, {3})), AllClose({-800, 0, -std::log(2.0)}, {3}));
  CHECK_THAT(tg::pow(f64({2, 0, 0, 9}, {4}), f64({3, 0, 2, 0.5}, {4})), AllClose({8, 1, 0, 3}, {4}));
  CHECK_THAT(tg::pow(f64({2, 3}, {2, 1}), f64({1, 2, 3}, {3})),
             AllClose({2, 4, 8, 3, 9, 27}, {2, 3}));
}
