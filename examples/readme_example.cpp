#include <cstdint>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

int main() {
  // y = sum(a * a * a), so dy/da = 3 a^2.
  tg::Tensor a = tg::from_vector(std::vector<double>{1, 2, 3}, {3}, tg::DType::f64);
  a.set_requires_grad(true);
  tg::sum(a * a * a).backward();
  fmt::print("dy/da = {}\n", a.grad());  // [3, 12, 27]

  // A linear classifier: 4 samples with 3 features, 2 classes.
  tg::manual_seed(0);
  tg::Tensor x = tg::randn({4, 3}, tg::DType::f64);
  tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{0, 1, 1, 0}, {4});
  tg::Tensor w = tg::randn({2, 3}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor b = tg::zeros({2}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor loss = tg::cross_entropy(tg::linear(x, w, b), target);
  loss.backward();
  fmt::print("loss = {:.4f}\ndloss/dw = {}\n", loss.item<double>(), w.grad());

  // One SGD step: update the parameters without recording, then clear their gradients.
  {
    tg::NoGradGuard no_grad;
    w.add_(w.grad(), -0.1);
    b.add_(b.grad(), -0.1);
  }
  w.zero_grad();
  b.zero_grad();
  return a.grad().to_vector<double>() == std::vector<double>{3, 12, 27} ? 0 : 1;
}
