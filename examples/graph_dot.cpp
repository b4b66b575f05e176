// Seeing the graph: writes a small convolutional network's recorded graph as GraphViz DOT
// and renders it to SVG when the `dot` program (Debian package graphviz) is installed.
// Then asks why some tensors get no gradient.
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

int main() {
  tg::manual_seed(0);
  const tg::Tensor x = tg::randn({2, 1, 8, 8});
  const tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{1, 0}, {2});
  tg::Tensor w1 = (tg::randn({4, 1, 3, 3}) * 0.3).detach().set_requires_grad(true);
  tg::Tensor b1 = tg::zeros({4}).set_requires_grad(true);
  tg::Tensor w2 = (tg::randn({3, 36}) * 0.3).detach().set_requires_grad(true);
  tg::Tensor frozen = tg::randn({3}).set_requires_grad(true);

  tg::Tensor h = tg::max_pool2d(tg::relu(tg::conv2d(x, w1, b1)), {.kernel_size = 2});
  tg::Tensor loss = tg::cross_entropy(tg::linear(tg::flatten(h, 1), w2, frozen.detach()), target);

  const std::string path = "graph_dot.dot";
  tg::write_dot(loss, path);
  fmt::print("wrote {} ({} bytes of DOT)\n", path, tg::to_dot(loss).size());
  if (std::system("command -v dot >/dev/null 2>&1") == 0) {
    const int rc = std::system("dot -Tsvg graph_dot.dot -o graph_dot.svg");
    fmt::print("{}\n", rc == 0 ? "rendered graph_dot.svg" : "dot failed to render the graph");
    if (rc != 0) return 1;
  } else {
    fmt::print("the `dot` program is not installed (Debian: apt-get install graphviz); "
               "not rendering graph_dot.svg\n");
  }

  fmt::print("why does `frozen` get no gradient? {}\n", tg::explain_no_grad(loss, frozen));
  fmt::print("and `x`? {}\n", tg::explain_no_grad(loss, x));
  fmt::print("and `w1`? {}\n", tg::explain_no_grad(loss, w1));
  return tg::explain_no_grad(loss, frozen).find("detach") != std::string::npos ? 0 : 1;
}
