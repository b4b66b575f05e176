// Errors that teach: the right exception type, and a message naming the function and the
// values involved. Impossible sizes and huge allocations are refused, never a crash.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

/// Restores the allocation limit even when an assertion fails.
struct MaxBytesRestorer {
  std::size_t saved = tg::max_tensor_bytes();
  ~MaxBytesRestorer() { tg::set_max_tensor_bytes(saved); }
};

}  // namespace

TEST_CASE("negative sizes are a ShapeError that prints the shape", "[errors]") {
  REQUIRE_THROWS_AS(tg::zeros({2, -3}), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::zeros({2, -3}), Contains("negative") && Contains("[2, -3]"));
  REQUIRE_THROWS_AS(tg::ones({-1}, tg::DType::f64), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::empty({4, 5, -2}), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::full({-4, 2}, 1.0), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::randn({3, -3}), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::rand({-3}), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::randint(0, 4, {-3, 1}), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::from_vector(std::vector<double>{}, {-1, 0}), tg::ShapeError);
}

TEST_CASE("from_vector with the wrong number of values", "[errors]") {
  const std::vector<double> five{1, 2, 3, 4, 5};
  REQUIRE_THROWS_AS(tg::from_vector(five, {2, 3}), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::from_vector(five, {2, 3}, tg::DType::f64),
                      Contains("from_vector") && Contains("[2, 3]") && Contains("5 values"));
  REQUIRE_THROWS_AS(tg::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7}, {2, 3}), tg::ShapeError);
  REQUIRE(tg::from_vector(std::vector<std::int64_t>{9}, {}).item<std::int64_t>() == 9);
}

TEST_CASE("impossible reshapes", "[errors]") {
  tg::Tensor x = tg::zeros({2, 3});
  REQUIRE_THROWS_AS(x.reshape({4, 2}), tg::ShapeError);
  REQUIRE_THROWS_WITH(x.reshape({4, 2}), Contains("reshape") && Contains("[2, 3]") &&
                                              Contains("[4, 2]"));
  REQUIRE_THROWS_WITH(x.reshape({4, -1}), Contains("reshape") && Contains("[4, -1]"));
  REQUIRE_THROWS_AS(x.reshape({4, -1}), tg::ShapeError);
  REQUIRE_THROWS_AS(x.reshape({-1, -1}), tg::ShapeError);
  REQUIRE_THROWS_AS(x.reshape({-2, -3}), tg::ShapeError);
  REQUIRE_THROWS_AS(x.view({7}), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::zeros({0, 3}).reshape({0, -1}), tg::ShapeError);  // -1 is ambiguous
  REQUIRE_THROWS_AS(x.flatten(2), tg::Error);
  REQUIRE_THROWS_AS(x.flatten(1, 0), tg::ValueError);
}

TEST_CASE("huge allocations throw ValueError instead of crashing", "[errors][memory]") {
  const std::int64_t m = std::int64_t{1} << 20;
  REQUIRE_THROWS_AS(tg::zeros({m, m, m}), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::zeros({m, m, m}),
                      Contains("[1048576, 1048576, 1048576]") && Contains("set_max_tensor_bytes"));
  // More elements than an int64 holds.
  const std::int64_t big = std::int64_t{1} << 40;
  REQUIRE_THROWS_AS(tg::ones({big, big, big}, tg::DType::f64), tg::ValueError);
  // Every factory checks before it allocates, including those that fill a buffer first.
  REQUIRE_THROWS_AS(tg::randn({m, m, m}), tg::ValueError);
  REQUIRE_THROWS_AS(tg::rand({m, m, m}, tg::DType::f64), tg::ValueError);
  REQUIRE_THROWS_AS(tg::uniform({m, m, m}, 0.0, 1.0), tg::ValueError);
  REQUIRE_THROWS_AS(tg::randint(0, 3, {m, m, m}), tg::ValueError);
  REQUIRE_THROWS_AS(tg::full({m, m, m}, 2.0), tg::ValueError);
  REQUIRE_THROWS_AS(tg::arange(0.0, 1e14), tg::ValueError);
  REQUIRE_THROWS_AS(tg::arange(0.0, 1e300), tg::ValueError);
}

TEST_CASE("set_max_tensor_bytes lowers the limit", "[errors][memory]") {
  MaxBytesRestorer restore;
  REQUIRE(tg::max_tensor_bytes() > std::size_t{1} << 20);
  tg::set_max_tensor_bytes(1000);
  REQUIRE(tg::max_tensor_bytes() == 1000);
  REQUIRE(tg::zeros({250}).numel() == 250);  // exactly 1000 bytes of f32
  REQUIRE(tg::zeros({125}, tg::DType::f64).numel() == 125);
  REQUIRE_THROWS_AS(tg::zeros({251}), tg::ValueError);
  REQUIRE_THROWS_AS(tg::zeros({126}, tg::DType::f64), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::zeros({9, 14}, tg::DType::i64),
                      Contains("[9, 14]") && Contains("1000"));

  // An op whose output is over the limit fails cleanly, and leaves no record behind.
  tg::set_max_tensor_bytes(100000);
  tg::Tensor x = tg::ones({10, 10}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor col = tg::ones({10, 1, 1}, tg::DType::f64);
  const auto records = tg::live_tape_records();
  tg::set_max_tensor_bytes(1000);
  REQUIRE_THROWS_AS(x * col, tg::ValueError);  // [10, 10, 10] f64 = 8000 bytes
  REQUIRE(tg::live_tape_records() == records);
}

TEST_CASE("only floating tensors can require grad", "[errors]") {
  tg::Tensor i = tg::zeros({2, 3}, tg::DType::i64);
  REQUIRE_THROWS_AS(i.set_requires_grad(true), tg::DTypeError);
  REQUIRE_THROWS_WITH(i.set_requires_grad(true),
                      Contains("set_requires_grad") && Contains("i64"));
  REQUIRE_FALSE(i.requires_grad());
  i.set_requires_grad(false);  // switching off is always fine on a leaf

  tg::Tensor x = tg::ones({2}).set_requires_grad(true);
  tg::Tensor y = x * 2.0;
  REQUIRE_THROWS_AS(y.set_requires_grad(false), tg::GraphError);
  REQUIRE_THROWS_WITH(y.set_requires_grad(false), Contains("mul_scalar") && Contains("detach"));
}

TEST_CASE("rank above 8 is a ShapeError", "[errors]") {
  REQUIRE_THROWS_AS(tg::zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}), tg::ShapeError);
  REQUIRE_THROWS_WITH(tg::Shape({1, 2, 1, 2, 1, 2, 1, 2, 1}), Contains("rank 9") && Contains("8"));
  REQUIRE(tg::zeros({1, 2, 1, 2, 1, 2, 1, 2}).dim() == 8);
  tg::Shape s{1, 2, 3, 4, 5, 6, 7, 8};
  REQUIRE_THROWS_AS(s.push_back(9), tg::ShapeError);
  const std::vector<std::int64_t> nine(9, 1);
  REQUIRE_THROWS_AS(tg::Shape(nine), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::zeros({2, 2}).reshape({1, 1, 1, 1, 1, 1, 1, 2, 2}), tg::ShapeError);
}

TEST_CASE("bad factory arguments are ValueErrors naming the factory", "[errors]") {
  REQUIRE_THROWS_AS(tg::uniform({2}, 3.0, 1.0), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::uniform({2}, 3.0, 1.0), Contains("uniform") && Contains("low=3"));
  REQUIRE_THROWS_AS(tg::randint(5, 2, {2}), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::randint(5, 2, {2}), Contains("randint"));
  REQUIRE_THROWS_AS(tg::randn({2}, tg::DType::i64), tg::DTypeError);
  REQUIRE_THROWS_AS(tg::arange(0.0, std::numeric_limits<double>::infinity()), tg::ValueError);
}

TEST_CASE("undefined tensors and bad set_grad", "[errors]") {
  tg::Tensor u;
  REQUIRE_THROWS_AS(u.shape(), tg::ValueError);
  REQUIRE_THROWS_WITH(u.numel(), Contains("undefined"));
  REQUIRE_THROWS_AS(u.requires_grad(), tg::ValueError);
  REQUIRE_THROWS_AS(u.to_vector<double>(), tg::ValueError);
  REQUIRE_THROWS_AS(u.clone(), tg::ValueError);

  tg::Tensor x = tg::zeros({2, 3}, tg::DType::f64).set_requires_grad(true);
  REQUIRE_THROWS_AS(x.set_grad(tg::zeros({3, 2}, tg::DType::f64)), tg::ShapeError);
  REQUIRE_THROWS_WITH(x.set_grad(tg::zeros({2, 3}, tg::DType::f32)),
                      Contains("set_grad") && Contains("f32") && Contains("f64"));
}

TEST_CASE("full with a value outside i64 is a ValueError and not an overflow", "[errors]") {
  const double inf = std::numeric_limits<double>::infinity();
  for (double v : {inf, -inf, std::nan(""), 0x1p63, -0x1p64}) {
    REQUIRE_THROWS_AS(tg::full({2}, v, tg::DType::i64), tg::ValueError);
  }
  REQUIRE_THROWS_WITH(tg::full({2}, inf, tg::DType::i64),
                      "full: value inf cannot be converted to i64 without overflow");
  REQUIRE(tg::full({1}, -0x1p63, tg::DType::i64).to_vector<std::int64_t>()[0] == INT64_MIN);
  REQUIRE(std::isinf(tg::full({1}, -inf, tg::DType::f32).item<double>()));  // floats take it
}

TEST_CASE("factories name themselves in a bad size's error", "[autograd][errors]") {
  CHECK_THROWS_WITH(tg::from_vector(std::vector<double>{1, 2}, {-1, 2}), Contains("from_vector: negative size"));
  CHECK_THROWS_WITH(tg::zeros({-1}), Contains("zeros: negative size"));
  CHECK_THROWS_WITH(tg::ones({2, -3}), Contains("ones: negative size"));
  CHECK_THROWS_WITH(tg::empty({-2}), Contains("empty: negative size"));
  CHECK_THROWS_WITH(tg::randn({-2}), Contains("randn: negative size"));
  CHECK_THROWS_WITH(tg::randint(0, 3, {-2}), Contains("randint: negative size"));
}
