// add, sub, mul, div of two tensors (NumPy broadcasting), the tensor-number forms and the
// operators, including a number on the left (2 - x, 2 / x).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);

struct BinaryCase {
  const char* name;
  BinaryFn fn;
};

const std::vector<BinaryCase>& binary_ops() {
  static const std::vector<BinaryCase> ops = {
      {"add", [](const Tensor& a, const Tensor& b) { return tg::add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return tg::sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return tg::mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return tg::div(a, b); }},
  };
  return ops;
}

// Shape pairs that exercise every broadcasting path: equal shapes, a 0-dim operand on
// either side, leading dims missing, size-1 dims on both sides at once.
const std::vector<std::pair<tg::Shape, tg::Shape>>& shape_pairs() {
  static const std::vector<std::pair<tg::Shape, tg::Shape>> pairs = {
      {{2, 3}, {2, 3}},       {{2, 1, 4}, {3, 1}}, {{3, 1}, {2, 1, 4}}, {{}, {2, 3}},
      {{2, 3}, {}},           {{5}, {3, 5}},       {{3, 5}, {5}},       {{3, 1}, {1, 4}},
      {{2, 3, 1}, {1, 3, 4}}, {{1}, {2, 3}},
  };
  return pairs;
}

}  // namespace

TEST_CASE("add, sub, mul, div: forward with NumPy broadcasting", "[ops][binary]") {
  SECTION("[2, 1, 4] with [3, 1] gives [2, 3, 4]") {
    const Tensor a = f64({1, 2, 3, 4, 5, 6, 7, 8}, {2, 1, 4});
    const Tensor b = f64({10, 20, 30}, {3, 1});
    const Tensor sum = tg::add(a, b);
    CHECK(sum.shape() == tg::Shape{2, 3, 4});
    CHECK_THAT(sum, AllClose({11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 33, 34,  //
                              15, 16, 17, 18, 25, 26, 27, 28, 35, 36, 37, 38},
                             {2, 3, 4}));
    // The broadcast operand first: b - a.
    CHECK_THAT(tg::sub(b, a), AllClose({9, 8, 7, 6, 19, 18, 17, 16, 29, 28, 27, 26,  //
                                        5, 4, 3, 2, 15, 14, 13, 12, 25, 24, 23, 22},
                                       {2, 3, 4}));
  }
  SECTION("0-dim with [2, 3], on either side") {
    const Tensor s = tg::scalar_tensor(2, DType::f64);
    const Tensor x = f64({1, 2, 4, -1, 8, 0.5}, {2, 3});
    CHECK_THAT(tg::mul(s, x), AllClose({2, 4, 8, -2, 16, 1}, {2, 3}));
    CHECK_THAT(tg::div(x, s), AllClose({0.5, 1, 2, -0.5, 4, 0.25}, {2, 3}));
    CHECK_THAT(tg::div(s, x), AllClose({2, 1, 0.5, -2, 0.25, 4}, {2, 3}));
    CHECK_THAT(tg::sub(s, x), AllClose({1, 0, -2, 3, -6, 1.5}, {2, 3}));
    CHECK(tg::add(s, s).shape() == tg::Shape{});
  }
  SECTION("[5] with [3, 5]") {
    const Tensor a = f64({1, 2, 3, 4, 5}, {5});
    const Tensor b = f64({0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24}, {3, 5});
    CHECK_THAT(tg::mul(a, b),
               AllClose({0, 2, 6, 12, 20, 10, 22, 36, 52, 70, 20, 42, 66, 92, 120}, {3, 5}));
    CHECK_THAT(tg::sub(b, a),
               AllClose({-1, -1, -1, -1, -1, 9, 9, 9, 9, 9, 19, 19, 19, 19, 19}, {3, 5}));
  }
  SECTION("[3, 1] with [1, 4]: both operands broadcast") {
    const Tensor a = f64({1, 2, 3}, {3, 1});
    const Tensor b = f64({1, 2, 4, 8}, {1, 4});
    CHECK_THAT(tg::div(a, b),
               AllClose({1, 0.5, 0.25, 0.125, 2, 1, 0.5, 0.25, 3, 1.5, 0.75, 0.375}, {3, 4}));
    CHECK_THAT(tg::sub(a, b), AllClose({0, -1, -3, -7, 1, 0, -2, -6, 2, 1, -1, -5}, {3, 4}));
  }
  SECTION("same shapes, and the tensor operators") {
    const Tensor a = f64({1, -2, 3, 0.5, 6, -4}, {3, 2});
    const Tensor b = f64({2, 4, -1, 0.25, 3, 8}, {3, 2});
    CHECK_THAT(a + b, AllClose({3, 2, 2, 0.75, 9, 4}, {3, 2}));
    CHECK_THAT(a - b, AllClose({-1, -6, 4, 0.25, 3, -12}, {3, 2}));
    CHECK_THAT(a * b, AllClose({2, -8, -3, 0.125, 18, -32}, {3, 2}));
    CHECK_THAT(a / b, AllClose({0.5, -0.5, -3, 2, 2, -0.5}, {3, 2}));
    CHECK_THAT(-a, AllClose({-1, 2, -3, -0.5, -6, 4}, {3, 2}));
  }
  SECTION("division by zero follows IEEE") {
    const Tensor r = tg::div(f64({1, -1, 0}, {3}), f64({0, 0, 0}, {3}));
    const auto v = r.to_vector<double>();
    CHECK(v[0] == std::numeric_limits<double>::infinity());
    CHECK(v[1] == -std::numeric_limits<double>::infinity());
    CHECK(std::isnan(v[2]));
  }
}

TEST_CASE("add, sub, mul, div: VJP matches finite differences under broadcasting",
          "[ops][binary][vjp]") {
  std::uint64_t seed = 100;
  for (const auto& op : binary_ops()) {
    for (const auto& [sa, sb] : shape_pairs()) {
      INFO(op.name << "(" << tg::to_string(sa) << ", " << tg::to_string(sb) << ")");
      const Tensor a = leaf(sa, ++seed, -2, 2);
      // Divisors keep away from the pole at 0.
      const Tensor b = std::string(op.name) == "div" ? random_signed(sb, ++seed, 0.5, 2)
                                                     : leaf(sb, ++seed, -2, 2);
      const auto fn = [f = op.fn](const std::vector<Tensor>& in) { return f(in[0], in[1]); };
      check_vjp(fn, {a, b}, ++seed);
    }
  }
}

TEST_CASE("add, sub, mul, div: VJP when only one operand requires grad", "[ops][binary][vjp]") {
  // Ops save residuals only for the gradients needed: each operand alone must still work.
  std::uint64_t seed = 300;
  for (const auto& op : binary_ops()) {
    INFO(op.name);
    const auto fn = [f = op.fn](const std::vector<Tensor>& in) { return f(in[0], in[1]); };
    const Tensor a = leaf({2, 1, 4}, ++seed, -2, 2);
    const Tensor b = random_signed({3, 1}, ++seed, 0.5, 2);
    check_vjp(fn, {a, random_signed({3, 1}, ++seed, 0.5, 2, false)}, ++seed);
    check_vjp(fn, {leaf({2, 1, 4}, ++seed, -2, 2).detach(), b}, ++seed);
  }
}

TEST_CASE("add, sub, mul, div: the same tensor as both operands", "[ops][binary][vjp]") {
  // Both gradient contributions must reach x: d(x*x) = 2x, d(x/x) = 0, d(x-x) = 0.
  const Tensor x = random_signed({3, 4}, 7, 0.5, 2);
  std::uint64_t seed = 400;
  for (const auto& op : binary_ops()) {
    INFO(op.name);
    check_vjp([f = op.fn](const std::vector<Tensor>& in) { return f(in[0], in[0]); }, {x}, ++seed);
  }
  const Tensor c = random_cotangent({3, 4}, DType::f64, 9);
  const auto g = tg::grad({x * x}, {x}, {c});
  CHECK_THAT(g[0], AllClose(tg::mul(tg::mul(x.detach(), 2.0), c)));
}

TEST_CASE("add, sub, mul, div: f32 agrees with f64", "[ops][binary][f32]") {
  std::uint64_t seed = 500;
  for (const auto& op : binary_ops()) {
    for (const auto& [sa, sb] : shape_pairs()) {
      INFO(op.name << "(" << tg::to_string(sa) << ", " << tg::to_string(sb) << ")");
      const auto fn = [f = op.fn](const std::vector<Tensor>& in) { return f(in[0], in[1]); };
      const std::vector<Tensor> in = {leaf(sa, ++seed, -2, 2), random_signed(sb, ++seed, 0.5, 2)};
      check_f32_matches_f64(fn, in);
      check_f32_grads_match_f64(fn, in, ++seed);
    }
  }
}

TEST_CASE("add, sub, mul, div: errors", "[ops][binary][errors]") {
  const Tensor a = tg::zeros({2, 3}, DType::f64);
  SECTION("shapes that cannot broadcast name both shapes") {
    for (const auto& op : binary_ops()) {
      INFO(op.name);
      const Tensor b = tg::zeros({4}, DType::f64);
      REQUIRE_THROWS_AS(op.fn(a, b), tg::ShapeError);
      REQUIRE_THROWS_WITH(op.fn(a, b), Catch::Contains(op.name) && Catch::Contains("[2, 3]") &&
                                           Catch::Contains("[4]"));
      const Tensor c = tg::zeros({3, 2, 3}, DType::f64);
      REQUIRE_THROWS_WITH(op.fn(tg::zeros({2, 1, 3}, DType::f64), tg::zeros({3, 3, 3}, DType::f64)),
                          Catch::Contains("[2, 1, 3]") && Catch::Contains("[3, 3, 3]"));
      CHECK_NOTHROW(op.fn(a, c));
    }
  }
  SECTION("mixed dtypes") {
    for (const auto& op : binary_ops()) {
      INFO(op.name);
      const Tensor b = tg::ones({2, 3}, DType::f32);
      REQUIRE_THROWS_AS(op.fn(a, b), tg::DTypeError);
      REQUIRE_THROWS_WITH(op.fn(a, b), Catch::Contains(op.name) && Catch::Contains("f64") &&
                                           Catch::Contains("f32"));
    }
  }
  SECTION("integer operands") {
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
    for (const auto& op : binary_ops()) {
      INFO(op.name);
      REQUIRE_THROWS_AS(op.fn(n, n), tg::DTypeError);
      REQUIRE_THROWS_WITH(op.fn(n, n), Catch::Contains(op.name) && Catch::Contains("i64"));
      REQUIRE_THROWS_AS(op.fn(a, n), tg::DTypeError);
    }
  }
  SECTION("undefined operands") {
    REQUIRE_THROWS_AS(tg::add(a, Tensor()), tg::Error);
    REQUIRE_THROWS_AS(tg::mul(Tensor(), a), tg::Error);
  }
}

// ---- a tensor and a number --------------------------------------------------------------------

TEST_CASE("tensor-number ops and operators: forward", "[ops][scalar]") {
  const Tensor x = f64({1, -2, 4, 0.5}, {2, 2});
  CHECK_THAT(tg::add(x, 2), AllClose({3, 0, 6, 2.5}, {2, 2}));
  CHECK_THAT(tg::sub(x, 2), AllClose({-1, -4, 2, -1.5}, {2, 2}));
  CHECK_THAT(tg::mul(x, 2), AllClose({2, -4, 8, 1}, {2, 2}));
  CHECK_THAT(tg::div(x, 2), AllClose({0.5, -1, 2, 0.25}, {2, 2}));
  CHECK_THAT(tg::rsub(x, 2), AllClose({1, 4, -2, 1.5}, {2, 2}));
  CHECK_THAT(tg::rdiv(x, 2), AllClose({2, -1, 0.5, 4}, {2, 2}));

  CHECK_THAT(x + 2.0, AllClose({3, 0, 6, 2.5}, {2, 2}));
  CHECK_THAT(x - 2.0, AllClose({-1, -4, 2, -1.5}, {2, 2}));
  CHECK_THAT(x * 2.0, AllClose({2, -4, 8, 1}, {2, 2}));
  CHECK_THAT(x / 2.0, AllClose({0.5, -1, 2, 0.25}, {2, 2}));
  CHECK_THAT(2.0 + x, AllClose({3, 0, 6, 2.5}, {2, 2}));
  CHECK_THAT(2.0 - x, AllClose({1, 4, -2, 1.5}, {2, 2}));
  CHECK_THAT(2.0 * x, AllClose({2, -4, 8, 1}, {2, 2}));
  CHECK_THAT(2.0 / x, AllClose({2, -1, 0.5, 4}, {2, 2}));

  SECTION("the number takes the tensor's dtype") {
    const Tensor y = tg::from_vector(std::vector<double>{1, 3}, {2}, DType::f32);
    for (const Tensor& r : {y + 0.1, y - 0.1, y * 0.1, y / 0.1, 0.1 - y, 0.1 / y}) {
      CHECK(r.dtype() == DType::f32);
    }
    CHECK(((1.0 / y).to_vector<float>() == std::vector<float>{1.0f, 1.0f / 3.0f}));
  }
  SECTION("0-dim input keeps its shape") {
    const Tensor s = tg::scalar_tensor(4, DType::f64);
    CHECK((2.0 / s).shape() == tg::Shape{});
    CHECK((2.0 / s).item<double>() == 0.5);
  }
}

TEST_CASE("tensor-number ops: VJP matches finite differences", "[ops][scalar][vjp]") {
  struct Case {
    const char* name;
    TensorFn fn;
  };
  const std::vector<Case> cases = {
      {"x + 1.5", [](const auto& in) { return in[0] + 1.5; }},
      {"x - 1.5", [](const auto& in) { return in[0] - 1.5; }},
      {"x * -2.5", [](const auto& in) { return in[0] * -2.5; }},
      {"x / 3", [](const auto& in) { return in[0] / 3.0; }},
      {"1.5 + x", [](const auto& in) { return 1.5 + in[0]; }},
      {"2 - x", [](const auto& in) { return 2.0 - in[0]; }},
      {"-2.5 * x", [](const auto& in) { return -2.5 * in[0]; }},
      {"2 / x", [](const auto& in) { return 2.0 / in[0]; }},
      {"rsub(x, 0.5)", [](const auto& in) { return tg::rsub(in[0], 0.5); }},
      {"rdiv(x, -3)", [](const auto& in) { return tg::rdiv(in[0], -3.0); }},
      {"sub(x, 4)", [](const auto& in) { return tg::sub(in[0], 4.0); }},
      {"div(x, -0.5)", [](const auto& in) { return tg::div(in[0], -0.5); }},
  };
  std::uint64_t seed = 600;
  for (const auto& c : cases) {
    for (const tg::Shape& shape : {tg::Shape{2, 3, 4}, tg::Shape{}, tg::Shape{5, 1}}) {
      INFO(c.name << " on " << tg::to_string(shape));
      const Tensor x = random_signed(shape, ++seed, 0.5, 2);
      check_vjp(c.fn, {x}, ++seed);
      check_f32_matches_f64(c.fn, {x});
    }
  }
}

TEST_CASE("tensor-number ops: errors", "[ops][scalar][errors]") {
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {2});
  REQUIRE_THROWS_AS(n + 1.0, tg::DTypeError);
  REQUIRE_THROWS_AS(n * 2.0, tg::DTypeError);
  REQUIRE_THROWS_AS(1.0 - n, tg::DTypeError);
  REQUIRE_THROWS_AS(2.0 / n, tg::DTypeError);
  REQUIRE_THROWS_WITH(n / 2.0, Catch::Contains("i64"));
  REQUIRE_THROWS_AS(tg::pow(n, 2.0), tg::DTypeError);
}
