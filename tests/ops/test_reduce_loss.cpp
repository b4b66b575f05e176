// The reductions and losses of issue 14 beyond what the PyTorch fixture
// (test_reduce_loss_reference.cpp) pins down: the errors each raises on bad input (its
// class, the op's name, the contract and the shapes), f32 against f64, the checker's verdict
// on every sample of every new op at first and second order (check_op, which tapegrad-check
// runs), and a few rules worth a direct assertion (prod's zeros, amax's ties, argmax's NaN).
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;
using Catch::Contains;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNan = std::numeric_limits<double>::quiet_NaN();

const std::vector<std::string> kNewOps = {
    "prod", "cumsum", "cumsum_backward", "var", "std", "logsumexp", "amax", "amin",
    "norm", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits", "kl_div",
    "nll_loss", "nll_loss_backward", "masked_zero"};

}  // namespace

TEST_CASE("reduce/loss: every new op is registered and passes check_op at first and second order",
          "[ops][reduce-loss][registry]") {
  for (const std::string& name : kNewOps) {
    INFO(name);
    const tg::OpInfo info = tg::find_op(name);
    REQUIRE(info.samples);
    CHECK(info.samples().size() >= 2);
    const tg::OpCheckReport report = tg::check_op(info);
    INFO(report.to_string(true));
    CHECK(report.passed());
    for (const auto& c : report.cases) CHECK(c.second_order_checked);
  }
}

TEST_CASE("reduce/loss: bad input throws an Error naming the op, the contract and the shapes",
          "[ops][reduce-loss][errors]") {
  const Tensor x = leaf({2, 3}, 1);
  const Tensor y = leaf({3, 2}, 2);
  const Tensor ints = i64({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor x32 = random_tensor({2, 3}, 3).to(DType::f32);

  // integer dtype
  CHECK_THROWS_MATCHES(tg::prod(ints), tg::DTypeError, Catch::Matchers::Message(
      "prod: input must be f32 or f64, got i64 [2, 3]"));
  CHECK_THROWS_WITH(tg::var(ints), Contains("var") && Contains("i64 [2, 3]"));
  CHECK_THROWS_AS(tg::std(ints, {1}), tg::DTypeError);
  CHECK_THROWS_AS(tg::logsumexp(ints, {1}), tg::DTypeError);
  CHECK_THROWS_WITH(tg::amax(ints), Contains("amax") && Contains("i64"));
  CHECK_THROWS_AS(tg::amin(ints), tg::DTypeError);
  CHECK_THROWS_WITH(tg::argmax(ints), Contains("argmax") && Contains("i64"));
  CHECK_THROWS_AS(tg::cumsum(ints, 0), tg::DTypeError);
  CHECK_THROWS_AS(tg::norm(ints), tg::DTypeError);

  // bad dims
  CHECK_THROWS_MATCHES(tg::var(x, {2}), tg::ValueError, Catch::Matchers::Message(
      "var: dim 2 is out of range for a tensor of rank 2 (valid: -2 to 1)"));
  CHECK_THROWS_WITH(tg::std(x, {1, -1}), Contains("std: dim -1 appears twice"));
  CHECK_THROWS_WITH(tg::logsumexp(x, {-3}), Contains("logsumexp: dim -3 is out of range"));
  CHECK_THROWS_WITH(tg::prod(x, 2), Contains("prod: dim 2 is out of range"));
  CHECK_THROWS_WITH(tg::cumsum(x, -3), Contains("cumsum: dim -3 is out of range"));
  CHECK_THROWS_WITH(tg::amax(x, {5}), Contains("amax: dim 5"));
  CHECK_THROWS_WITH(tg::argmin(x, 2), Contains("argmin: dim 2 is out of range"));
  CHECK_THROWS_WITH(tg::norm(x, 2, {0, 0}), Contains("norm: dim 0 appears twice"));

  // impossible reductions and options
  CHECK_THROWS_MATCHES(tg::amax(tg::zeros({2, 0}, DType::f64), {1}), tg::ShapeError,
                       Catch::Matchers::Message("amax: cannot reduce over dims [1] of an empty tensor "
                                                "[2, 0]: an empty group has no maximum"));
  CHECK_THROWS_AS(tg::argmax(tg::zeros({0}, DType::f64)), tg::ShapeError);
  CHECK_THROWS_MATCHES(tg::norm(x, 3), tg::ValueError, Catch::Matchers::Message(
      "norm: p = 3 is not supported: p must be 1, 2 or inf (input [2, 3])"));

  // losses: shapes, dtypes, options
  CHECK_THROWS_MATCHES(tg::l1_loss(x, y), tg::ShapeError, Catch::Matchers::Message(
      "l1_loss: input [2, 3] and target [3, 2] must have the same shape"));
  CHECK_THROWS_WITH(tg::smooth_l1_loss(x, y), Contains("smooth_l1_loss") && Contains("[3, 2]"));
  CHECK_THROWS_WITH(tg::huber_loss(x, x32), Contains("huber_loss") && Contains("f32"));
  CHECK_THROWS_AS(tg::huber_loss(x, x32), tg::DTypeError);
  CHECK_THROWS_MATCHES(tg::smooth_l1_loss(x, x, tg::Reduction::mean, -0.5), tg::ValueError,
                       Catch::Matchers::Message("smooth_l1_loss: beta must be >= 0, got -0.5 (input [2, 3])"));
  CHECK_THROWS_WITH(tg::huber_loss(x, x, tg::Reduction::mean, 0.0),
                    Contains("huber_loss: delta must be > 0, got 0"));
  CHECK_THROWS_WITH(tg::kl_div(x, y), Contains("kl_div") && Contains("[2, 3]") && Contains("[3, 2]"));
  CHECK_THROWS_AS(tg::l1_loss(ints, ints), tg::DTypeError);
  CHECK_THROWS_WITH(tg::binary_cross_entropy_with_logits(x, x, random_tensor({2}, 4)),
                    Contains("binary_cross_entropy_with_logits") && Contains("[2]") && Contains("[2, 3]"));
  CHECK_THROWS_MATCHES(tg::binary_cross_entropy_with_logits(x, x, Tensor(), leaf({3}, 5)), tg::ValueError,
                       Catch::Matchers::Message(
                           "binary_cross_entropy_with_logits: pos_weight [3] requires grad, but the "
                           "loss is not differentiable in it (as in PyTorch); pass pos_weight.detach()"));

  // class targets
  const Tensor logits = leaf({3, 4}, 6);
  const Tensor target = i64({1, 4, 0}, {3});
  CHECK_THROWS_MATCHES(tg::nll_loss(logits, target), tg::ValueError, Catch::Matchers::Message(
      "nll_loss: target[1] = 4 is not a class index in [0, 4) nor ignore_index = -100 (input [3, 4])"));
  // The composite names the function the user called, not the nll_loss inside it.
  CHECK_THROWS_MATCHES(tg::cross_entropy(logits, target), tg::ValueError, Catch::Matchers::Message(
      "cross_entropy: target[1] = 4 is not a class index in [0, 4) nor ignore_index = -100 (input [3, 4])"));
  CHECK_NOTHROW(tg::cross_entropy(logits, target, {.ignore_index = 4}));
  CHECK_THROWS_WITH(tg::cross_entropy(logits, i64({1, -1, 0}, {3}), {.ignore_index = 4}),
                    Contains("target[1] = -1"));
  CHECK_THROWS_MATCHES(tg::cross_entropy(logits, i64({1, 2, 0}, {3}), {.weight = random_tensor({3}, 7)}),
                       tg::ShapeError, Catch::Matchers::Message(
                           "cross_entropy: weight must be [C] = [4] (one per class of input [3, 4]), got [3]"));
  CHECK_THROWS_WITH(tg::nll_loss(logits, i64({1, 2}, {2})),
                    Contains("nll_loss: target must be [3] for input [3, 4] (input [N, C, d1, ...] takes "
                             "target [N, d1, ...], input [C] a 0-dim target), got target [2]"));
  CHECK_THROWS_MATCHES(tg::cross_entropy(logits, i64({1, 2, 0}, {3}), {.label_smoothing = 1.5}),
                       tg::ValueError, Catch::Matchers::Message(
                           "cross_entropy: label_smoothing must be in [0, 1], got 1.5 (logits [3, 4])"));
  CHECK_THROWS_AS(tg::cross_entropy(logits, i64({1, 2, 0}, {3}), {.weight = leaf({4}, 8)}), tg::ValueError);
}

TEST_CASE("reduce/loss: f32 forward and gradients match f64", "[ops][reduce-loss][f32]") {
  using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
  const Tensor target = i64({2, -100, 0, 3}, {4});
  const Tensor weight = random_tensor({5}, 11, 0.5, 1.5);
  const std::vector<std::pair<Fn, std::vector<Tensor>>> cases = {
      {[](const auto& in) { return tg::prod(in[0], 1); }, {leaf({3, 4}, 21)}},
      {[](const auto& in) { return tg::prod(in[0]); }, {leaf({2, 3}, 22, 0.5, 1.5)}},
      {[](const auto& in) { return tg::cumsum(in[0], -1); }, {leaf({3, 4}, 23)}},
      {[](const auto& in) { return tg::var(in[0], {0, 2}); }, {leaf({2, 3, 4}, 24)}},
      {[](const auto& in) { return tg::std(in[0], {}, 0, true); }, {leaf({3, 4}, 25)}},
      {[](const auto& in) { return tg::logsumexp(in[0], {1}); }, {leaf({3, 5}, 26, -30, 30)}},
      {[](const auto& in) { return tg::amax(in[0], {1}); }, {leaf({3, 5}, 27)}},
      {[](const auto& in) { return tg::amin(in[0]); }, {leaf({3, 5}, 28)}},
      {[](const auto& in) { return tg::norm(in[0], 1, {0}); }, {leaf({3, 5}, 29)}},
      {[](const auto& in) { return tg::norm(in[0]); }, {leaf({3, 5}, 30)}},
      {[](const auto& in) { return tg::norm(in[0], kInf, {1}, true); }, {leaf({3, 5}, 31)}},
      {[](const auto& in) { return tg::l1_loss(in[0], in[1]); }, {leaf({3, 4}, 32), leaf({3, 4}, 33)}},
      {[](const auto& in) { return tg::smooth_l1_loss(in[0], in[1], tg::Reduction::sum, 0.5); },
       {leaf({3, 4}, 34), leaf({3, 4}, 35)}},
      {[](const auto& in) { return tg::huber_loss(in[0], in[1], tg::Reduction::none, 0.3); },
       {leaf({3, 4}, 36), leaf({3, 4}, 37)}},
      {[](const auto& in) { return tg::binary_cross_entropy_with_logits(in[0], in[1]); },
       {leaf({3, 4}, 38, -40, 40), leaf({3, 4}, 39, 0, 1)}},
      {[](const auto& in) { return tg::kl_div(in[0], in[1], tg::KlDivReduction::batchmean); },
       {leaf({3, 4}, 40, -3, 0), leaf({3, 4}, 41, 0.1, 1)}},
      {[target, weight](const auto& in) {
         return tg::cross_entropy(in[0], target, {.weight = weight.to(in[0].dtype()), .label_smoothing = 0.1});
       },
       {leaf({4, 5}, 42, -3, 3)}},
  };
  std::uint64_t seed = 500;
  for (const auto& [fn, inputs] : cases) {
    INFO("case " << seed - 500);
    check_f32_matches_f64(fn, inputs, 1e-5, 1e-5);
    check_f32_grads_match_f64(fn, inputs, ++seed);
  }
}

TEST_CASE("reduce/loss: PyTorch's rules at zeros, ties and NaN", "[ops][reduce-loss]") {
  SECTION("prod: one zero gets the product of the others; two zeros give 0 everywhere") {
    const Tensor one = f64({2, 0, 3, -1}, {4}).set_requires_grad(true);
    tg::prod(one).backward();
    CHECK_THAT(one.grad(), AllClose({0, -6, 0, 0}, {4}));
    const Tensor two = f64({2, 0, 3, 0}, {4}).set_requires_grad(true);
    tg::prod(two).backward();
    CHECK_THAT(two.grad(), AllClose({0, 0, 0, 0}, {4}));
  }
  SECTION("amax splits the gradient evenly among ties; max(x, dim) does not") {
    const Tensor x = f64({1, 3, 3, 2, 2, 2}, {2, 3}).set_requires_grad(true);
    tg::amax(x, {1}).backward(f64({1, 3}, {2}));
    CHECK_THAT(x.grad(), AllClose({0, 0.5, 0.5, 1, 1, 1}, {2, 3}));
  }
  SECTION("argmax: the first maximum, NaN counting as the maximum") {
    CHECK(tg::argmax(f64({1, 3, 3, 2}, {4})).item<std::int64_t>() == 1);
    CHECK(tg::argmax(f64({1, kNan, 3, kNan}, {4})).item<std::int64_t>() == 1);
    CHECK(tg::argmin(f64({1, 0, 0, kNan}, {4})).item<std::int64_t>() == 3);
    const Tensor idx = tg::argmax(f64({1, 5, 5, 2, 7, 7}, {2, 3}), 1, true);
    CHECK(idx.dtype() == DType::i64);
    CHECK(idx.shape() == tg::Shape{2, 1});
    CHECK(idx.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 1});
  }
  SECTION("logsumexp is finite for large inputs") {
    const Tensor x = f64({1000, 1000, -kInf}, {3});
    CHECK(tg::logsumexp(x, {0}).item<double>() == Approx(1000 + std::log(2.0)).epsilon(1e-15));
  }
}
