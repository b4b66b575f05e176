// Higher-order gradients: create_graph in backward and grad, grad of grad to the third
// order, the functional transforms (vjp, jvp, hvp, jacobian, hessian) against closed forms
// and finite differences, gradgradcheck catching a VJP that is right to first order only,
// a LeNet gradient penalty, and the errors: create_graph through an op whose VJP is not
// differentiable, unused inputs, integer inputs, freed saved tensors.
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"
#include "support/planted.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;
using tapegrad::testing::ForgetfulSquare;
using tapegrad::testing::leaf;

namespace {

std::vector<double> values(const tg::Tensor& t) { return t.to_vector<double>(); }

void require_close(const tg::Tensor& actual, const std::vector<double>& expected, double tol) {
  const auto a = values(actual);
  REQUIRE(a.size() == expected.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(fmt::format("element {}: {} vs {}", i, a[i], expected[i]));
    CHECK(std::abs(a[i] - expected[i]) <= tol * (1 + std::abs(expected[i])));
  }
}

/// A two-layer tanh network's loss: every smooth op family (linear, tanh, mul, sum, mean,
/// log_softmax, nll_loss, reshape, permute, div, pow, sigmoid, softmax).
tg::Tensor mlp_loss(const std::vector<tg::Tensor>& in) {
  const tg::Tensor& x = in[0];
  const tg::Tensor& w1 = in[1];
  const tg::Tensor& w2 = in[2];
  tg::Tensor h = tg::tanh(tg::linear(x, w1));
  h = tg::permute(tg::reshape(h, {2, 3, 4}), {0, 2, 1});  // [2, 4, 3]
  h = tg::reshape(h, {6, 4}) * tg::sigmoid(tg::reshape(h, {6, 4}));
  tg::Tensor logits = tg::matmul(h, w2) / 1.5;
  tg::Tensor ce = tg::cross_entropy(logits, tg::testing::i64({0, 2, 1, 1, 0, 2}, {6}));
  return ce + tg::mean(tg::pow(tg::softmax(logits, 1), 2.0)) + tg::sum(tg::exp(w2 * 0.1));
}

std::vector<tg::Tensor> mlp_inputs() {
  return {leaf({6, 5}, 1), leaf({4, 5}, 2, -0.5, 0.5), leaf({4, 3}, 3, -0.5, 0.5)};
}

/// The same square with a VJP written on raw values, which says so.
struct RawSquare {
  static constexpr std::string_view name = "raw_square";
  static constexpr bool differentiable_vjp = false;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    return in[0] * in[0];
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    auto v = g.to_vector<double>();
    const auto x = ctx.saved(0).to_vector<double>();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] *= 2 * x[i];
    return {tg::from_vector(v, g.shape(), g.dtype())};
  }
};

}  // namespace

TEST_CASE("higher order: grad of grad to the third order", "[autograd][higher-order]") {
  const tg::Tensor x = tg::testing::f64({-1.5, -0.3, 0.4, 1.2, 2.0}, {5}).set_requires_grad(true);
  // f = sum(exp(x)·x): f' = e^x (1 + x), f'' = e^x (2 + x), f''' = e^x (3 + x).
  const tg::Tensor f = tg::sum(tg::exp(x) * x);
  const auto g1 = tg::grad({f}, {x}, {}, {.create_graph = true});
  REQUIRE(g1[0].requires_grad());
  const auto g2 = tg::grad({tg::sum(g1[0])}, {x}, {}, {.create_graph = true});
  const auto g3 = tg::grad({tg::sum(g2[0])}, {x}, {}, tg::GradOptions{});
  std::vector<double> d1, d2, d3;
  for (double v : values(x)) {
    d1.push_back(std::exp(v) * (1 + v));
    d2.push_back(std::exp(v) * (2 + v));
    d3.push_back(std::exp(v) * (3 + v));
  }
  require_close(g1[0], d1, 1e-14);
  require_close(g2[0], d2, 1e-14);
  require_close(g3[0], d3, 1e-14);
  CHECK_FALSE(g3[0].requires_grad());
  // Without create_graph the gradient carries no graph.
  CHECK_FALSE(tg::grad({tg::sum(tg::exp(x) * x)}, {x}, {}, tg::GradOptions{})[0].requires_grad());
}

TEST_CASE("higher order: backward(create_graph) leaves a differentiable grad()",
          "[autograd][higher-order]") {
  tg::Tensor x = tg::testing::f64({0.5, -1.0, 2.0}, {3}).set_requires_grad(true);
  tg::sum(tg::pow(x, 3.0)).backward(tg::Tensor(), {}, true);
  const tg::Tensor g = x.grad();  // 3x²
  REQUIRE(g.requires_grad());
  require_close(g, {0.75, 3.0, 12.0}, 1e-15);
  x.set_grad(tg::Tensor());
  tg::sum(g).backward();  // d(sum 3x²)/dx = 6x
  require_close(x.grad(), {3.0, -6.0, 12.0}, 1e-15);
}

TEST_CASE("higher order: gradgradcheck passes on every smooth op family, in every mode",
          "[autograd][higher-order]") {
  for (auto mode : {tg::GradcheckMode::elementwise, tg::GradcheckMode::fast}) {
    const auto r = tg::gradgradcheck(mlp_loss, mlp_inputs(), tg::Tensor(), {.mode = mode});
    INFO(r.to_string());
    CHECK(r.passed);
    CHECK(r.gradients.size() == 3);
  }
  // A non-scalar output, behind a ReLU and an MSE loss, with a given grad_output.
  auto fn = [](const std::vector<tg::Tensor>& in) {
    return tg::relu(tg::matmul(in[0], in[1])) * tg::mse_loss(in[0], in[0] * 0.5, tg::Reduction::sum);
  };
  const auto r = tg::gradgradcheck(fn, {leaf({3, 4}, 4), leaf({4, 2}, 5)},
                                   tg::testing::random_tensor({3, 2}, 6), {.mode = tg::GradcheckMode::full});
  INFO(r.to_string());
  CHECK(r.passed);
}

TEST_CASE("higher order: gradgradcheck catches a VJP right to first order only",
          "[autograd][higher-order]") {
  auto fn = [](const std::vector<tg::Tensor>& in) {
    return tg::tanh(tg::apply(ForgetfulSquare{}, {in[0]}) * in[1]);
  };
  const std::vector<tg::Tensor> in = {leaf({2, 3}, 7), leaf({2, 3}, 8)};
  CHECK(tg::gradcheck(fn, in).passed);
  const auto r = tg::gradgradcheck(fn, in);
  INFO(r.to_string());
  CHECK_FALSE(r.passed);
  CHECK_FALSE(r.gradients[0].inputs[0].passed());  // d²/dx² misses the 2·g term
  CHECK_THAT(r.to_string(), Contains("FAILED") && Contains("the gradient of input 0"));
}

TEST_CASE("higher order: vjp, jvp, hvp, jacobian and hessian", "[autograd][higher-order]") {
  const auto in = mlp_inputs();
  const tg::Tensor loss = mlp_loss(in);
  // hessian blocks against hvp, and hvp against finite differences of the gradient.
  const auto h = tg::hessian(mlp_loss, in);
  const std::vector<tg::Tensor> v = {tg::testing::random_tensor({6, 5}, 9),
                                     tg::testing::random_tensor({4, 5}, 10),
                                     tg::testing::random_tensor({4, 3}, 11)};
  const auto hv = tg::hvp(mlp_loss, in, v);
  CHECK(hv.output.item<double>() == Approx(loss.item<double>()).epsilon(1e-14));
  const double eps = 1e-6;
  std::vector<tg::Tensor> plus, minus;
  for (std::size_t k = 0; k < in.size(); ++k) {
    plus.push_back(tg::testing::copy_values(in[k] + v[k] * eps).set_requires_grad(true));
    minus.push_back(tg::testing::copy_values(in[k] - v[k] * eps).set_requires_grad(true));
  }
  const auto gp = tg::vjp(mlp_loss, plus).results;
  const auto gm = tg::vjp(mlp_loss, minus).results;
  for (std::size_t i = 0; i < in.size(); ++i) {
    INFO(i);
    // From the Hessian blocks: (H v)_i = Σ_j H[i][j] · v_j.
    std::vector<double> from_blocks(static_cast<std::size_t>(in[i].numel()), 0.0);
    for (std::size_t j = 0; j < in.size(); ++j) {
      REQUIRE(h[i][j].shape().size() == in[i].dim() + in[j].dim());
      const auto hij = values(h[i][j]);
      const auto vj = values(v[j]);
      for (std::size_t a = 0; a < from_blocks.size(); ++a) {
        for (std::size_t b = 0; b < vj.size(); ++b) from_blocks[a] += hij[a * vj.size() + b] * vj[b];
      }
    }
    require_close(hv.results[i], from_blocks, 1e-12);
    const auto p = values(gp[i]), m = values(gm[i]);
    std::vector<double> numeric;
    for (std::size_t a = 0; a < p.size(); ++a) numeric.push_back((p[a] - m[a]) / (2 * eps));
    require_close(hv.results[i], numeric, 1e-6);
  }
  // The Hessian is symmetric.
  const auto h01 = values(h[0][1]), h10 = values(h[1][0]);
  for (std::size_t a = 0; a < 30; ++a) {
    for (std::size_t b = 0; b < 20; ++b) CHECK(h01[a * 20 + b] == Approx(h10[b * 30 + a]).margin(1e-13));
  }

  // jvp against the jacobian and against finite differences of fn.
  auto vec_fn = [](const std::vector<tg::Tensor>& x) {
    return tg::softmax(tg::matmul(tg::tanh(x[0]), x[1]), 1);
  };
  const std::vector<tg::Tensor> vin = {leaf({3, 4}, 12), leaf({4, 2}, 13)};
  const std::vector<tg::Tensor> t = {tg::testing::random_tensor({3, 4}, 14),
                                     tg::testing::random_tensor({4, 2}, 15)};
  const auto jt = tg::jvp(vec_fn, vin, t);
  REQUIRE(jt.results.size() == 1);
  const auto jac = tg::jacobian(vec_fn, vin);
  REQUIRE(jac[0].shape() == tg::Shape{3, 2, 3, 4});
  REQUIRE(jac[1].shape() == tg::Shape{3, 2, 4, 2});
  std::vector<double> from_jacobian(6, 0.0);
  for (std::size_t j = 0; j < 2; ++j) {
    const auto jj = values(jac[j]);
    const auto tj = values(t[j]);
    for (std::size_t a = 0; a < 6; ++a) {
      for (std::size_t b = 0; b < tj.size(); ++b) from_jacobian[a] += jj[a * tj.size() + b] * tj[b];
    }
  }
  require_close(jt.results[0], from_jacobian, 1e-13);
  tg::NoGradGuard no_grad;
  const auto fp = values(vec_fn({vin[0] + t[0] * eps, vin[1] + t[1] * eps}));
  const auto fm = values(vec_fn({vin[0] - t[0] * eps, vin[1] - t[1] * eps}));
  std::vector<double> numeric;
  for (std::size_t a = 0; a < fp.size(); ++a) numeric.push_back((fp[a] - fm[a]) / (2 * eps));
  require_close(jt.results[0], numeric, 1e-7);
}

TEST_CASE("higher order: a gradient penalty backpropagated to the weights",
          "[autograd][higher-order]") {
  // penalty(w) = ||d loss / d x||², the loss of a tanh layer; checked by gradcheck, whose
  // evaluations compute a gradient of their own inside.
  const tg::Tensor x = tg::testing::random_tensor({4, 3}, 16);
  auto penalty = [x](const std::vector<tg::Tensor>& w) {
    tg::EnableGradGuard record;
    const tg::Tensor xs = x.detach().set_requires_grad(true);
    const tg::Tensor loss = tg::sum(tg::tanh(tg::linear(xs, w[0], w[1])) * 0.7);
    const auto g = tg::grad({loss}, {xs}, {}, {.create_graph = true});
    return tg::sum(g[0] * g[0]);
  };
  const auto r = tg::gradcheck(penalty, {leaf({2, 3}, 17), leaf({2}, 18)});
  INFO(r.to_string());
  CHECK(r.passed);
}

TEST_CASE("higher order: a LeNet-5 gradient penalty, every mode of gradgradcheck",
          "[autograd][higher-order]") {
  // conv2d (its gradients are ops of their own), max_pool2d (scatter and gather), relu,
  // linear, cross_entropy: the second order of the whole network against finite differences.
  const tg::Tensor target = tg::testing::i64({3, 7}, {2});
  auto lenet = [target](const std::vector<tg::Tensor>& p) {
    tg::Tensor h = tg::relu(tg::conv2d(p[0], p[1], p[2], {.padding = {1, 1}}));
    h = tg::max_pool2d(h, {.kernel_size = {2, 2}});
    h = tg::relu(tg::conv2d(h, p[3], p[4], {.stride = {2, 1}}));
    return tg::cross_entropy(tg::linear(tg::flatten(h, 1), p[5], p[6]), target);
  };
  const std::vector<tg::Tensor> p = {leaf({2, 1, 8, 8}, 30),        leaf({3, 1, 3, 3}, 31, -0.5, 0.5),
                                     leaf({3}, 32, -0.1, 0.1),      leaf({4, 3, 2, 2}, 33, -0.5, 0.5),
                                     leaf({4}, 34, -0.1, 0.1),      leaf({10, 24}, 35, -0.5, 0.5),
                                     leaf({10}, 36, -0.1, 0.1)};
  for (auto mode : {tg::GradcheckMode::elementwise, tg::GradcheckMode::fast}) {
    const auto r = tg::gradgradcheck(lenet, p, tg::Tensor(), {.mode = mode});
    INFO(r.to_string());
    CHECK(r.passed);
  }
  // The penalty ||dL/dx||² backpropagated to the weights.
  auto penalty = [&](const std::vector<tg::Tensor>& w) {
    tg::EnableGradGuard record;
    std::vector<tg::Tensor> all = w;
    const tg::Tensor x = p[0].detach().set_requires_grad(true);
    all.insert(all.begin(), x);
    const auto g = tg::grad({lenet(all)}, {x}, {}, {.create_graph = true});
    return tg::sum(g[0] * g[0]);
  };
  const auto r = tg::gradcheck(penalty, std::vector<tg::Tensor>(p.begin() + 1, p.end()));
  INFO(r.to_string());
  CHECK(r.passed);
}

TEST_CASE("higher order: errors name the op and the reason", "[autograd][higher-order][errors]") {
  const tg::Tensor a = leaf({3}, 21);
  const tg::Tensor sq = tg::sum(tg::apply(RawSquare{}, {a}) * 2.0);
  CHECK_THROWS_AS(tg::grad({sq}, {a}, {}, {.create_graph = true}), tg::GraphError);
  CHECK_THROWS_WITH(tg::grad({sq}, {a}, {}, {.create_graph = true}),
                    Contains("raw_square") && Contains("differentiable_vjp"));
  CHECK(tg::grad({sq}, {a}, {}, tg::GradOptions{.retain_graph = true})[0].defined());  // first order is fine

  // An input the output does not use.
  const tg::Tensor unused = leaf({2}, 22);
  const tg::Tensor s = tg::sum(a * 2.0);
  CHECK_THROWS_WITH(tg::grad({s}, {a, unused}, {}, tg::GradOptions{.retain_graph = true}),
                    Contains("input 1") && Contains("allow_unused"));
  const auto g = tg::grad({s}, {a, unused}, {}, {.allow_unused = true});
  CHECK(g[0].defined());
  CHECK_FALSE(g[1].defined());
  // Integer inputs have no gradient.
  const tg::Tensor ids = tg::testing::i64({1, 2}, {2});
  CHECK_THROWS_AS(tg::grad({tg::sum(a * 2.0)}, {ids}, {}, tg::GradOptions{}), tg::GraphError);
  // A second backward through freed saved tensors...
  const tg::Tensor e = tg::sum(a * a);
  const auto g1 = tg::grad({e}, {a}, {}, {.retain_graph = false, .create_graph = true});
  CHECK_THROWS_WITH(tg::grad({e}, {a}, {}, tg::GradOptions{}), Contains("second time"));
  // ...while the gradient's own graph (2a, from the saved leaf) is whole.
  require_close(tg::grad({tg::sum(g1[0])}, {a}, {}, tg::GradOptions{})[0], {2.0, 2.0, 2.0}, 1e-15);
  // exp's gradient reads exp's saved output, so it needs the first graph kept.
  const tg::Tensor ex = tg::sum(tg::exp(a));
  const auto ge = tg::grad({ex}, {a}, {}, {.retain_graph = false, .create_graph = true});
  CHECK_THROWS_WITH(tg::grad({tg::sum(ge[0])}, {a}, {}, tg::GradOptions{}),
                    Contains("exp") && Contains("retain_graph"));
}
