// softmax, log_softmax, nll_loss, cross_entropy, mse_loss.
#include <cmath>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Reduction;
using tg::Tensor;

namespace {

TensorFn softmax_fn(bool log, std::int64_t dim) {
  return [log, dim](const std::vector<Tensor>& in) {
    return log ? tg::log_softmax(in[0], dim) : tg::softmax(in[0], dim);
  };
}

std::string reduction_name(Reduction r) {
  return r == Reduction::none ? "none" : r == Reduction::sum ? "sum" : "mean";
}

}  // namespace

// ---- softmax, log_softmax ----------------------------------------------------------------------

TEST_CASE("softmax and log_softmax: forward", "[ops][softmax]") {
  const double l2 = std::log(2.0);
  SECTION("rows of a matrix (dim 1 and dim -1)") {
    const Tensor x = f64({1, 2, 3, 0, 0, 0}, {2, 3});
    const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
    for (std::int64_t dim : {1, -1}) {
      CHECK_THAT(tg::softmax(x, dim), AllClose({std::exp(1.0) / z, std::exp(2.0) / z,
                                                std::exp(3.0) / z, 1.0 / 3, 1.0 / 3, 1.0 / 3},
                                               {2, 3}));
      CHECK_THAT(tg::log_softmax(x, dim),
                 AllClose({1 - std::log(z), 2 - std::log(z), 3 - std::log(z), -std::log(3.0),
                           -std::log(3.0), -std::log(3.0)},
                          {2, 3}));
    }
  }
  SECTION("columns (dim 0)") {
    const Tensor x = f64({0, 5, 0, 5}, {2, 2});
    CHECK_THAT(tg::softmax(x, 0), AllClose({0.5, 0.5, 0.5, 0.5}, {2, 2}));
    const Tensor y = f64({0, 1, std::log(3.0), 1}, {2, 2});
    CHECK_THAT(tg::softmax(y, 0), AllClose({0.25, 0.5, 0.75, 0.5}, {2, 2}));
    CHECK_THAT(tg::log_softmax(y, 0), AllClose({-2 * l2, -l2, std::log(0.75), -l2}, {2, 2}));
  }
  SECTION("stable for values like 1000 and -1000, in f64 and f32") {
    for (DType dtype : {DType::f64, DType::f32}) {
      INFO(tg::dtype_name(dtype));
      const Tensor x = tg::from_vector(
          std::vector<double>{1000, 1000, -1000, -1000, -1000, -1000, 1000, 0, -1000}, {3, 3},
          dtype);
      const double tol = dtype == DType::f32 ? 1e-6 : 1e-12;
      CHECK_THAT(tg::softmax(x, 1).to(DType::f64),
                 AllClose({0.5, 0.5, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1, 0, 0}, {3, 3}, DType::f64,
                          tol, tol));
      const auto ls = tg::log_softmax(x, 1).to_vector<double>();
      CHECK(ls[0] == Approx(-l2).epsilon(tol));
      CHECK(ls[2] == Approx(-2000 - l2).epsilon(tol));
      CHECK(ls[3] == Approx(-std::log(3.0)).epsilon(tol));
      CHECK(ls[6] == Approx(0).margin(tol));
      CHECK(ls[7] == Approx(-1000).epsilon(tol));
      CHECK(ls[8] == Approx(-2000).epsilon(tol));
    }
  }
  SECTION("a softmax sums to 1 along its dim, for every dim of a 3-D tensor") {
    const Tensor x = leaf({3, 4, 5}, 11, -5, 5).detach();
    for (std::int64_t dim = 0; dim < 3; ++dim) {
      INFO("dim " << dim);
      const Tensor s = tg::softmax(x, dim);
      const tg::Shape kept = tg::sum(s, {dim}).shape();
      CHECK_THAT(tg::sum(s, {dim}), AllClose(tg::ones(kept, DType::f64), 1e-14, 1e-14));
      CHECK_THAT(tg::exp(tg::log_softmax(x, dim)), AllClose(s, 1e-15, 1e-13));
    }
  }
}

TEST_CASE("softmax and log_softmax: VJP matches finite differences", "[ops][softmax][vjp]") {
  struct Case {
    tg::Shape shape;
    std::int64_t dim;
  };
  std::uint64_t seed = 7000;
  for (bool log : {false, true}) {
    for (const Case& c : {Case{{3, 5}, 1}, Case{{3, 5}, 0}, Case{{4, 2, 3}, 0}, Case{{2, 3, 4}, 1},
                          Case{{2, 3, 4}, -1}, Case{{1, 4}, -1}}) {
      INFO((log ? "log_softmax" : "softmax")
           << " over dim " << c.dim << " of " << tg::to_string(c.shape));
      const Tensor x = leaf(c.shape, ++seed, -3, 3);
      check_vjp(softmax_fn(log, c.dim), {x}, ++seed);
      check_f32_matches_f64(softmax_fn(log, c.dim), {x});
      check_f32_grads_match_f64(softmax_fn(log, c.dim), {x}, ++seed);
    }
  }
  SECTION("large logits: the gradient stays finite and correct") {
    const Tensor x = f64({1000, 999, -1000, 998}, {1, 4}).set_requires_grad(true);
    check_vjp(softmax_fn(false, 1), {x}, 7900);
    check_vjp(softmax_fn(true, 1), {x}, 7901);
  }
}

TEST_CASE("softmax and log_softmax: errors", "[ops][softmax][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  for (bool log : {false, true}) {
    const std::string name = log ? "log_softmax" : "softmax";
    INFO(name);
    REQUIRE_THROWS_AS(softmax_fn(log, 2)({x}), tg::ValueError);
    REQUIRE_THROWS_WITH(softmax_fn(log, 2)({x}),
                        Catch::StartsWith(name + ":") && Catch::Contains("out of range"));
    REQUIRE_THROWS_AS(softmax_fn(log, -3)({x}), tg::ValueError);
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {1, 2});
    REQUIRE_THROWS_AS(softmax_fn(log, 1)({n}), tg::DTypeError);
  }
}

// ---- nll_loss, cross_entropy
// ---------------------------------------------------------------------

TEST_CASE("nll_loss: forward for each reduction", "[ops][loss][nll]") {
  const Tensor logp = f64({-1, -2, -3, -4, -0.5, -1.5, -2.5, -3.5, -0.1, -0.2, -0.3, -0.4}, {3, 4});
  const Tensor target = i64({2, 0, 3}, {3});
  CHECK_THAT(tg::nll_loss(logp, target, Reduction::none), AllClose({3, 0.5, 0.4}, {3}));
  CHECK_THAT(tg::nll_loss(logp, target, Reduction::sum), AllClose({3.9}, {}));
  CHECK_THAT(tg::nll_loss(logp, target, Reduction::mean), AllClose({1.3}, {}));
  CHECK_THAT(tg::nll_loss(logp, target), AllClose({1.3}, {}));
  SECTION("repeated classes") {
    CHECK_THAT(tg::nll_loss(logp, i64({1, 1, 1}, {3}), Reduction::none),
               AllClose({2, 1.5, 0.2}, {3}));
  }
}

TEST_CASE("nll_loss: exact gradient", "[ops][loss][nll][vjp]") {
  const Tensor logp = leaf({3, 4}, 21, -3, 0);
  const Tensor target = i64({2, 0, 2}, {3});
  SECTION("mean: -c / N at the targets") {
    const auto g =
        tg::grad({tg::nll_loss(logp, target)}, {logp}, {tg::scalar_tensor(1.5, DType::f64)})[0];
    CHECK_THAT(g, AllClose({0, 0, -0.5, 0, -0.5, 0, 0, 0, 0, 0, -0.5, 0}, {3, 4}));
  }
  SECTION("none: -c[n] at the targets") {
    const auto g = tg::grad({tg::nll_loss(logp, target, Reduction::none)}, {logp},
                            {f64({2, -1, 0.5}, {3})})[0];
    CHECK_THAT(g, AllClose({0, 0, -2, 0, 1, 0, 0, 0, 0, 0, -0.5, 0}, {3, 4}));
  }
}

TEST_CASE("nll_loss and cross_entropy: VJP matches finite differences", "[ops][loss][vjp]") {
  std::uint64_t seed = 8000;
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    INFO("reduction " << reduction_name(r));
    for (const auto& [n, classes] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 5}, {5, 3}, {1, 2}}) {
      INFO("[" << n << ", " << classes << "]");
      std::vector<std::int64_t> t;
      for (std::int64_t i = 0; i < n; ++i) t.push_back((i * 2 + 1) % classes);
      const Tensor target = i64(t, {n});
      const TensorFn nll = [r](const auto& in) { return tg::nll_loss(in[0], in[1], r); };
      const TensorFn ce = [r](const auto& in) { return tg::cross_entropy(in[0], in[1], r); };
      const Tensor logp = leaf({n, classes}, ++seed, -3, 0);
      const Tensor logits = leaf({n, classes}, ++seed, -3, 3);
      check_vjp(nll, {logp, target}, ++seed);
      check_vjp(ce, {logits, target}, ++seed);
      check_f32_matches_f64(nll, {logp, target});
      check_f32_matches_f64(ce, {logits, target});
      check_f32_grads_match_f64(ce, {logits, target}, ++seed);
    }
  }
}

TEST_CASE("cross_entropy: forward is nll_loss of log_softmax", "[ops][loss][cross_entropy]") {
  const double l2 = std::log(2.0);
  // Row 0: log_softmax [0, 0] -> -log 2 each; row 1: [log 3, 0] -> [log 3/4, log 1/4].
  const Tensor logits = f64({0, 0, std::log(3.0), 0}, {2, 2});
  const Tensor target = i64({0, 1}, {2});
  CHECK_THAT(tg::cross_entropy(logits, target, Reduction::none), AllClose({l2, 2 * l2}, {2}));
  CHECK_THAT(tg::cross_entropy(logits, target, Reduction::sum), AllClose({3 * l2}, {}));
  CHECK_THAT(tg::cross_entropy(logits, target), AllClose({1.5 * l2}, {}));
  SECTION("the same as composing the two ops") {
    const Tensor x = leaf({4, 6}, 31, -4, 4).detach();
    const Tensor t = i64({5, 0, 3, 3}, {4});
    CHECK_THAT(tg::cross_entropy(x, t), AllClose(tg::nll_loss(tg::log_softmax(x, 1), t)));
  }
  SECTION("stable for logits like 1000 and -1000") {
    const Tensor x = f64({1000, -1000, 0, -1000, 1000, 1000}, {2, 3}).set_requires_grad(true);
    const Tensor t = i64({1, 2}, {2});
    CHECK_THAT(tg::cross_entropy(x, t, Reduction::none),
               AllClose({2000, l2}, {2}, DType::f64, 1e-9, 1e-12));
    const auto g = tg::grad({tg::cross_entropy(x, t)}, {x})[0];
    // (softmax - onehot) / N
    CHECK_THAT(g, AllClose({0.5, -0.5, 0, 0, 0.25, -0.25}, {2, 3}, DType::f64, 1e-12, 0));
  }
}

TEST_CASE("nll_loss and cross_entropy: errors", "[ops][loss][errors]") {
  const Tensor logp = tg::zeros({3, 4}, DType::f64);
  SECTION("target out of range names the entry and the class count") {
    for (std::int64_t bad : {4, -1, 100}) {
      INFO("target " << bad);
      const Tensor t = i64({0, bad, 1}, {3});
      REQUIRE_THROWS_AS(tg::nll_loss(logp, t), tg::ValueError);
      REQUIRE_THROWS_WITH(tg::nll_loss(logp, t),
                          Catch::Contains("nll_loss") && Catch::Contains("target[1]") &&
                              Catch::Contains(std::to_string(bad)) && Catch::Contains("4"));
      REQUIRE_THROWS_AS(tg::cross_entropy(logp, t), tg::ValueError);
    }
  }
  SECTION("target of the wrong dtype") {
    const Tensor t = f64({0, 1, 2}, {3});
    REQUIRE_THROWS_AS(tg::nll_loss(logp, t), tg::DTypeError);
    REQUIRE_THROWS_WITH(tg::nll_loss(logp, t), Catch::Contains("nll_loss") &&
                                                   Catch::Contains("i64") &&
                                                   Catch::Contains("f64"));
    REQUIRE_THROWS_AS(tg::cross_entropy(logp, t.to(DType::f32)), tg::DTypeError);
    REQUIRE_THROWS_AS(tg::nll_loss(logp, Tensor()), tg::DTypeError);
  }
  SECTION("shapes") {
    REQUIRE_THROWS_AS(tg::nll_loss(logp, i64({0, 1}, {2})), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::nll_loss(logp, i64({0, 1}, {2})),
                        Catch::Contains("[3, 4]") && Catch::Contains("[2]"));
    REQUIRE_THROWS_AS(tg::nll_loss(logp, i64({0, 1, 2}, {3, 1})), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::nll_loss(tg::zeros({4}, DType::f64), i64({0}, {1})), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::nll_loss(tg::zeros({3, 4, 2}, DType::f64), i64({0, 1, 2}, {3})),
                      tg::ShapeError);
    REQUIRE_THROWS_AS(tg::cross_entropy(tg::zeros({4}, DType::f64), i64({0}, {1})), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::cross_entropy(tg::zeros({4}, DType::f64), i64({0}, {1})),
                        Catch::Contains("cross_entropy") && Catch::Contains("[4]"));
  }
  SECTION("[N, C, d1, ...] and [C]: the target shape, named by the op the user called") {
    const Tensor logits = tg::zeros({2, 4, 3, 2}, DType::f64);
    const Tensor wrong = tg::zeros({2, 3}, DType::i64);
    REQUIRE_THROWS_MATCHES(tg::cross_entropy(logits, wrong), tg::ShapeError, Catch::Matchers::Message(
        "cross_entropy: target must be [2, 3, 2] for input [2, 4, 3, 2] (input [N, C, d1, ...] takes "
        "target [N, d1, ...], input [C] a 0-dim target), got target [2, 3]"));
    REQUIRE_THROWS_WITH(tg::nll_loss(logits, tg::zeros({2, 4, 3, 2}, DType::i64)),
                        Catch::StartsWith("nll_loss: target must be [2, 3, 2]"));
    REQUIRE_THROWS_WITH(tg::cross_entropy(tg::zeros({5}, DType::f64), tg::zeros({1}, DType::i64)),
                        Catch::StartsWith("cross_entropy: target must be [] for input [5]"));
    REQUIRE_THROWS_MATCHES(tg::cross_entropy(tg::zeros({}, DType::f64), tg::zeros({}, DType::i64)),
                           tg::ShapeError, Catch::Matchers::Message(
        "cross_entropy: expects input [N, C, d1, ...] or [C], got a 0-dim input (target [])"));
  }
  SECTION("[N, C, d1, ...] and [C]: a class out of range names its entry, not ignore_index") {
    const Tensor logits = tg::zeros({2, 4, 3}, DType::f64);
    const Tensor t = i64({0, 1, 2, 3, -100, 4}, {2, 3});
    REQUIRE_THROWS_MATCHES(tg::cross_entropy(logits, t), tg::ValueError, Catch::Matchers::Message(
        "cross_entropy: target[1, 2] = 4 is not a class index in [0, 4) nor ignore_index = -100 "
        "(input [2, 4, 3])"));
    REQUIRE_THROWS_WITH(tg::nll_loss(logits, t, {.ignore_index = 4}), Catch::Contains("nll_loss: target[1, 1] = -100"));
    CHECK_NOTHROW(tg::nll_loss(logits, i64({0, 1, 2, 3, 4, 4}, {2, 3}), {.ignore_index = 4}));
    REQUIRE_THROWS_MATCHES(tg::cross_entropy(tg::zeros({5}, DType::f64), i64({5}, {}), {.label_smoothing = 0.1}),
                           tg::ValueError, Catch::Matchers::Message(
        "cross_entropy: target = 5 is not a class index in [0, 5) nor ignore_index = -100 (input [5])"));
  }
  SECTION("integer log-probabilities") {
    REQUIRE_THROWS_AS(tg::nll_loss(i64({0, 0}, {1, 2}), i64({0}, {1})), tg::DTypeError);
  }
}

// ---- mse_loss ----------------------------------------------------------------------------------

TEST_CASE("mse_loss: forward for each reduction", "[ops][loss][mse]") {
  const Tensor a = f64({1, 2, 3, 4}, {2, 2});
  const Tensor b = f64({0, 2, 5, 1}, {2, 2});
  CHECK_THAT(tg::mse_loss(a, b, Reduction::none), AllClose({1, 0, 4, 9}, {2, 2}));
  CHECK_THAT(tg::mse_loss(a, b, Reduction::sum), AllClose({14}, {}));
  CHECK_THAT(tg::mse_loss(a, b), AllClose({3.5}, {}));
  SECTION("exact gradients: 2(a - b)·c, divided by numel for mean") {
    const Tensor al = copy_values(a).set_requires_grad(true);
    const Tensor bl = copy_values(b).set_requires_grad(true);
    const auto g = tg::grad({tg::mse_loss(al, bl)}, {al, bl}, {tg::scalar_tensor(2, DType::f64)});
    CHECK_THAT(g[0], AllClose({1, 0, -2, 3}, {2, 2}));
    CHECK_THAT(g[1], AllClose({-1, 0, 2, -3}, {2, 2}));
  }
}

TEST_CASE("mse_loss: VJP matches finite differences", "[ops][loss][mse][vjp]") {
  std::uint64_t seed = 8500;
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    for (const tg::Shape& shape : {tg::Shape{3, 4}, tg::Shape{2, 3, 2}, tg::Shape{5}}) {
      INFO("reduction " << reduction_name(r) << " on " << tg::to_string(shape));
      const TensorFn fn = [r](const auto& in) { return tg::mse_loss(in[0], in[1], r); };
      const Tensor a = leaf(shape, ++seed, -2, 2);
      const Tensor b = leaf(shape, ++seed, -2, 2);
      check_vjp(fn, {a, b}, ++seed);
      check_vjp(fn, {a, b.detach()}, ++seed);
      check_vjp(fn, {a.detach(), b}, ++seed);
      check_f32_matches_f64(fn, {a, b});
      check_f32_grads_match_f64(fn, {a, b}, ++seed);
    }
  }
}

TEST_CASE("mse_loss: errors", "[ops][loss][mse][errors]") {
  const Tensor a = tg::zeros({2, 3}, DType::f64);
  REQUIRE_THROWS_AS(tg::mse_loss(a, tg::zeros({3, 2}, DType::f64)), tg::ShapeError);
  REQUIRE_THROWS_WITH(
      tg::mse_loss(a, tg::zeros({3, 2}, DType::f64)),
      Catch::Contains("mse_loss") && Catch::Contains("[2, 3]") && Catch::Contains("[3, 2]"));
  // No broadcasting either, unlike the element-wise ops.
  REQUIRE_THROWS_AS(tg::mse_loss(a, tg::zeros({3}, DType::f64)), tg::ShapeError);
  REQUIRE_THROWS_AS(tg::mse_loss(a, tg::zeros({2, 3}, DType::f32)), tg::DTypeError);
  const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2}, {2});
  REQUIRE_THROWS_AS(tg::mse_loss(n, n), tg::DTypeError);
}
