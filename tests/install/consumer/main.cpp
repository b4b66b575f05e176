// Uses tapegrad as an outside project does (fmt and C++20 come through tapegrad::tapegrad)
// and checks one gradient against its closed form.
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

int main() {
  // x: [2, 3], w: [3, 2]; loss = sum(tanh(x·w)), so dloss/dw[k, j] = sum_i x[i, k] (1 - tanh²(z[i, j]))
  // with z = x·w.
  const std::vector<double> xv{0.5, -1.0, 2.0, 1.5, 0.25, -0.75};
  const std::vector<double> wv{0.1, -0.2, 0.3, 0.4, -0.5, 0.6};
  const tg::Tensor x = tg::from_vector(xv, {2, 3}, tg::DType::f64);
  tg::Tensor w = tg::from_vector(wv, {3, 2}, tg::DType::f64);
  w.set_requires_grad(true);
  tg::sum(tg::tanh(tg::matmul(x, w))).backward();
  const std::vector<double> got = w.grad().to_vector<double>();

  bool ok = got.size() == 6;
  for (std::size_t k = 0; ok && k < 3; ++k)
    for (std::size_t j = 0; j < 2; ++j) {
      double expected = 0;
      for (std::size_t i = 0; i < 2; ++i) {
        double z = 0;
        for (std::size_t m = 0; m < 3; ++m) z += xv[i * 3 + m] * wv[m * 2 + j];
        expected += xv[i * 3 + k] * (1 - std::tanh(z) * std::tanh(z));
      }
      if (std::abs(got[k * 2 + j] - expected) > 1e-12 * (1 + std::abs(expected))) {
        fmt::print("dloss/dw[{}, {}] = {}, expected {}\n", k, j, got[k * 2 + j], expected);
        ok = false;
      }
    }

  // Errors thrown inside the library are caught here by their public type.
  try {
    tg::matmul(x, x);
    fmt::print("matmul([2, 3], [2, 3]) did not throw\n");
    ok = false;
  } catch (const tg::ShapeError& e) {
    fmt::print("expected error: {}\n", e.what());
  }

  fmt::print("dloss/dw = {}\n{}\n", w.grad(), ok ? "consumer: OK" : "consumer: FAILED");
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
