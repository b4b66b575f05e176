// Initialisers: bounds and statistics against PyTorch's formulas, seeding.
#include <cmath>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

struct Stats {
  double min, max, mean, std;
};

Stats stats(const tg::Tensor& t) {
  const auto v = t.to_vector<double>();
  Stats s{v[0], v[0], 0, 0};
  for (double x : v) {
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
    s.mean += x;
  }
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size() - 1));
  return s;
}

}  // namespace

TEST_CASE("init: fans and gains follow PyTorch", "[nn][init]") {
  CHECK(nn::fan_in_and_fan_out(tg::empty({6, 3, 5, 4})) == std::pair<std::int64_t, std::int64_t>{60, 120});
  CHECK(nn::fan_in_and_fan_out(tg::empty({7, 11})) == std::pair<std::int64_t, std::int64_t>{11, 7});
  CHECK_THROWS_AS(nn::fan_in_and_fan_out(tg::empty({7})), tg::ValueError);
  CHECK(nn::calculate_gain(nn::Nonlinearity::relu) == Approx(std::sqrt(2.0)));
  CHECK(nn::calculate_gain(nn::Nonlinearity::tanh) == Approx(5.0 / 3.0));
  CHECK(nn::calculate_gain(nn::Nonlinearity::leaky_relu, std::sqrt(5.0)) == Approx(std::sqrt(1.0 / 3.0)));
  CHECK(nn::calculate_gain(nn::Nonlinearity::sigmoid) == 1.0);
}

TEST_CASE("init: Linear and Conv2d defaults are U(±1/sqrt(fan_in)) and fill the range",
          "[nn][init]") {
  tg::manual_seed(42);
  nn::Linear fc(50, 400);
  const double b = 1.0 / std::sqrt(50.0);
  Stats w = stats(fc.weight());
  CHECK(w.min >= -b);
  CHECK(w.max < b);
  CHECK(w.min < -0.98 * b);  // fills the range: not a narrower distribution
  CHECK(w.max > 0.98 * b);
  CHECK(w.std == Approx(b / std::sqrt(3.0)).epsilon(0.03));
  Stats bias = stats(fc.bias());
  CHECK(bias.min >= -b);
  CHECK(bias.max < b);
  CHECK(bias.max - bias.min > 1.5 * b);

  nn::Conv2d conv(6, 200, {3, 5}, {.groups = 2});  // fan_in = 3·3·5 = 45
  const double cb = 1.0 / std::sqrt(45.0);
  Stats cw = stats(conv.weight());
  CHECK(cw.min >= -cb);
  CHECK(cw.max < cb);
  CHECK(cw.max > 0.98 * cb);
  CHECK(cw.std == Approx(cb / std::sqrt(3.0)).epsilon(0.03));
  Stats cbias = stats(conv.bias());
  CHECK(cbias.max < cb);
  CHECK(cbias.max > 0.8 * cb);
  CHECK(conv.weight().dtype() == tg::DType::f32);
}

TEST_CASE("init: kaiming and xavier statistics, constant, seeding", "[nn][init]") {
  tg::manual_seed(7);
  tg::Tensor w = tg::empty({300, 40, 3, 3});  // fan_in 360, fan_out 2700
  nn::kaiming_normal_(w, 0.0, nn::FanMode::fan_in, nn::Nonlinearity::relu);
  Stats s = stats(w);
  CHECK(std::abs(s.mean) < 0.003);
  CHECK(s.std == Approx(std::sqrt(2.0 / 360.0)).epsilon(0.01));

  nn::kaiming_normal_(w, 0.0, nn::FanMode::fan_out, nn::Nonlinearity::relu);
  CHECK(stats(w).std == Approx(std::sqrt(2.0 / 2700.0)).epsilon(0.01));

  nn::kaiming_uniform_(w, 0.0, nn::FanMode::fan_in, nn::Nonlinearity::relu);
  s = stats(w);
  const double kb = std::sqrt(2.0) * std::sqrt(3.0 / 360.0);
  CHECK(s.max < kb);
  CHECK(s.max > 0.99 * kb);
  CHECK(s.min >= -kb);

  nn::xavier_uniform_(w, 2.0);
  s = stats(w);
  const double xb = 2.0 * std::sqrt(6.0 / (360.0 + 2700.0));
  CHECK(s.max < xb);
  CHECK(s.max > 0.99 * xb);
  CHECK(s.std == Approx(xb / std::sqrt(3.0)).epsilon(0.01));

  nn::xavier_normal_(w);
  CHECK(stats(w).std == Approx(std::sqrt(2.0 / 3060.0)).epsilon(0.01));

  nn::constant_(w, 0.25);
  s = stats(w);
  CHECK(s.min == 0.25);
  CHECK(s.max == 0.25);
  nn::zeros_(w);
  CHECK(stats(w).max == 0.0);

  // Same seed, same values; the parameter keeps its storage and requires_grad.
  tg::Tensor p = tg::empty({4, 5}).set_requires_grad(true);
  const tg::Tensor before = p;
  tg::manual_seed(99);
  nn::xavier_uniform_(p);
  const auto first = p.to_vector<double>();
  tg::manual_seed(99);
  nn::xavier_uniform_(p);
  CHECK(p.to_vector<double>() == first);
  CHECK(p.shares_storage(before));
  CHECK(p.requires_grad());
  tg::manual_seed(99);
  const auto linear_a = nn::Linear(5, 4).weight().to_vector<double>();
  const auto linear_b = nn::Linear(5, 4).weight().to_vector<double>();
  CHECK(linear_a != linear_b);
  tg::manual_seed(99);
  CHECK(nn::Linear(5, 4).weight().to_vector<double>() == linear_a);
  CHECK_THROWS_AS(nn::normal_(p, 0.0, -1.0), tg::ValueError);
}
