#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>
namespace tg = tapegrad;
TEST_CASE("smoke: mul and add backward") {
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3}, {3}, tg::DType::f64);
  x.set_requires_grad(true);
  tg::Tensor y = tg::sum(x * x + x * 3.0);
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
}
