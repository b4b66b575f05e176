// reshape (view), flatten, transpose, permute.
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

Tensor iota(const tg::Shape& shape) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  return f64(v, shape);
}

}  // namespace

TEST_CASE("reshape: same data in a new shape", "[ops][shape][reshape]") {
  const Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor y = tg::reshape(x, {3, 2});
  CHECK_THAT(y, AllClose({1, 2, 3, 4, 5, 6}, {3, 2}));
  CHECK(y.shares_storage(x));
  CHECK(y.at({2, 0}) == 5.0);
  CHECK(tg::reshape(x, {-1, 2}).shape() == tg::Shape{3, 2});
  CHECK(tg::reshape(x, {1, -1, 1}).shape() == tg::Shape{1, 6, 1});
  CHECK(tg::reshape(x, {6}).shape() == tg::Shape{6});
  CHECK(x.reshape({3, -1}).shape() == tg::Shape{3, 2});
  CHECK(x.view({6, 1}).shape() == tg::Shape{6, 1});
  CHECK(tg::reshape(tg::scalar_tensor(2, DType::f64), {1, 1}).shape() == tg::Shape{1, 1});
  CHECK(tg::reshape(f64({7}, {1}), {}).shape() == tg::Shape{});
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4}, {4});
  CHECK(tg::reshape(n, {2, 2}).to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 2, 3, 4});
}

TEST_CASE("flatten: merges a range of dims", "[ops][shape][flatten]") {
  const Tensor x = iota({2, 3, 4});
  CHECK(tg::flatten(x).shape() == tg::Shape{24});
  CHECK(tg::flatten(x, 1).shape() == tg::Shape{2, 12});
  CHECK(tg::flatten(x, 0, 1).shape() == tg::Shape{6, 4});
  CHECK(tg::flatten(x, -2, -1).shape() == tg::Shape{2, 12});
  CHECK(tg::flatten(x, 1, 1).shape() == tg::Shape{2, 3, 4});
  CHECK(x.flatten(1).shape() == tg::Shape{2, 12});
  CHECK(tg::flatten(tg::scalar_tensor(2, DType::f64)).shape() == tg::Shape{1});
  CHECK(tg::flatten(x, 1).to_vector<double>() == x.to_vector<double>());
  CHECK(tg::flatten(x, 1).shares_storage(x));
}

TEST_CASE("transpose and permute: forward", "[ops][shape][permute]") {
  SECTION("transpose of a matrix") {
    const Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
    const Tensor t = tg::transpose(x, 0, 1);
    CHECK_THAT(t, AllClose({1, 4, 2, 5, 3, 6}, {3, 2}));
    CHECK_FALSE(t.shares_storage(x));
    CHECK_THAT(tg::transpose(x, -1, -2), AllClose({1, 4, 2, 5, 3, 6}, {3, 2}));
    CHECK_THAT(tg::transpose(x, 1, 1), AllClose({1, 2, 3, 4, 5, 6}, {2, 3}));
  }
  SECTION("transpose of a 3-D tensor: out[k, j, i] = x[i, j, k]") {
    const Tensor x = iota({2, 3, 4});
    const Tensor t = tg::transpose(x, -1, 0);
    REQUIRE(t.shape() == tg::Shape{4, 3, 2});
    for (std::int64_t i = 0; i < 2; ++i) {
      for (std::int64_t j = 0; j < 3; ++j) {
        for (std::int64_t k = 0; k < 4; ++k) CHECK(t.at({k, j, i}) == x.at({i, j, k}));
      }
    }
  }
  SECTION("permute: output dim i is input dim dims[i]") {
    const Tensor x = iota({2, 3, 4});
    const Tensor p = tg::permute(x, {2, 0, 1});
    REQUIRE(p.shape() == tg::Shape{4, 2, 3});
    for (std::int64_t i = 0; i < 2; ++i) {
      for (std::int64_t j = 0; j < 3; ++j) {
        for (std::int64_t k = 0; k < 4; ++k) CHECK(p.at({k, i, j}) == x.at({i, j, k}));
      }
    }
    // The first rows, spelled out.
    CHECK(p.to_vector<double>()[0] == 0);
    CHECK(p.to_vector<double>()[1] == 4);
    CHECK(p.to_vector<double>()[2] == 8);
    CHECK(p.to_vector<double>()[3] == 12);
    CHECK(tg::permute(x, {-1, 0, 1}).to_vector<double>() == p.to_vector<double>());
    CHECK(tg::permute(x, {0, 1, 2}).to_vector<double>() == x.to_vector<double>());
  }
  SECTION("permute of i64 and 0-dim tensors") {
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {3, 2});
    CHECK(tg::transpose(n, 0, 1).to_vector<std::int64_t>() ==
          std::vector<std::int64_t>{1, 3, 5, 2, 4, 6});
    CHECK(tg::permute(tg::scalar_tensor(3, DType::f64), {}).item<double>() == 3.0);
  }
}

TEST_CASE("shape ops: VJP matches finite differences", "[ops][shape][vjp]") {
  struct Case {
    std::string name;
    tg::Shape shape;
    TensorFn fn;
  };
  const std::vector<Case> cases = {
      {"reshape [2, 3, 4] -> [4, -1]",
       {2, 3, 4},
       [](const auto& in) {
         return tg::reshape(in[0], {4, -1});
       }},
      {"reshape [3, 5] -> [5, 3]",
       {3, 5},
       [](const auto& in) {
         return tg::reshape(in[0], {5, 3});
       }},
      {"flatten(1) of [2, 3, 4]", {2, 3, 4}, [](const auto& in) { return tg::flatten(in[0], 1); }},
      {"flatten(0, 1) of [2, 3, 4]",
       {2, 3, 4},
       [](const auto& in) { return tg::flatten(in[0], 0, 1); }},
      {"transpose [3, 5]", {3, 5}, [](const auto& in) { return tg::transpose(in[0], 0, 1); }},
      {"transpose(0, 2) of [2, 3, 4]",
       {2, 3, 4},
       [](const auto& in) { return tg::transpose(in[0], 0, 2); }},
      {"transpose(-1, 1) of [2, 3, 4]",
       {2, 3, 4},
       [](const auto& in) { return tg::transpose(in[0], -1, 1); }},
      {"permute [2, 0, 1] of [2, 3, 4]",
       {2, 3, 4},
       [](const auto& in) {
         return tg::permute(in[0], {2, 0, 1});
       }},
      {"permute [1, 2, 0] of [2, 3, 4]",
       {2, 3, 4},
       [](const auto& in) {
         return tg::permute(in[0], {1, 2, 0});
       }},
      {"permute [3, 1, 0, 2] of [2, 3, 1, 4]",
       {2, 3, 1, 4},
       [](const auto& in) {
         return tg::permute(in[0], {3, 1, 0, 2});
       }},
      // Shape ops between two other ops: the gradient must arrive in the right order.
      {"transpose then multiply by a constant [3, 2]",
       {2, 3},
       [](const auto& in) {
         return tg::mul(tg::transpose(in[0], 0, 1),
                        f64({1, 2, 3, 4, 5, 6}, {3, 2}).to(in[0].dtype()));
       }},
  };
  std::uint64_t seed = 4000;
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = leaf(c.shape, ++seed, -2, 2);
    check_vjp(c.fn, {x}, ++seed);
    check_f32_matches_f64(c.fn, {x});
  }
}

TEST_CASE("shape ops: exact gradient of permute is the inverse permutation", "[ops][shape][vjp]") {
  const Tensor x = iota({2, 3, 4}).set_requires_grad(true);
  const Tensor p = tg::permute(x, {2, 0, 1});
  // Seed with the permuted input itself: the gradient must then be the input again.
  const Tensor g = tg::grad({p}, {x}, {p.detach()})[0];
  CHECK_THAT(g, AllClose(x.detach(), 0, 0));
}

TEST_CASE("shape ops: errors", "[ops][shape][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  SECTION("reshape to another element count names both shapes") {
    REQUIRE_THROWS_AS(tg::reshape(x, {4, 2}), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::reshape(x, {4, 2}), Catch::Contains("reshape") &&
                                                    Catch::Contains("[2, 3]") &&
                                                    Catch::Contains("[4, 2]"));
    REQUIRE_THROWS_AS(tg::reshape(x, {4, -1}), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::reshape(x, {-1, -1}), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::reshape(x, {-2, -3}), tg::ShapeError);
  }
  SECTION("flatten with bad dims") {
    REQUIRE_THROWS_AS(tg::flatten(x, 2), tg::ValueError);
    REQUIRE_THROWS_AS(tg::flatten(x, 1, 0), tg::ValueError);
    REQUIRE_THROWS_WITH(tg::flatten(x, 1, 0), Catch::Contains("flatten"));
  }
  SECTION("transpose and permute with bad dims") {
    REQUIRE_THROWS_AS(tg::transpose(x, 0, 2), tg::ValueError);
    REQUIRE_THROWS_WITH(tg::transpose(x, 0, 2),
                        Catch::Contains("transpose") && Catch::Contains("out of range"));
    REQUIRE_THROWS_AS(tg::transpose(x, -3, 0), tg::ValueError);
    REQUIRE_THROWS_AS(tg::permute(x, {0}), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::permute(x, {0}),
                        Catch::Contains("permute") && Catch::Contains("[2, 3]"));
    REQUIRE_THROWS_AS(tg::permute(x, {0, 0}), tg::ValueError);
    REQUIRE_THROWS_AS(tg::permute(x, {1, -1}), tg::ValueError);
    REQUIRE_THROWS_AS(tg::permute(x, {0, 2}), tg::ValueError);
  }
}
