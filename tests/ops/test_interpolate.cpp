// interpolate: source pixels and weights worked by hand (the scale a given scale_factor
// implies, align_corners both ways, the clamp at 0 and at the last pixel), gradients summing
// where outputs share a pixel, f32 and f64, the gradient checker to second order, and the
// errors (each names interpolate, the argument and the shapes). The values against PyTorch:
// test_interpolate_reference.cpp.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;
using M = tg::InterpolateMode;

namespace {

tg::Tensor line(const std::vector<double>& v, tg::DType d = tg::DType::f64) {
  return tg::from_vector(v, {1, 1, static_cast<std::int64_t>(v.size())}, d);
}

std::vector<double> values(const tg::Tensor& t) { return t.to_vector<double>(); }

}  // namespace

TEST_CASE("interpolate nearest: a given scale_factor sets the scale 1/s, recompute_scale_factor sets in/out",
          "[ops][interpolate]") {
  const tg::Tensor x = line({0, 1, 2, 3, 4, 5, 6});
  // 7·1.7 = 11.9: 11 outputs. src = floor(dst/1.7) reads 0 0 1 1 2 2 3 4 4 5 5 and never the last
  // pixel; with in/out = 7/11 the outputs spread over all seven.
  CHECK(values(tg::interpolate(x, {.scale_factor = {1.7}})) == std::vector<double>{0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5});
  CHECK(values(tg::interpolate(x, {.scale_factor = {1.7}, .recompute_scale_factor = true})) ==
        std::vector<double>{0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6});
  CHECK(values(tg::interpolate(x, {.size = {11}})) == std::vector<double>{0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6});
  // nearest_exact reads floor((dst + 0.5)·7/3): 1, 3, 5.
  CHECK(values(tg::interpolate(x, {.size = {3}, .mode = M::nearest_exact})) == std::vector<double>{1, 3, 5});
  CHECK(values(tg::interpolate(x, {.size = {3}})) == std::vector<double>{0, 2, 4});
}

TEST_CASE("interpolate nearest: outputs reading one pixel sum their gradients into it", "[ops][interpolate]") {
  const tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {1, 1, 2, 3}, tg::DType::f64)
                           .set_requires_grad(true);
  const tg::Tensor y = tg::interpolate(x, {.size = {3, 2}});  // rows 0 0 1, columns 0 1
  CHECK(values(y) == std::vector<double>{1, 2, 1, 2, 4, 5});
  y.backward(tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {1, 1, 3, 2}, tg::DType::f64));
  CHECK(values(x.grad()) == std::vector<double>{4, 6, 0, 5, 6, 0});
}

TEST_CASE("interpolate linear: half-pixel centres clamped at 0 and at the last pixel, or aligned corners",
          "[ops][interpolate]") {
  const tg::Tensor x = line({0, 10}).set_requires_grad(true);
  // scale 2/4: src = 0.5·(dst + 0.5) - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (pixel 1 twice).
  const tg::Tensor y = tg::interpolate(x, {.size = {4}, .mode = M::linear});
  CHECK(values(y) == std::vector<double>{0, 2.5, 7.5, 10});
  y.backward(line({1, 2, 3, 4}));
  CHECK(values(x.grad()) == std::vector<double>{1 + 2 * 0.75 + 3 * 0.25, 2 * 0.25 + 3 * 0.75 + 4});
  const tg::Tensor aligned = tg::interpolate(line({0, 9}), {.size = {4}, .mode = M::linear, .align_corners = true});
  CHECK(values(aligned) == std::vector<double>{0, 3, 6, 9});
  // align_corners ignores scale_factor: 2·1.5 = 3 outputs at 0, 0.5 and 1.
  CHECK(values(tg::interpolate(line({0, 4}), {.scale_factor = {1.5}, .mode = M::linear, .align_corners = true})) ==
        std::vector<double>{0, 2, 4});
}

TEST_CASE("interpolate bilinear: H and W weighed separately, f32 as f64, and twice differentiable",
          "[ops][interpolate]") {
  for (const tg::DType dtype : {tg::DType::f64, tg::DType::f32}) {
    const tg::Tensor x = tg::from_vector(std::vector<double>{0, 4, 8, 12}, {1, 1, 2, 2}, dtype).set_requires_grad(true);
    const tg::Tensor y = tg::interpolate(x, {.size = {3, 3}, .mode = M::bilinear, .align_corners = true});
    CHECK(y.dtype() == dtype);
    CHECK(values(y) == std::vector<double>{0, 2, 4, 4, 6, 8, 8, 10, 12});
    const tg::Tensor v = tg::full({1, 1, 3, 3}, 1.0, dtype).set_requires_grad(true);
    const auto g = tg::grad({y}, {x}, {v}, {.create_graph = true});
    // Each corner: itself, two edge midpoints at 1/2 and the centre at 1/4.
    CHECK(values(g[0]) == std::vector<double>{2.25, 2.25, 2.25, 2.25});
    REQUIRE(g[0].requires_grad());
    const auto h = tg::grad({tg::sum(g[0] * x)}, {v});
    CHECK(values(h[0]) == values(y));  // d<Aᵀv, x>/dv = A·x
  }
}

TEST_CASE("interpolate: an empty batch gives an empty output", "[ops][interpolate]") {
  CHECK(tg::interpolate(tg::zeros({0, 2, 3, 3}), {.scale_factor = {2.0}, .mode = M::bilinear}).shape() ==
        tg::Shape{0, 2, 6, 6});
}

TEST_CASE("interpolate rejects the input's rank and a mode it does not take, naming the shapes",
          "[ops][interpolate][errors]") {
  for (const tg::Shape& s : {tg::Shape{4, 4}, tg::Shape{1, 1, 2, 3, 3}}) {
    CHECK_THROWS_AS(tg::interpolate(tg::zeros(s), {.size = {2}}), tg::ShapeError);
    CHECK_THROWS_WITH(tg::interpolate(tg::zeros(s), {.size = {2}}),
                      Contains("interpolate") && Contains(fmt::format("{}", s)) && Contains("[N, C, H, W]"));
  }
  CHECK_THROWS_AS(tg::interpolate(tg::zeros({1, 2, 5}), {.size = {4}, .mode = M::bilinear}), tg::ShapeError);
  CHECK_THROWS_WITH(tg::interpolate(tg::zeros({1, 2, 5}), {.size = {4}, .mode = M::bilinear}),
                    Contains("mode bilinear") && Contains("[1, 2, 5]"));
  CHECK_THROWS_WITH(tg::interpolate(tg::zeros({1, 2, 5, 5}), {.size = {4}, .mode = M::linear}),
                    Contains("mode linear") && Contains("[1, 2, 5, 5]"));
  CHECK_THROWS_AS(tg::interpolate(tg::zeros({1, 2, 5, 5}, tg::DType::i64), {.size = {4}}), tg::DTypeError);
  CHECK_THROWS_WITH(tg::interpolate(tg::zeros({1, 0, 3, 3}), {.size = {4}}),
                    Contains("interpolate") && Contains("[1, 0, 3, 3]") && Contains("empty"));
}

TEST_CASE("interpolate rejects both or neither of size and scale_factor, and sizes of the wrong length",
          "[ops][interpolate][errors]") {
  const tg::Tensor x = tg::zeros({1, 1, 3, 3});
  CHECK_THROWS_AS(tg::interpolate(x, {}), tg::ValueError);
  CHECK_THROWS_WITH(tg::interpolate(x, {}), Contains("interpolate") && Contains("neither") && Contains("[1, 1, 3, 3]"));
  CHECK_THROWS_AS(tg::interpolate(x, {.size = {4}, .scale_factor = {2.0}}), tg::ValueError);
  CHECK_THROWS_WITH(tg::interpolate(x, {.size = {4}, .scale_factor = {2.0}}),
                    Contains("size=[4] and scale_factor=[2]"));
  CHECK_THROWS_AS(tg::interpolate(x, {.size = {2, 3, 4}}), tg::ShapeError);
  CHECK_THROWS_WITH(tg::interpolate(x, {.size = {2, 3, 4}}),
                    Contains("size=[2, 3, 4] has 3 values") && Contains("2 spatial dims"));
  CHECK_THROWS_WITH(tg::interpolate(tg::zeros({1, 2, 5}), {.scale_factor = {2.0, 2.0}}),
                    Contains("scale_factor=[2, 2] has 2 values") && Contains("1 spatial dim,"));
}

TEST_CASE("interpolate rejects align_corners with nearest and recompute_scale_factor with size",
          "[ops][interpolate][errors]") {
  const tg::Tensor x = tg::zeros({1, 1, 3, 3});
  for (const bool ac : {true, false}) {
    CHECK_THROWS_AS(tg::interpolate(x, {.size = {4}, .align_corners = ac}), tg::ValueError);
    CHECK_THROWS_WITH(tg::interpolate(x, {.size = {4}, .mode = M::nearest_exact, .align_corners = ac}),
                      Contains("interpolate: align_corners") && Contains("nearest_exact"));
  }
  CHECK_THROWS_AS(tg::interpolate(x, {.size = {4}, .mode = M::bilinear, .recompute_scale_factor = true}),
                  tg::ValueError);
  CHECK_THROWS_WITH(tg::interpolate(x, {.size = {4}, .mode = M::bilinear, .recompute_scale_factor = true}),
                    Contains("recompute_scale_factor") && Contains("size=[4]"));
  // recompute_scale_factor = false with a size is what PyTorch accepts too.
  CHECK(tg::interpolate(x, {.size = {4}, .recompute_scale_factor = false}).shape() == tg::Shape{1, 1, 4, 4});
}

TEST_CASE("interpolate rejects sizes and factors that are not positive or give an output of 0, with the arithmetic",
          "[ops][interpolate][errors]") {
  const tg::Tensor x = tg::zeros({1, 1, 3, 3});
  CHECK_THROWS_AS(tg::interpolate(x, {.size = {0, 2}}), tg::ValueError);
  CHECK_THROWS_WITH(tg::interpolate(x, {.size = {2, -1}, .mode = M::bilinear}),
                    Contains("size=[2, -1]") && Contains("width -1") && Contains("[1, 1, 3, 3]"));
  for (const double s : {0.0, -2.0, std::nan(""), HUGE_VAL}) {
    CHECK_THROWS_AS(tg::interpolate(x, {.scale_factor = {s}}), tg::ValueError);
  }
  CHECK_THROWS_AS(tg::interpolate(x, {.scale_factor = {0.3, 1.0}}), tg::ValueError);
  CHECK_THROWS_WITH(tg::interpolate(x, {.scale_factor = {0.3, 1.0}}),
                    Contains("output height would be 0: floor(H=3 * scale_factor=0.3)") && Contains("[1, 1, 3, 3]"));
  CHECK_THROWS_WITH(tg::interpolate(x, {.scale_factor = {1e300}}), Contains("output height would be"));
}

TEST_CASE("interpolate's ops pass the gradient checker to second order", "[ops][interpolate][gradcheck]") {
  for (const char* name :
       {"upsample_nearest", "upsample_nearest_backward", "upsample_linear", "upsample_linear_backward"}) {
    const tg::OpCheckReport r = tg::check_op(tg::find_op(name));
    INFO(r.to_string(true));
    CHECK(r.passed());
    CHECK(r.cases.size() >= 5);
  }
}
