// AnomalyGuard: backward stops at the first NaN or Inf a VJP produces and names the op
// whose VJP produced it and the op that made the input it belongs to.
#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {
/// sum(sqrt(relu(x))) with x = [-1, 0, 4]: sqrt's VJP divides by sqrt(0) = 0.
tg::Tensor loss_with_inf_gradient(const tg::Tensor& x) { return tg::sum(tg::sqrt(tg::relu(x))); }
}  // namespace

TEST_CASE("AnomalyGuard names the op whose VJP produced an Inf and the op behind its input",
          "[autograd][anomaly]") {
  tg::Tensor x = tg::from_vector(std::vector<double>{-1, 0, 4}, {3}, tg::DType::f64).set_requires_grad(true);
  SECTION("without the guard the Inf passes unnoticed (relu's VJP masks it to 0)") {
    CHECK_FALSE(tg::is_anomaly_enabled());
    loss_with_inf_gradient(x).backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 0, 0.25});
  }
  SECTION("with the guard backward throws at sqrt") {
    tg::AnomalyGuard guard;
    CHECK(tg::is_anomaly_enabled());
    tg::Tensor loss = loss_with_inf_gradient(x);
    REQUIRE_THROWS_AS(loss.backward(), tg::GraphError);
    tg::Tensor again = loss_with_inf_gradient(x);
    REQUIRE_THROWS_WITH(again.backward(), Contains("VJP of sqrt produced Inf") && Contains("[3] f64") &&
                                              Contains("made by relu"));
    CHECK_FALSE(x.grad().defined());  // nothing reached the leaf
  }
  SECTION("guards nest and restore the previous state") {
    {
      tg::AnomalyGuard outer;
      {
        tg::AnomalyGuard inner;
        CHECK(tg::is_anomaly_enabled());
      }
      CHECK(tg::is_anomaly_enabled());
    }
    CHECK_FALSE(tg::is_anomaly_enabled());
  }
  SECTION("finite gradients pass under the guard unchanged") {
    tg::AnomalyGuard guard;
    tg::Tensor y = tg::from_vector(std::vector<double>{1, 4, 9}, {3}, tg::DType::f64).set_requires_grad(true);
    tg::sum(tg::sqrt(y)).backward();
    CHECK(y.grad().to_vector<double>() == std::vector<double>{0.5, 0.25, 1.0 / 6.0});
  }
}
