// gradgradcheck: each first-order gradient, computed with create_graph, gradchecked as a
// function of the inputs and of grad_output. The finite differences evaluate it without
// create_graph (nothing there requires grad), so they run the plain first-order VJPs while
// the analytic side backpropagates through the recorded ones.
#include <algorithm>

#include <fmt/format.h>

#include "autograd/gradcheck_detail.hpp"
#include "tapegrad/autograd.hpp"
#include "tapegrad/gradcheck.hpp"
#include "tapegrad/ops.hpp"

namespace tapegrad {

GradgradcheckReport gradgradcheck(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                                  const Tensor& grad_output, const GradcheckOptions& options) {
  GradgradcheckReport report;
  const std::size_t n = inputs.size();
  std::vector<std::size_t> checked;
  for (std::size_t i = 0; i < n; ++i) {
    if (inputs[i].defined() && inputs[i].requires_grad()) checked.push_back(i);
  }
  if (checked.empty()) {
    report.error = "gradgradcheck: no input requires grad, so there is nothing to check";
    return report;
  }
  Tensor upstream;
  try {
    std::vector<Tensor> copies;
    for (const Tensor& t : inputs) copies.push_back(detail::f64_copy(t));
    Tensor out;
    {
      NoGradGuard no_grad;
      out = fn(copies);
    }
    if (!out.defined() || !is_floating(out.dtype())) {
      report.error = "gradgradcheck: fn must return a defined floating tensor";
      return report;
    }
    if (grad_output.defined() && grad_output.shape() != out.shape()) {
      report.error = fmt::format("gradgradcheck: grad_output is {} but fn's output is {}",
                                 grad_output.shape(), out.shape());
      return report;
    }
    upstream = grad_output.defined()
                   ? detail::f64_copy(grad_output)
                   : from_vector(detail::random_cotangent(out.numel(), options.seed * 31 + 7),
                                 out.shape(), DType::f64);
  } catch (const std::exception& e) {
    report.error = fmt::format("gradgradcheck: fn threw: {}", e.what());
    return report;
  }
  std::vector<Tensor> all = inputs;
  all.push_back(Tensor(upstream).set_requires_grad(true));
  for (std::size_t i : checked) {
    // G_i(inputs..., grad_output): inputs that come without grad (the finite differences)
    // are made leaves, so that the first-order gradient can be taken at all.
    auto gradient = [&fn, i, n](const std::vector<Tensor>& in) {
      EnableGradGuard record;
      std::vector<Tensor> xs(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
      bool graph = in[n].requires_grad();
      for (std::size_t k = 0; k < n; ++k) graph = graph || (xs[k].defined() && xs[k].requires_grad());
      if (!xs[i].requires_grad()) xs[i] = xs[i].detach().set_requires_grad(true);
      const Tensor out = fn(xs);
      const auto g = grad({out}, {xs[i]}, {in[n]}, {.create_graph = graph, .allow_unused = true});
      return g[0].defined() ? g[0] : zeros_like(xs[i]);
    };
    report.gradients.push_back(gradcheck(gradient, all, options));
    report.of_input.push_back(i);
  }
  report.passed = std::all_of(report.gradients.begin(), report.gradients.end(),
                              [](const GradcheckReport& r) { return r.passed; });
  return report;
}

std::string GradgradcheckReport::to_string() const {
  if (!error.empty()) return fmt::format("gradgradcheck could not run: {}", error);
  std::string s = fmt::format("gradgradcheck {}", passed ? "passed" : "FAILED");
  for (std::size_t k = 0; k < gradients.size(); ++k) {
    std::string g = gradients[k].to_string();
    for (std::size_t p = g.find('\n'); p != std::string::npos; p = g.find('\n', p + 3)) {
      g.replace(p, 1, "\n  ");
    }
    s += fmt::format("\n  the gradient of input {} (the last input below is grad_output):\n  {}",
                     of_input[k], g);
  }
  return s;
}

}  // namespace tapegrad
