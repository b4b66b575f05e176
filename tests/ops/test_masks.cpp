// The bool dtype and the ops around it: comparisons and logical ops (bool results), where and
// masked_fill (gradients in f32, errors), argsort and one_hot (errors, edge cases), and bool
// tensors through conversion, printing, sum and checkpoints. Values against PyTorch are in
// test_masks_reference.cpp.
#include <cmath>
#include <filesystem>
#include <limits>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using Catch::Contains;
using tg::DType;
using tg::Tensor;

namespace {

Tensor bools(const std::vector<std::int64_t>& values, const tg::Shape& shape) {
  return tg::from_vector(values, shape, DType::i64).to(DType::boolean);
}

}  // namespace

TEST_CASE("bool tensors: one byte each, converted, printed, summed, saved", "[masks][bool]") {
  const Tensor m = bools({1, 0, 1, 1, 0, 0}, {2, 3});
  CHECK(m.dtype() == DType::boolean);
  CHECK(tg::dtype_size(DType::boolean) == 1);
  CHECK(std::string(tg::dtype_name(DType::boolean)) == "bool");  // (Catch prints no string_view under clang)
  CHECK_FALSE(tg::is_floating(DType::boolean));
  CHECK(tg::to_string(m).find("true") != std::string::npos);
  CHECK(tg::from_vector(std::vector<double>{0.0, -0.5, std::nan("")}, {3}, DType::f64).to(DType::boolean)
            .to_vector<int>() == std::vector<int>{0, 1, 1});
  CHECK(m.to(DType::f32).to_vector<float>() == std::vector<float>{1, 0, 1, 1, 0, 0});
  const Tensor count = tg::sum(m);
  CHECK(count.dtype() == DType::i64);  // PyTorch's sum of a mask counts its true elements
  CHECK(count.item<std::int64_t>() == 3);
  CHECK(tg::sum(m, {1}).to_vector<std::int64_t>() == std::vector<std::int64_t>{2, 1});
  CHECK_THROWS_AS(tg::zeros({2}, DType::boolean).set_requires_grad(), tg::Error);
  CHECK_THROWS_AS(tg::mean(m), tg::DTypeError);

  const auto path = std::filesystem::temp_directory_path() / "tapegrad_bool_checkpoint.tgc";
  tg::nn::save_checkpoint(path.string(), {{"mask", m}});
  const tg::NamedTensors back = tg::nn::load_checkpoint(path.string());
  std::filesystem::remove(path);
  REQUIRE(back.size() == 1);
  CHECK(back[0].second.dtype() == DType::boolean);
  CHECK(back[0].second.to_vector<int>() == m.to_vector<int>());
}

TEST_CASE("comparisons broadcast and compare in the operands' type", "[masks]") {
  const Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(tg::gt(a, f64({2, 5, 0}, {3})).to_vector<int>() == std::vector<int>{0, 0, 1, 1, 0, 1});
  CHECK(tg::eq(a, 2.0).to_vector<int>() == std::vector<int>{0, 1, 0, 0, 0, 0});
  // f32 against a number: the number is rounded to f32 first, as PyTorch does.
  CHECK(tg::eq(tg::full({1}, 0.1, DType::f32), 0.1).item<int>() == 1);
  // i64 compared exactly, beyond double's 53 bits.
  const std::int64_t big = (std::int64_t{1} << 53) + 1;
  CHECK(tg::eq(i64({big}, {1}), i64({big - 1}, {1})).item<int>() == 0);
  CHECK(tg::lt(i64({2}, {1}), 2.5).item<int>() == 1);
  CHECK(tg::logical_not(bools({1, 0}, {2})).to_vector<int>() == std::vector<int>{0, 1});
  CHECK(tg::eq(tg::zeros({0, 3}, DType::f64), 0.0).shape() == tg::Shape{0, 3});
  SECTION("errors name the op and both shapes") {
    CHECK_THROWS_AS(tg::lt(a, f64({1, 2}, {2})), tg::ShapeError);
    CHECK_THROWS_WITH(tg::lt(a, f64({1, 2}, {2})), Contains("lt") && Contains("[2, 3]") && Contains("[2]"));
    CHECK_THROWS_AS(tg::eq(a, a.to(DType::f32)), tg::DTypeError);
    CHECK_THROWS_WITH(tg::logical_and(a, Tensor()), Contains("logical_and") && Contains("undefined"));
  }
}

TEST_CASE("where and masked_fill: gradients in f64 and f32, no gradient for the condition", "[masks][where]") {
  const Tensor cond = bools({1, 0, 0, 1, 1, 0}, {2, 3});
  const Tensor a = leaf({2, 3}, 11);
  const Tensor b = leaf({3}, 12);
  const TensorFn fn = [&](const std::vector<Tensor>& in) { return tg::where(cond, in[0], in[1]); };
  check_vjp(fn, {a, b}, 13);
  check_f32_matches_f64(fn, {a, b});
  check_f32_grads_match_f64(fn, {a, b}, 14);
  const Tensor value = leaf({}, 15);
  const TensorFn fill = [&](const std::vector<Tensor>& in) { return tg::masked_fill(in[0], cond, in[1]); };
  check_vjp(fill, {a, value}, 16);
  // Through a mask computed from the input itself: relu written as where(x > 0, x, 0).
  const Tensor x = leaf({4, 5}, 17);
  const auto g = tg::grad({tg::sum(tg::where(tg::gt(x, 0.0), x, 0.0))}, {x});
  CHECK_THAT(g[0], AllClose(tg::gt(x.detach(), 0.0).to(DType::f64)));
}

TEST_CASE("where and masked_fill: errors", "[masks][where][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  const Tensor m = bools({1, 0, 1}, {3});
  CHECK_THROWS_AS(tg::where(x, x, x), tg::DTypeError);
  CHECK_THROWS_WITH(tg::where(x, x, x), Contains("where") && Contains("condition must be bool"));
  CHECK_THROWS_AS(tg::where(m, x, x.to(DType::f32)), tg::DTypeError);
  CHECK_THROWS_AS(tg::where(bools({1, 0}, {2}), x, x), tg::ShapeError);
  CHECK_THROWS_WITH(tg::where(m, x, Tensor()), Contains("where") && Contains("undefined"));
  CHECK_THROWS_WITH(tg::masked_fill(x, x, 1.0), Contains("masked_fill") && Contains("mask must be bool"));
  CHECK_THROWS_WITH(tg::masked_fill(x, bools({1, 0}, {2}), 1.0),
                    Contains("masked_fill") && Contains("[2, 3]") && Contains("[2]"));
  CHECK_THROWS_WITH(tg::masked_fill(x, m, tg::zeros({1}, DType::f64)), Contains("masked_fill") && Contains("0-dim"));
  CHECK_THROWS_AS(tg::masked_fill(x, m, tg::zeros({}, DType::f32)), tg::DTypeError);
}

TEST_CASE("argsort and one_hot: edge cases and errors", "[masks][argsort][one_hot]") {
  CHECK(tg::argsort(f64({3, 1, 2}, {3})).to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 2, 0});
  CHECK(tg::argsort(tg::scalar_tensor(2.0, DType::f64)).item<std::int64_t>() == 0);
  CHECK(tg::argsort(tg::zeros({2, 0}, DType::f64)).shape() == tg::Shape{2, 0});
  CHECK_THROWS_AS(tg::argsort(tg::zeros({2, 3}, DType::f64), 2), tg::ValueError);
  CHECK_THROWS_WITH(tg::argsort(Tensor()), Contains("argsort"));

  CHECK(tg::one_hot(i64({1, 0}, {2}), 3).to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 0, 1, 0, 0});
  CHECK(tg::one_hot(tg::zeros({0}, DType::i64), 4).shape() == tg::Shape{0, 4});
  CHECK_THROWS_WITH(tg::one_hot(i64({0, 3}, {2}), 3), Contains("one_hot") && Contains("[0, 3)"));
  CHECK_THROWS_WITH(tg::one_hot(i64({-1}, {1})), Contains("one_hot") && Contains("-1"));
  CHECK_THROWS_WITH(tg::one_hot(tg::zeros({0}, DType::i64)), Contains("one_hot") && Contains("empty"));
  CHECK_THROWS_AS(tg::one_hot(f64({1}, {1})), tg::DTypeError);
  CHECK_THROWS_AS(tg::one_hot(i64({1}, {1}), -2), tg::ValueError);
}
