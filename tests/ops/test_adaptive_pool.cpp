// adaptive_avg_pool2d and adaptive_max_pool2d: PyTorch's windows worked by hand, overlapping
// windows summing gradients, f32 and f64, create_graph, and the errors (each names the op,
// the argument and the shapes). The values against PyTorch: test_pool_resize_reference.cpp.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

tg::Tensor row(const std::vector<double>& v, tg::DType d = tg::DType::f64) {
  return tg::from_vector(v, {1, 1, 1, static_cast<std::int64_t>(v.size())}, d);
}

}  // namespace

TEST_CASE("adaptive_avg_pool2d windows of 5 into 3 are 0 to 2, 1 to 4 and 3 to 5 (end excluded)", "[pool][adaptive]") {
  for (const tg::DType d : {tg::DType::f32, tg::DType::f64}) {
    const tg::Tensor x = row({1, 2, 4, 8, 16}, d);
    const tg::Tensor y = tg::adaptive_avg_pool2d(x, {1, 3});
    CHECK(y.dtype() == d);
    CHECK(y.shape() == tg::Shape{1, 1, 1, 3});
    const auto v = y.to_vector<double>();
    CHECK(v[0] == Approx(1.5));
    CHECK(v[1] == Approx(14.0 / 3));
    CHECK(v[2] == Approx(12.0));
  }
}

TEST_CASE("adaptive_max_pool2d: an element winning overlapping windows receives the sum", "[pool][adaptive]") {
  // Windows [0, 2), [1, 4), [3, 5) of 5: x[1] = 9 wins the first two.
  const tg::Tensor x = row({1, 9, 2, 3, 0}).set_requires_grad(true);
  const tg::MaxPoolResult r = tg::adaptive_max_pool2d_with_indices(x, {1, 3});
  CHECK(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 1, 3});
  r.values.backward(row({0.5, 0.25, 2}));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 0.75, 0, 2, 0});
}

TEST_CASE("adaptive pools to a larger output repeat input elements, and are twice differentiable",
          "[pool][adaptive]") {
  const tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, tg::DType::f64).reshape({1, 2, 2})
                           .set_requires_grad(true);
  const tg::Tensor y = tg::adaptive_avg_pool2d(x, 3);  // rows [0,1), [0,2), [1,2)
  CHECK(y.to_vector<double>() == std::vector<double>{1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  const tg::Tensor v = tg::full({1, 3, 3}, 1.0, tg::DType::f64).set_requires_grad(true);
  const auto g = tg::grad({y}, {x}, {v}, {.create_graph = true});
  // Each element is read whole by one output, halved by two and quartered by one: 1 + 2·0.5 + 0.25.
  CHECK(g[0].to_vector<double>() == std::vector<double>{2.25, 2.25, 2.25, 2.25});
  REQUIRE(g[0].requires_grad());
  const auto h = tg::grad({tg::sum(g[0] * g[0])}, {v});
  CHECK(h[0].shape() == tg::Shape{1, 3, 3});
}

TEST_CASE("adaptive pools reject a wrong rank, naming the op and the shape", "[pool][adaptive][errors]") {
  for (const tg::Shape& s : {tg::Shape{4, 5}, tg::Shape{1, 1, 1, 4, 5}}) {
    CHECK_THROWS_AS(tg::adaptive_avg_pool2d(tg::zeros(s), 2), tg::ShapeError);
    CHECK_THROWS_WITH(tg::adaptive_avg_pool2d(tg::zeros(s), 2),
                      Contains("adaptive_avg_pool2d") && Contains(fmt::format("{}", s)) && Contains("[N, C, H, W]"));
    CHECK_THROWS_AS(tg::adaptive_max_pool2d(tg::zeros(s), 2), tg::ShapeError);
    CHECK_THROWS_WITH(tg::adaptive_max_pool2d_with_indices(tg::zeros(s), 2),
                      Contains("adaptive_max_pool2d") && Contains(fmt::format("{}", s)));
  }
}

TEST_CASE("adaptive pools reject an output size of 0 or less, naming the argument and the shapes",
          "[pool][adaptive][errors]") {
  const tg::Tensor x = tg::zeros({2, 3, 5, 4});
  for (const tg::Size2 size : {tg::Size2{0, 2}, tg::Size2{2, -1}}) {
    CHECK_THROWS_AS(tg::adaptive_avg_pool2d(x, size), tg::ValueError);
    CHECK_THROWS_WITH(tg::adaptive_avg_pool2d(x, size),
                      Contains("adaptive_avg_pool2d") && Contains("output_size") &&
                          Contains(fmt::format("[{}, {}]", size[0], size[1])) && Contains("[2, 3, 5, 4]"));
    CHECK_THROWS_AS(tg::adaptive_max_pool2d(x, size), tg::ValueError);
    CHECK_THROWS_WITH(tg::adaptive_max_pool2d(x, size), Contains("adaptive_max_pool2d") && Contains("output_size"));
  }
}

TEST_CASE("adaptive pools reject empty non-batch dims and integer input, and accept an empty batch",
          "[pool][adaptive][errors]") {
  CHECK_THROWS_WITH(tg::adaptive_avg_pool2d(tg::zeros({1, 3, 0, 4}), 2),
                    Contains("adaptive_avg_pool2d") && Contains("[1, 3, 0, 4]"));
  CHECK_THROWS_AS(tg::adaptive_max_pool2d(tg::zeros({0, 4, 4}), 2), tg::ShapeError);
  CHECK_THROWS_AS(tg::adaptive_avg_pool2d(tg::zeros({1, 1, 4, 4}, tg::DType::i64), 2), tg::DTypeError);
  CHECK_THROWS_AS(tg::adaptive_max_pool2d(tg::zeros({1, 1, 4, 4}, tg::DType::i64), 2), tg::DTypeError);
  CHECK(tg::adaptive_max_pool2d(tg::zeros({0, 2, 4, 4}), {3, 1}).shape() == tg::Shape{0, 2, 3, 1});
}

TEST_CASE("adaptive pools pass the gradient checker to second order", "[pool][adaptive][gradcheck]") {
  for (const char* name : {"adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d"}) {
    const tg::OpCheckReport r = tg::check_op(tg::find_op(name));
    INFO(r.to_string(true));
    CHECK(r.passed());
    CHECK(r.cases.size() >= 5);
  }
}
