// sum and mean (over everything or over dims, negative dims, keepdim, several dims) and
// max over one dim (values, i64 indices, ties, NaN, gradient to the first maximum only).
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();

/// [2, 3, 4] holding 1..24.
Tensor counting() {
  std::vector<double> v(24);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i + 1);
  return f64(v, {2, 3, 4});
}

/// Distinct values spaced 0.1 apart in a scrambled order: no ties, so max is smooth there.
Tensor distinct(const tg::Shape& shape, std::uint64_t seed) {
  const auto n = static_cast<std::size_t>(shape.numel());
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 0.1 * static_cast<double>(i) - 1.0;
  std::mt19937_64 engine(seed);
  std::shuffle(v.begin(), v.end(), engine);
  return f64(v, shape).set_requires_grad(true);
}

struct ReductionCase {
  std::string name;
  tg::Shape shape;
  TensorFn fn;
};

std::vector<ReductionCase> reduction_cases() {
  using V = std::vector<std::int64_t>;
  std::vector<ReductionCase> cases;
  for (const bool is_mean : {false, true}) {
    const std::string op = is_mean ? "mean" : "sum";
    auto all = [is_mean](const std::vector<Tensor>& in) {
      return is_mean ? tg::mean(in[0]) : tg::sum(in[0]);
    };
    auto over = [is_mean](V dims, bool keepdim) {
      return [is_mean, dims, keepdim](const std::vector<Tensor>& in) {
        return is_mean ? tg::mean(in[0], dims, keepdim) : tg::sum(in[0], dims, keepdim);
      };
    };
    cases.push_back({op + " all of [3, 4]", {3, 4}, all});
    cases.push_back({op + " all of 0-dim", {}, all});
    cases.push_back({op + " dim 0 of [3, 4]", {3, 4}, over({0}, false)});
    cases.push_back({op + " dim -1 keepdim of [2, 3, 4]", {2, 3, 4}, over({-1}, true)});
    cases.push_back({op + " dim 1 of [2, 3, 4]", {2, 3, 4}, over({1}, false)});
    cases.push_back({op + " dims {0, 2} of [2, 3, 4]", {2, 3, 4}, over({0, 2}, false)});
    cases.push_back({op + " dims {-1, -3} keepdim of [2, 3, 4]", {2, 3, 4}, over({-1, -3}, true)});
    cases.push_back({op + " dims {2, 0, 1} of [2, 3, 4]", {2, 3, 4}, over({2, 0, 1}, false)});
    cases.push_back({op + " dim 1 of [5, 1, 2]", {5, 1, 2}, over({1}, false)});
  }
  return cases;
}

}  // namespace

TEST_CASE("sum: forward over everything and over dims", "[ops][reduce][sum]") {
  const Tensor x = counting();
  SECTION("everything gives a 0-dim tensor") {
    const Tensor s = tg::sum(x);
    CHECK(s.shape() == tg::Shape{});
    CHECK(s.item<double>() == 300.0);
    CHECK(tg::sum(tg::scalar_tensor(2.5, DType::f64)).item<double>() == 2.5);
  }
  SECTION("one dim, positive or negative") {
    CHECK_THAT(tg::sum(x, {0}), AllClose({14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36}, {3, 4}));
    CHECK_THAT(tg::sum(x, {1}), AllClose({15, 18, 21, 24, 51, 54, 57, 60}, {2, 4}));
    CHECK_THAT(tg::sum(x, {-1}), AllClose({10, 26, 42, 58, 74, 90}, {2, 3}));
    CHECK_THAT(tg::sum(x, {2}), AllClose({10, 26, 42, 58, 74, 90}, {2, 3}));
  }
  SECTION("keepdim keeps the reduced dims as size 1") {
    CHECK_THAT(tg::sum(x, {1}, true), AllClose({15, 18, 21, 24, 51, 54, 57, 60}, {2, 1, 4}));
    CHECK_THAT(tg::sum(x, {0, 2}, true), AllClose({68, 100, 132}, {1, 3, 1}));
  }
  SECTION("several dims, in any order") {
    CHECK_THAT(tg::sum(x, {0, 2}), AllClose({68, 100, 132}, {3}));
    CHECK_THAT(tg::sum(x, {2, 0}), AllClose({68, 100, 132}, {3}));
    CHECK_THAT(tg::sum(x, {-1, -2}), AllClose({78, 222}, {2}));
    CHECK_THAT(tg::sum(x, {0, 1, 2}), AllClose({300}, {}));
  }
  SECTION("integer tensors sum to integers") {
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(tg::sum(n).dtype() == DType::i64);
    CHECK(tg::sum(n).item<std::int64_t>() == 21);
    CHECK(tg::sum(n, {0}).to_vector<std::int64_t>() == std::vector<std::int64_t>{5, 7, 9});
  }
  SECTION("f32") {
    const Tensor y = x.to(DType::f32);
    CHECK(tg::sum(y, {1}).dtype() == DType::f32);
    CHECK(tg::sum(y).item<float>() == 300.0f);
  }
}

TEST_CASE("mean: forward over everything and over dims", "[ops][reduce][mean]") {
  const Tensor x = counting();
  CHECK(tg::mean(x).shape() == tg::Shape{});
  CHECK(tg::mean(x).item<double>() == 12.5);
  CHECK_THAT(tg::mean(x, {0}), AllClose({7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}, {3, 4}));
  CHECK_THAT(tg::mean(x, {-1}), AllClose({2.5, 6.5, 10.5, 14.5, 18.5, 22.5}, {2, 3}));
  CHECK_THAT(tg::mean(x, {1}, true), AllClose({5, 6, 7, 8, 17, 18, 19, 20}, {2, 1, 4}));
  CHECK_THAT(tg::mean(x, {0, 2}), AllClose({8.5, 12.5, 16.5}, {3}));
  CHECK_THAT(tg::mean(x, {-3, -1}, true), AllClose({8.5, 12.5, 16.5}, {1, 3, 1}));
  SECTION("the mean of nothing is nan, as in PyTorch") {
    CHECK(std::isnan(tg::mean(tg::zeros({0, 3}, DType::f64)).item<double>()));
    CHECK(tg::sum(tg::zeros({0, 3}, DType::f64)).item<double>() == 0.0);
  }
}

TEST_CASE("sum and mean: exact gradients", "[ops][reduce][vjp]") {
  const Tensor x = counting().set_requires_grad(true);
  const Tensor c = f64({0.5, -1, 2}, {3});
  CHECK_THAT(tg::grad({tg::sum(x, {0, 2})}, {x}, {c})[0],
             AllClose(tg::mul(tg::ones({2, 3, 4}, DType::f64), f64({0.5, -1, 2}, {1, 3, 1}))));
  CHECK_THAT(tg::grad({tg::mean(x, {0, 2})}, {x}, {c})[0],
             AllClose(tg::mul(tg::ones({2, 3, 4}, DType::f64),
                              f64({0.5 / 8, -1.0 / 8, 2.0 / 8}, {1, 3, 1}))));
  const Tensor c0 = tg::scalar_tensor(-3, DType::f64);
  CHECK_THAT(tg::grad({tg::mean(x)}, {x}, {c0})[0],
             AllClose(tg::full({2, 3, 4}, -3.0 / 24, DType::f64)));
}

TEST_CASE("sum and mean: VJP matches finite differences", "[ops][reduce][vjp]") {
  std::uint64_t seed = 3000;
  for (const auto& c : reduction_cases()) {
    INFO(c.name);
    const Tensor x = leaf(c.shape, ++seed, -2, 2);
    check_vjp(c.fn, {x}, ++seed);
    check_f32_matches_f64(c.fn, {x});
    check_f32_grads_match_f64(c.fn, {x}, ++seed);
  }
}

TEST_CASE("sum and mean: errors", "[ops][reduce][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  SECTION("a dim out of range names the dim and the rank") {
    for (std::int64_t bad : {2, -3, 7}) {
      INFO("dim " << bad);
      REQUIRE_THROWS_AS(tg::sum(x, {bad}), tg::ValueError);
      REQUIRE_THROWS_WITH(tg::sum(x, {bad}),
                          Catch::Contains("sum") && Catch::Contains(std::to_string(bad)));
      REQUIRE_THROWS_AS(tg::mean(x, {0, bad}), tg::ValueError);
      REQUIRE_THROWS_WITH(tg::mean(x, {bad}),
                          Catch::Contains("mean") && Catch::Contains("out of range"));
    }
  }
  SECTION("a dim given twice, also as positive and negative") {
    REQUIRE_THROWS_AS(tg::sum(x, {1, 1}), tg::ValueError);
    REQUIRE_THROWS_AS(tg::sum(x, {1, -1}), tg::ValueError);
    REQUIRE_THROWS_AS(tg::mean(x, {0, -2}), tg::ValueError);
  }
  SECTION("an empty list of dims") {
    REQUIRE_THROWS_AS(tg::sum(x, {}), tg::ValueError);
    REQUIRE_THROWS_AS(tg::mean(x, {}), tg::ValueError);
  }
  SECTION("mean of integers") {
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {2});
    REQUIRE_THROWS_AS(tg::mean(n), tg::DTypeError);
    REQUIRE_THROWS_WITH(tg::mean(n, {0}), Catch::Contains("mean") && Catch::Contains("i64"));
  }
}

// ---- max ---------------------------------------------------------------------------------------

TEST_CASE("max: values and i64 indices over a dim", "[ops][reduce][max]") {
  const Tensor x = f64({1, 5, 2, 7, -1, 3}, {2, 3});
  SECTION("dim 1 and dim -1") {
    for (std::int64_t dim : {1, -1}) {
      const auto r = tg::max(x, dim);
      CHECK_THAT(r.values, AllClose({5, 7}, {2}));
      CHECK(r.indices.dtype() == DType::i64);
      CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 0});
    }
  }
  SECTION("dim 0, keepdim") {
    const auto r = tg::max(x, 0, true);
    CHECK_THAT(r.values, AllClose({7, 5, 3}, {1, 3}));
    CHECK(r.indices.shape() == tg::Shape{1, 3});
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 0, 1});
  }
  SECTION("a middle dim of a 3-D tensor") {
    const Tensor y = f64({0, 9, 4, 1, 8, 2, 3, 5, 6, 7, 11, 10}, {2, 3, 2});
    const auto r = tg::max(y, 1);
    CHECK_THAT(r.values, AllClose({8, 9, 11, 10}, {2, 2}));
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{2, 0, 2, 2});
  }
  SECTION("the first maximum wins on ties") {
    const Tensor t = f64({5, 5, 1, 2, 7, 7, 7, 7, 3, 3, 3, 3}, {3, 4});
    const auto r = tg::max(t, 1);
    CHECK_THAT(r.values, AllClose({5, 7, 3}, {3}));
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 0, 0});
    const auto r0 = tg::max(f64({1, 4, 4, 4, 2, 4}, {3, 2}), 0);
    CHECK(r0.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 0});
  }
  SECTION("NaN counts as the maximum; the first NaN wins") {
    const Tensor t = f64({1, kNan, 3, 5, 1, kNan, kNan, 2, kNan, 2, 1, 0}, {4, 3});
    const auto r = tg::max(t, 1);
    const auto v = r.values.to_vector<double>();
    CHECK(std::isnan(v[0]));
    CHECK(std::isnan(v[1]));
    CHECK(std::isnan(v[2]));
    CHECK(v[3] == 2.0);
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 2, 0, 0});
  }
  SECTION("infinities") {
    const double inf = std::numeric_limits<double>::infinity();
    const auto r = tg::max(f64({-inf, -inf, 1, inf}, {2, 2}), 1);
    CHECK(r.values.to_vector<double>() == std::vector<double>{-inf, inf});
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1});
  }
  SECTION("f32 gives the same values and indices") {
    const auto r = tg::max(x.to(DType::f32), 1);
    CHECK(r.values.dtype() == DType::f32);
    CHECK(r.values.to_vector<double>() == std::vector<double>{5, 7});
    CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 0});
  }
  SECTION("0-dim input") {
    const auto r = tg::max(tg::scalar_tensor(3, DType::f64), 0);
    CHECK(r.values.item<double>() == 3.0);
    CHECK(r.indices.item<std::int64_t>() == 0);
  }
}

TEST_CASE("max: the gradient goes to the first maximum only", "[ops][reduce][max][vjp]") {
  const Tensor t = f64({5, 5, 1, 2, 0, 7, 7, 7, 3, 3, 9, 3}, {3, 4}).set_requires_grad(true);
  const auto r = tg::max(t, 1);
  CHECK_FALSE(r.indices.requires_grad());
  const Tensor c = f64({0.5, -2, 1.25}, {3});
  CHECK_THAT(tg::grad({r.values}, {t}, {c})[0],
             AllClose({0.5, 0, 0, 0, 0, -2, 0, 0, 0, 0, 1.25, 0}, {3, 4}, DType::f64, 0, 0));
  SECTION("over dim 0 with keepdim") {
    const auto r0 = tg::max(t, 0, true);
    const Tensor c0 = f64({1, 2, 3, 4}, {1, 4});
    CHECK_THAT(tg::grad({r0.values}, {t}, {c0})[0],
               AllClose({1, 0, 0, 0, 0, 2, 0, 4, 0, 0, 3, 0}, {3, 4}, DType::f64, 0, 0));
  }
  SECTION("to the NaN when there is one") {
    const Tensor n = f64({1, kNan, 3, kNan}, {1, 4}).set_requires_grad(true);
    CHECK_THAT(tg::grad({tg::max(n, 1).values}, {n}, {f64({-1.5}, {1})})[0],
               AllClose({0, -1.5, 0, 0}, {1, 4}, DType::f64, 0, 0));
  }
}

TEST_CASE("max: VJP matches finite differences", "[ops][reduce][max][vjp]") {
  struct Case {
    tg::Shape shape;
    std::int64_t dim;
    bool keepdim;
  };
  std::uint64_t seed = 3500;
  for (const Case& c :
       {Case{{3, 5}, 1, false}, Case{{3, 5}, 0, true}, Case{{4, 2, 3}, 0, false},
        Case{{4, 2, 3}, -2, true}, Case{{2, 3, 4}, -1, false}, Case{{6}, 0, false}}) {
    INFO("max over dim " << c.dim << (c.keepdim ? " keepdim" : "") << " of "
                         << tg::to_string(c.shape));
    const TensorFn fn = [c](const std::vector<Tensor>& in) {
      return tg::max(in[0], c.dim, c.keepdim).values;
    };
    const Tensor x = distinct(c.shape, ++seed);
    check_vjp(fn, {x}, ++seed);
    check_f32_matches_f64(fn, {x});
    check_f32_grads_match_f64(fn, {x}, ++seed);
  }
}

TEST_CASE("max: errors", "[ops][reduce][max][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  REQUIRE_THROWS_AS(tg::max(x, 2), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::max(x, 2), Catch::Contains("max") && Catch::Contains("out of range"));
  REQUIRE_THROWS_AS(tg::max(x, -3), tg::ValueError);
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {2});
  REQUIRE_THROWS_AS(tg::max(n, 0), tg::DTypeError);
  REQUIRE_THROWS_AS(tg::max(tg::zeros({2, 0}, DType::f64), 1), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::max(tg::zeros({2, 0}, DType::f64), 1), Catch::Contains("[2, 0]"));
}
