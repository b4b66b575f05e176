// dropout: identity in eval and for p = 0, zeros for p = 1, survivors scaled by 1/(1-p),
// reproducible from manual_seed, gradient equal to the mask.
#include <cmath>
#include <limits>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

/// Values in [0.5, 1.5) with random signs: never 0, so a zero output means "dropped".
Tensor input(const tg::Shape& shape, std::uint64_t seed) {
  return random_signed(shape, seed, 0.5, 1.5);
}

}  // namespace

TEST_CASE("dropout: eval mode and p = 0 are the identity", "[ops][dropout]") {
  const Tensor x = input({20, 30}, 1);
  for (double p : {0.0, 0.3, 0.5, 1.0}) {
    INFO("p = " << p);
    CHECK_THAT(tg::dropout(x, p, false), AllClose(x.detach(), 0, 0));
  }
  CHECK_THAT(tg::dropout(x, 0.0, true), AllClose(x.detach(), 0, 0));
  CHECK_THAT(tg::dropout(x, 0.0), AllClose(x.detach(), 0, 0));
  SECTION("and the gradient passes through unchanged") {
    const Tensor c = random_cotangent(x.shape(), DType::f64, 2);
    CHECK_THAT(tg::grad({tg::dropout(x, 0.5, false)}, {x}, {c})[0], AllClose(c, 0, 0));
    CHECK_THAT(tg::grad({tg::dropout(x, 0.0, true)}, {x}, {c})[0], AllClose(c, 0, 0));
  }
}

TEST_CASE("dropout: p = 1 zeroes everything, gradient included", "[ops][dropout]") {
  const Tensor x = input({7, 9}, 3);
  const Tensor y = tg::dropout(x, 1.0, true);
  CHECK_THAT(y, AllClose(tg::zeros({7, 9}, DType::f64), 0, 0));
  const Tensor c = random_cotangent(x.shape(), DType::f64, 4);
  CHECK_THAT(tg::grad({y}, {x}, {c})[0], AllClose(tg::zeros({7, 9}, DType::f64), 0, 0));
}

TEST_CASE("dropout: survivors are scaled by 1/(1-p), about p of them dropped", "[ops][dropout]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    for (double p : {0.1, 0.25, 0.5, 0.8}) {
      INFO(tg::dtype_name(dtype) << ", p = " << p);
      tg::manual_seed(11);
      const Tensor x = input({60, 50}, 5).to(dtype);
      const auto xv = x.to_vector<double>();
      const auto yv = tg::dropout(x, p, true).to_vector<double>();
      std::size_t dropped = 0;
      std::size_t wrong = 0;
      const double tol = dtype == DType::f32 ? 1e-6 : 1e-15;
      for (std::size_t i = 0; i < xv.size(); ++i) {
        if (yv[i] == 0.0) {
          ++dropped;
        } else if (std::abs(yv[i] - xv[i] / (1 - p)) > tol * std::abs(yv[i])) {
          ++wrong;
        }
      }
      CHECK(wrong == 0);
      // 3000 draws: the standard deviation of the dropped fraction is below 0.01.
      const double fraction = static_cast<double>(dropped) / static_cast<double>(xv.size());
      CHECK(fraction == Approx(p).margin(0.04));
    }
  }
}

TEST_CASE("dropout: the same seed gives the same mask", "[ops][dropout]") {
  const Tensor x = input({10, 12}, 6);
  tg::manual_seed(42);
  const Tensor a = tg::dropout(x, 0.5);
  tg::manual_seed(42);
  const Tensor b = tg::dropout(x, 0.5);
  CHECK_THAT(a, AllClose(b, 0, 0));
  // The next call continues the stream: another mask.
  const Tensor c = tg::dropout(x, 0.5);
  CHECK_FALSE(compare(a, c, 0, 0).ok);
  tg::manual_seed(43);
  CHECK_FALSE(compare(a, tg::dropout(x, 0.5), 0, 0).ok);
  SECTION("f32 draws the same mask as f64") {
    tg::manual_seed(42);
    const Tensor a32 = tg::dropout(x.to(DType::f32), 0.5);
    CHECK(a32.dtype() == DType::f32);
    CHECK_THAT(a32.to(DType::f64).detach(), AllClose(a.detach(), 1e-7, 1e-7));
  }
}

TEST_CASE("dropout: the gradient is the mask", "[ops][dropout][vjp]") {
  for (double p : {0.2, 0.5, 0.9}) {
    INFO("p = " << p);
    const Tensor x = input({8, 11}, 7);
    tg::manual_seed(5);
    const Tensor y = tg::dropout(x, p, true);
    const Tensor c = random_cotangent(x.shape(), DType::f64, 8);
    const Tensor g = tg::grad({y}, {x}, {c})[0];
    // mask = y / x: 0 where dropped, 1/(1-p) elsewhere.
    const auto yv = y.to_vector<double>();
    const auto cv = c.to_vector<double>();
    std::vector<double> expected;
    for (std::size_t i = 0; i < yv.size(); ++i)
      expected.push_back(yv[i] == 0.0 ? 0.0 : cv[i] / (1 - p));
    CHECK_THAT(g, AllClose(expected, {8, 11}, DType::f64, 0, 1e-15));
  }
  SECTION("against finite differences, reseeding so every evaluation draws the same mask") {
    const TensorFn fn = [](const std::vector<Tensor>& in) {
      tg::manual_seed(9);
      return tg::dropout(in[0], 0.35, true);
    };
    check_vjp(fn, {leaf({4, 6}, 10)}, 11);
    check_vjp(fn, {leaf({3, 2, 5}, 12)}, 13);
    check_f32_grads_match_f64(fn, {leaf({4, 6}, 14)}, 15);
  }
}

TEST_CASE("dropout: errors", "[ops][dropout][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  for (double p : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN(),
                   -std::numeric_limits<double>::infinity()}) {
    INFO("p = " << p);
    REQUIRE_THROWS_AS(tg::dropout(x, p), tg::ValueError);
    REQUIRE_THROWS_WITH(tg::dropout(x, p), Catch::Contains("dropout") && Catch::Contains("[0, 1]"));
    REQUIRE_THROWS_AS(tg::dropout(x, p, false), tg::ValueError);
  }
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {2});
  REQUIRE_THROWS_AS(tg::dropout(n, 0.5), tg::DTypeError);
}
