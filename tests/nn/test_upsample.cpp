// Upsample, UpsamplingNearest2d and UpsamplingBilinear2d: no parameters or buffers (as
// libtorch's), the forward of each equal to interpolate with its options, the constructor's
// check of size and scale_factor, and use in a Sequential that trains through it.
#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using M = tg::InterpolateMode;
using Catch::Matchers::Contains;

namespace {

std::vector<double> values(const tg::Tensor& t) { return t.to_vector<double>(); }

}  // namespace

TEST_CASE("Upsample forwards interpolate with its options", "[nn][upsample]") {
  const tg::Tensor x = tg::randn({2, 3, 4, 5}, tg::DType::f64);
  const tg::InterpolateOptions o{.scale_factor = {1.7, 0.6}, .mode = M::bilinear, .align_corners = false};
  const auto up = nn::upsample(o);
  CHECK(up->named_parameters().empty());
  CHECK(up->named_buffers().empty());
  CHECK(up->options().scale_factor == std::vector<double>{1.7, 0.6});
  const tg::Tensor y = (*up)(x);
  CHECK(y.shape() == tg::Shape{2, 3, 6, 3});
  CHECK(values(y) == values(tg::interpolate(x, o)));
  nn::Upsample nearest({.size = {9}});
  CHECK(values(nearest(x)) == values(tg::interpolate(x, {.size = {9, 9}})));
}

TEST_CASE("UpsamplingNearest2d and UpsamplingBilinear2d fix the mode (and align_corners)", "[nn][upsample]") {
  const tg::Tensor x = tg::randn({1, 2, 3, 4}, tg::DType::f64);
  nn::UpsamplingNearest2d nearest({5, 7});
  nn::UpsamplingBilinear2d bilinear({}, {2.5});
  CHECK(values(nearest(x)) == values(tg::interpolate(x, {.size = {5, 7}})));
  const tg::Tensor y = bilinear(x);
  CHECK(y.shape() == tg::Shape{1, 2, 7, 10});
  CHECK(values(y) == values(tg::interpolate(x, {.scale_factor = {2.5}, .mode = M::bilinear, .align_corners = true})));
  CHECK(bilinear.options().align_corners == std::optional<bool>(true));
}

TEST_CASE("Upsample needs exactly one of size and scale_factor", "[nn][upsample][errors]") {
  CHECK_THROWS_AS(nn::Upsample({}), tg::ValueError);
  CHECK_THROWS_WITH(nn::Upsample({.size = {4}, .scale_factor = {2.0}}), Contains("Upsample") && Contains("both"));
  CHECK_THROWS_WITH(nn::UpsamplingNearest2d({}), Contains("Upsample") && Contains("neither"));
  // The rest is checked against the input, by interpolate.
  nn::Upsample up({.size = {4}, .align_corners = true});
  CHECK_THROWS_AS(up(tg::zeros({1, 1, 2, 2})), tg::ValueError);
}

TEST_CASE("Upsample in a decoder: gradients reach the layers before it", "[nn][upsample]") {
  tg::manual_seed(15);
  const auto net = nn::sequential({nn::conv2d(2, 3, 3, {.padding = 1}), nn::upsample({.scale_factor = {2.0},
                                   .mode = M::bilinear}), nn::conv2d(3, 1, 1)});
  net->to(tg::DType::f64);
  const tg::Tensor x = tg::randn({2, 2, 4, 3}, tg::DType::f64);
  const tg::Tensor y = (*net)(x);
  CHECK(y.shape() == tg::Shape{2, 1, 8, 6});
  tg::sum(y * y).backward();
  for (const tg::Tensor& p : net->parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(tg::sum(tg::abs(p.grad())).item<double>() > 0);
  }
}
