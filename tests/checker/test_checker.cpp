// The gradient checker: gradcheck's report and kinks, check_graph localising one wrong VJP
// in a LeNet-shaped network, the contract sweep over every registered op, DOT export and
// explain_no_grad.
#include <algorithm>
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
using tapegrad::testing::leaf;

namespace {

/// y = x·wᵀ for a square w; with `transposed` the VJP for x uses wᵀ (a transposed index):
/// right shapes, wrong values.
struct SquareLinear {
  static constexpr std::string_view name = "square_linear";
  bool transposed = false;
  std::string attributes() const { return fmt::format("transposed_bug={}", transposed); }
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const {
    return {{in[0].size(0), in[1].size(0)}, in[0].dtype()};
  }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    ctx.save(in[1]);
    return tg::matmul(in[0], tg::permute(in[1], {1, 0}));
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    const tg::Tensor& x = ctx.saved(0);
    const tg::Tensor& w = ctx.saved(1);
    const tg::Tensor w_used = transposed ? tg::permute(w, {1, 0}) : w;
    return {ctx.needs_input_grad(0) ? tg::matmul(g, w_used) : tg::Tensor(),
            ctx.needs_input_grad(1) ? tg::matmul(tg::permute(g, {1, 0}), x) : tg::Tensor()};
  }
};

tg::Tensor square_linear(const tg::Tensor& x, const tg::Tensor& w, bool bug) {
  return tg::apply(SquareLinear{bug}, {x, w});
}

/// An op registered without samples (not registered here: the sweep must stay green).
struct NoSamples {
  static constexpr std::string_view name = "no_samples";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0] * 2.0; }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) { return {g * 2.0}; }
};

tg::Tensor lenet(const tg::Tensor& x, const std::vector<tg::Tensor>& p, bool bug) {
  tg::Tensor h = tg::relu(tg::conv2d(x, p[0], p[1]));
  h = tg::max_pool2d(h, {.kernel_size = {2, 2}});
  h = tg::relu(tg::conv2d(h, p[2], p[3]));
  h = tg::max_pool2d(h, {.kernel_size = {2, 2}});
  h = tg::relu(tg::linear(tg::flatten(h, 1), p[4], p[5]));
  return square_linear(h, p[6], bug);
}

}  // namespace

TEST_CASE("gradcheck: a correct function passes with a per-input report", "[checker]") {
  tg::Tensor x = leaf({2, 3, 4}, 1);
  tg::Tensor w = leaf({3, 4}, 2);
  auto fn = [](const std::vector<tg::Tensor>& in) { return tg::tanh(in[0] * in[1]) * in[1]; };
  for (auto mode : {tg::GradcheckMode::elementwise, tg::GradcheckMode::full,
                    tg::GradcheckMode::fast}) {
    const auto r = tg::gradcheck(fn, {x, w}, {.mode = mode});
    INFO(r.to_string());
    CHECK(r.passed);
    REQUIRE(r.inputs.size() == 2);
    CHECK(r.inputs[0].compared > 0);
    CHECK(r.inputs[0].failing == 0);
    CHECK(r.max_rel_error() < 1e-6);
  }
  const auto full = tg::gradcheck(fn, {x, w}, {.mode = tg::GradcheckMode::full});
  CHECK(full.inputs[0].compared == 24 * 24);  // every Jacobian entry
}

TEST_CASE("gradcheck: a wrong VJP fails and the report names the worst element",
          "[checker]") {
  tg::Tensor x = leaf({3, 3}, 3);
  tg::Tensor w = leaf({3, 3}, 4);
  auto bad = [](const std::vector<tg::Tensor>& in) { return square_linear(in[0], in[1], true); };
  for (auto mode : {tg::GradcheckMode::elementwise, tg::GradcheckMode::full,
                    tg::GradcheckMode::fast}) {
    const auto r = tg::gradcheck(bad, {x, w}, {.mode = mode});
    INFO(r.to_string());
    CHECK_FALSE(r.passed);
    CHECK_FALSE(r.inputs[0].passed());
    CHECK(r.inputs[1].passed());
    CHECK(r.inputs[0].worst_index.size() == 2);
    CHECK(r.inputs[0].analytic != Approx(r.inputs[0].numeric));
    CHECK_THAT(r.to_string(), Contains("FAILED") && Contains("worst at ["));
  }
  auto good = [](const std::vector<tg::Tensor>& in) { return square_linear(in[0], in[1], false); };
  CHECK(tg::gradcheck(good, {x, w}).passed);
}

TEST_CASE("gradcheck: f32 inputs are checked through an f64 copy, others pass through",
          "[checker]") {
  tg::Tensor x = leaf({4, 3}, 5).to(tg::DType::f32).detach().set_requires_grad(true);
  tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{0, 2, 1, 1}, {4});
  auto fn = [](const std::vector<tg::Tensor>& in) { return tg::cross_entropy(in[0], in[1]); };
  const auto r = tg::gradcheck(fn, {x, target});
  INFO(r.to_string());
  CHECK(r.passed);
  CHECK_FALSE(r.inputs[1].checked);
  CHECK_THAT(r.to_string(), Contains("checked through an f64 copy") && Contains("not checked"));
  const auto none = tg::gradcheck(fn, {x.detach(), target});
  CHECK_FALSE(none.passed);
  CHECK_THAT(none.to_string(), Contains("no input requires grad"));
}

TEST_CASE("gradcheck: steps across a declared kink are retried and reported, not failed",
          "[checker]") {
  // relu at exactly 0 and a max-pool window of ties: one side of each crosses nothing.
  tg::Tensor x = tg::from_vector(std::vector<double>{0.0, 0.5, -0.5, 1.0}, {4}, tg::DType::f64);
  x.set_requires_grad(true);
  const auto r = tg::gradcheck([](const auto& in) { return tg::relu(in[0]); }, {x});
  INFO(r.to_string());
  CHECK(r.passed);
  CHECK(r.inputs[0].retried == 1);
  CHECK(r.inputs[0].kinks == 0);
  CHECK_THAT(r.to_string(), Contains("1 step crossed a kink of relu (x = 0)"));

  tg::Tensor p = tg::from_vector(std::vector<double>{1, 1, 1, 1, 0.1, 0.2, 0.3, 0.4},
                                 {1, 1, 2, 4}, tg::DType::f64);
  p.set_requires_grad(true);
  const auto rp = tg::gradcheck(
      [](const auto& in) { return tg::max_pool2d(in[0], {.kernel_size = {2, 2}}); }, {p});
  INFO(rp.to_string());
  CHECK(rp.passed);
  CHECK(rp.inputs[0].retried > 0);
  CHECK_THAT(rp.to_string(), Contains("max_pool2d (ties within a window)"));

  // A smooth op with a wrong VJP is not excused as a kink.
  tg::Tensor y = leaf({3, 3}, 6);
  tg::Tensor w = leaf({3, 3}, 7);
  const auto bad = tg::gradcheck(
      [](const auto& in) { return square_linear(tg::relu(in[0]), in[1], true); }, {y, w});
  CHECK_FALSE(bad.passed);
}

TEST_CASE("check_graph: names the one wrong op inside a LeNet-shaped network", "[checker]") {
  tg::manual_seed(3);
  tg::Tensor x = tg::testing::random_tensor({2, 1, 12, 12}, 11);
  tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{3, 7}, {2});
  std::vector<tg::Tensor> params = {
      leaf({4, 1, 3, 3}, 12, -0.5, 0.5), leaf({4}, 13, -0.1, 0.1),
      leaf({6, 4, 2, 2}, 14, -0.5, 0.5), leaf({6}, 15, -0.1, 0.1),
      leaf({10, 24}, 16, -0.5, 0.5),     leaf({10}, 17, -0.1, 0.1),
      leaf({10, 10}, 18, -0.5, 0.5)};
  for (bool bug : {false, true}) {
    tg::Tensor loss;
    {
      tg::RecordInputsGuard keep;
      loss = tg::cross_entropy(lenet(x, params, bug), target);
    }
    const auto report = tg::check_graph(loss);
    INFO(report.to_string());
    std::vector<std::string> ops;
    for (const auto& n : report.nodes) ops.push_back(n.op);
    for (const char* op : {"conv2d", "relu", "max_pool2d", "reshape", "linear",
                           "square_linear", "log_softmax", "nll_loss"}) {
      INFO(op);
      CHECK(std::count(ops.begin(), ops.end(), op) >= 1);
    }
    if (!bug) {
      CHECK(report.passed);
      CHECK(report.first_failure() == nullptr);
    } else {
      CHECK_FALSE(report.passed);
      CHECK(report.failing_ops() == std::vector<std::string>{"square_linear"});
      REQUIRE(report.first_failure() != nullptr);
      CHECK(report.first_failure()->op == "square_linear");
      CHECK_THAT(report.to_string(), Contains("first failing op: #") &&
                                         Contains("square_linear(transposed_bug=true)") &&
                                         Contains("[2, 10] f64, [10, 10] f64") &&
                                         Contains("worst at ["));
    }
  }
  // Without the guard the inputs were not kept.
  const auto unkept = tg::check_graph(tg::cross_entropy(lenet(x, params, false), target));
  CHECK_FALSE(unkept.passed);
  CHECK_THAT(unkept.to_string(), Contains("RecordInputsGuard"));
}

TEST_CASE("contract: every registered op and each of its samples", "[checker][registry]") {
  std::size_t cases = 0;
  for (const auto& op : tg::registered_ops()) {
    const auto r = tg::check_op(op);
    INFO(r.to_string(true));
    CHECK(r.passed());
    for (const auto& c : r.cases) CHECK(c.second_order_checked);  // every built-in, twice
    cases += r.cases.size();
  }
  CHECK(cases >= 40);
}

TEST_CASE("contract: an op without samples fails, and broken contracts are named", "[checker]") {
  const auto r = tg::check_op(tg::op_info<NoSamples>());
  CHECK_FALSE(r.passed());
  CHECK_THAT(r.to_string(), Contains("without sample inputs"));

  tg::OpInfo info{"square_linear", {}, nullptr};
  tg::Sample s{"3x3", {leaf({3, 3}, 20), leaf({3, 3}, 21)},
               [](const std::vector<tg::Tensor>& in) { return square_linear(in[0], in[1], true); }};
  const auto c = tg::check_op_sample(info, s);
  CHECK_FALSE(c.passed());
  CHECK_FALSE(c.gradcheck.passed);
}

TEST_CASE("to_dot: ops, attributes, shapes, saved bytes and leaves", "[checker][dot]") {
  tg::Tensor x = tg::testing::random_tensor({1, 2, 6, 6}, 30);
  tg::Tensor w = leaf({3, 2, 3, 3}, 31);
  tg::Tensor out = tg::sum(tg::max_pool2d(tg::relu(tg::conv2d(x, w, tg::Tensor())),
                                          {.kernel_size = {2, 2}}));
  const std::string dot = tg::to_dot(out);
  INFO(dot);
  CHECK_THAT(dot, Contains("digraph") && Contains("conv2d") && Contains("max_pool2d") &&
                      Contains("kernel_size=[2, 2]") && Contains("[1, 3, 4, 4] f64") &&
                      Contains("saved") && Contains("leaf (requires grad)") &&
                      Contains("label=\"[3, 2, 3, 3]\"") && Contains("lightblue"));
}

TEST_CASE("explain_no_grad: names the reason and the op that cuts the path", "[checker]") {
  tg::Tensor a = leaf({3}, 40);
  tg::Tensor b = leaf({3}, 41);
  tg::Tensor c = leaf({3}, 42);
  tg::Tensor cut;
  {
    tg::NoGradGuard no_grad;
    cut = tg::exp(b);
  }
  tg::Tensor out = tg::sum(a * cut + c.detach());
  CHECK_THAT(tg::explain_no_grad(out, a), Contains("does get a gradient"));
  CHECK_THAT(tg::explain_no_grad(out, b), Contains("exp under a NoGradGuard") && Contains("mul"));
  CHECK_THAT(tg::explain_no_grad(out, c), Contains("detached") && Contains("add"));
  tg::Tensor unrelated = leaf({3}, 43);
  CHECK_THAT(tg::explain_no_grad(out, unrelated), Contains("no path"));
  CHECK_THAT(tg::explain_no_grad(out, tg::from_vector(std::vector<std::int64_t>{1}, {1})),
             Contains("integer"));
  tg::Tensor mid = a * 2.0;
  tg::Tensor out2 = tg::sum(mid);
  CHECK_THAT(tg::explain_no_grad(out2, mid), Contains("not a leaf"));
  tg::Tensor late = tg::testing::random_tensor({3}, 44);
  tg::Tensor out3 = tg::sum(a * late);
  late.set_requires_grad(true);
  CHECK_THAT(tg::explain_no_grad(out3, late), Contains("did not require grad yet"));
}

TEST_CASE("check_graph: in a gradient-penalty graph, order 2 names the op and the order",
          "[checker][higher-order]") {
  const tg::Tensor target = tg::from_vector(std::vector<std::int64_t>{1, 0, 2}, {3});
  const tg::Tensor w = leaf({3, 4}, 50, -0.5, 0.5);
  for (bool forgetful : {false, true}) {
    tg::Tensor total;
    {
      // The loss, and the penalty ||dL/dx||² recorded with create_graph: every node of
      // both (the VJPs' ops too) keeps its inputs.
      tg::RecordInputsGuard keep;
      const tg::Tensor x = leaf({3, 4}, 51);
      tg::Tensor h = tg::tanh(x);
      h = forgetful ? tg::apply(tg::testing::ForgetfulSquare{}, {h}) : h * h;
      const tg::Tensor loss = tg::cross_entropy(tg::linear(h, w), target);
      const auto gx = tg::grad({loss}, {x}, {}, {.create_graph = true});
      total = loss + tg::sum(gx[0] * gx[0]);
    }
    const auto first = tg::check_graph(total);
    INFO(first.to_string());
    CHECK(first.passed);  // every VJP is right to first order
    const auto second = tg::check_graph(total, {}, 2);
    INFO(second.to_string());
    if (!forgetful) {
      CHECK(second.passed);
      CHECK_THAT(second.to_string(), Contains("to the second order"));
    } else {
      CHECK(second.failing_ops() == std::vector<std::string>{"forgetful_square"});
      REQUIRE(second.first_failure() != nullptr);
      CHECK(second.first_failure()->wrong_order() == 2);
      CHECK_THAT(second.to_string(), Contains("forgetful_square") && Contains("(second order)"));
    }
  }
  CHECK_FALSE(tg::check_graph(tg::sum(w * 2.0), {}, 3).error.empty());
}
