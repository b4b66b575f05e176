// The checker never calls a correct gradient wrong, and still catches every wrong one:
// ties in every mode, fast mode on large outputs (the rounding of an n-term projection),
// steps across kinks retried smaller or one-sided, kinks no step avoids, and mutated VJPs
// (scaled by 1 + 3e-4, one element dropped, a transposed operand) in every mode.
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;
using tapegrad::testing::leaf;

namespace {

constexpr tg::GradcheckMode kModes[] = {tg::GradcheckMode::elementwise, tg::GradcheckMode::full,
                                        tg::GradcheckMode::fast};

/// A leaf whose values are a ReLU's output: about half exact zeros, so max-pool windows
/// hold ties (all-zero windows, and zeros tied with each other).
tg::Tensor relu_output(const tg::Shape& shape, std::uint64_t seed) {
  tg::Tensor t = tg::relu(tg::testing::random_tensor(shape, seed));
  return tg::testing::copy_values(t).set_requires_grad(true);
}

enum class Mutation { none, scaled, dropped, transposed };

/// y = x·w for square w (x: [m, n], w: [n, n]), with a VJP for x that may be mutated:
/// scaled by 1 + 3e-4, one element's gradient dropped, or computed with w instead of wᵀ.
struct Mutant {
  static constexpr std::string_view name = "mutant_matmul";
  Mutation mutation = Mutation::none;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const {
    return {{in[0].size(0), in[1].size(1)}, in[0].dtype()};
  }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    ctx.save(in[1]);
    return tg::matmul(in[0], in[1]);
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    const tg::Tensor& x = ctx.saved(0);
    const tg::Tensor& w = ctx.saved(1);
    tg::Tensor gx = tg::matmul(g, mutation == Mutation::transposed ? w : tg::transpose(w, 0, 1));
    if (mutation == Mutation::scaled) gx = gx * (1 + 3e-4);
    if (mutation == Mutation::dropped) {
      auto v = gx.to_vector<double>();
      v[v.size() / 2] = 0;
      gx = tg::from_vector(v, gx.shape(), gx.dtype());
    }
    return {gx, tg::matmul(tg::transpose(x, 0, 1), g)};
  }
};

/// a + b with a VJP for a scaled by 1 + 3e-4 or with one element dropped.
struct MutantAdd {
  static constexpr std::string_view name = "mutant_add";
  Mutation mutation = Mutation::none;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0] + in[1]; }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) {
    tg::Tensor ga = g * 1.0;
    if (mutation == Mutation::scaled) ga = g * (1 + 3e-4);
    if (mutation == Mutation::dropped) {
      auto v = g.to_vector<double>();
      v[v.size() / 3] = 0;
      ga = tg::from_vector(v, g.shape(), g.dtype());
    }
    return {ga, g * 1.0};
  }
};

/// A kinked op that declares `kinks` but cannot say which branch it took, written with
/// raw loops (no built-in op inside whose branches the checker could watch):
/// f(x) = x for x > 0, -2x otherwise; f'(0) = 0.
struct UserVee {
  static constexpr std::string_view name = "user_vee";
  static constexpr std::string_view kinks = "x = 0";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    auto v = in[0].to_vector<double>();
    for (double& e : v) e = e > 0 ? e : -2 * e;
    return tg::from_vector(v, in[0].shape(), in[0].dtype());
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    const auto x = ctx.saved(0).to_vector<double>();
    auto v = g.to_vector<double>();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] *= x[i] > 0 ? 1 : (x[i] < 0 ? -2 : 0);
    return {tg::from_vector(v, g.shape(), g.dtype())};
  }
};

/// relu whose VJP claims the gradient 1 at x = 0 (PyTorch's and tapegrad's is 0).
struct ReluGradOneAtZero {
  static constexpr std::string_view name = "relu_grad_one_at_zero";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    return tg::relu(in[0]);
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    const auto v = ctx.saved(0).to_vector<double>();
    auto gv = g.to_vector<double>();
    for (std::size_t i = 0; i < gv.size(); ++i) gv[i] *= v[i] >= 0 ? 1 : 0;
    return {tg::from_vector(gv, g.shape(), g.dtype())};
  }
};

}  // namespace

TEST_CASE("false alarms: max_pool2d over exact ties passes in every mode", "[checker][kinks]") {
  const tg::Tensor x = relu_output({2, 3, 6, 8}, 101);
  for (const tg::MaxPool2dOptions& opt :
       {tg::MaxPool2dOptions{.kernel_size = {2, 2}},
        tg::MaxPool2dOptions{.kernel_size = {3, 3}, .stride = {1, 1}, .padding = {1, 1}}}) {
    auto fn = [opt](const std::vector<tg::Tensor>& in) { return tg::max_pool2d(in[0], opt); };
    for (auto mode : kModes) {
      const auto r = tg::gradcheck(fn, {x}, {.mode = mode});
      INFO(r.to_string());
      CHECK(r.passed);
      // Element by element one side of a tie crosses nothing; a random direction (fast
      // mode) breaks ties on both sides, a kink no step avoids.
      const auto& in = r.inputs[0];
      CHECK(in.retried + in.kinks > 0);
      CHECK((in.retried > 0 ? in.retried_op : in.kink_op) == "max_pool2d (ties within a window)");
    }
  }
}

TEST_CASE("false alarms: fast mode on adds of 16,384 and 65,536 elements", "[checker][rounding]") {
  for (std::int64_t n : {16384, 65536}) {
    INFO(n);
    const tg::Tensor a = leaf({n}, 102);
    const tg::Tensor b = leaf({n}, 103);
    auto add = [](const std::vector<tg::Tensor>& in) { return in[0] + in[1]; };
    const auto r = tg::gradcheck(add, {a, b}, {.mode = tg::GradcheckMode::fast});
    INFO(r.to_string());
    CHECK(r.passed);
    CHECK(r.inputs[0].rechecked_probes == 0);
    CHECK(r.max_rel_error() < 1e-6);
    // Still sensitive: a VJP scaled by 1 + 3e-4, or one that drops an element's gradient.
    for (Mutation m : {Mutation::scaled, Mutation::dropped}) {
      auto bad = [m](const std::vector<tg::Tensor>& in) {
        return tg::apply(MutantAdd{m}, {in[0], in[1]});
      };
      const auto rb = tg::gradcheck(bad, {a, b}, {.mode = tg::GradcheckMode::fast});
      INFO(rb.to_string());
      CHECK_FALSE(rb.passed);
      CHECK_FALSE(rb.inputs[0].passed());
      CHECK(rb.inputs[1].passed());
    }
  }
}

TEST_CASE("false alarms: check_graph in fast mode on relu -> max_pool2d", "[checker][kinks]") {
  const tg::Tensor x = leaf({2, 3, 8, 8}, 104);
  const tg::Tensor w = leaf({2, 3, 4, 4}, 105);
  for (auto mode : kModes) {
    tg::Tensor loss;
    {
      tg::RecordInputsGuard keep;
      loss = tg::sum(tg::max_pool2d(tg::relu(x), {.kernel_size = {2, 2}}) * w);
    }
    const auto report = tg::check_graph(loss, {.mode = mode});
    INFO(report.to_string());
    CHECK(report.passed);
    CHECK(report.nodes.size() == 4);
  }
}

TEST_CASE("sensitivity: every mutated VJP fails in every mode", "[checker][mutations]") {
  // Element [2, 0] (the one Mutation::dropped drops) is positive, so the gradient dropped
  // there also matters behind a ReLU.
  auto values = tg::testing::random_values(20, 106);
  values[10] = 0.7;
  const tg::Tensor x = tg::testing::f64(values, {4, 5}).set_requires_grad(true);
  const tg::Tensor w = leaf({5, 5}, 107);
  for (auto mode : kModes) {
    for (Mutation m : {Mutation::none, Mutation::scaled, Mutation::dropped, Mutation::transposed}) {
      auto fn = [m](const std::vector<tg::Tensor>& in) {
        return tg::tanh(tg::apply(Mutant{m}, {in[0], in[1]}));
      };
      const auto r = tg::gradcheck(fn, {x, w}, {.mode = mode});
      INFO(fmt::format("mode {}, mutation {}\n{}", static_cast<int>(mode), static_cast<int>(m),
                       r.to_string()));
      CHECK(r.passed == (m == Mutation::none));
      CHECK(r.inputs[0].passed() == (m == Mutation::none));
      CHECK(r.inputs[1].passed());
      // Behind a ReLU (kinks the checker watches) the verdict is the same.
      auto behind_relu = [m](const std::vector<tg::Tensor>& in) {
        return tg::apply(Mutant{m}, {tg::relu(in[0]), in[1]});
      };
      const auto rr = tg::gradcheck(behind_relu, {x, w}, {.mode = mode});
      INFO(rr.to_string());
      CHECK(rr.inputs[0].passed() == (m == Mutation::none));
    }
  }
}

TEST_CASE("kinks: a step across a kink is retried, and only an unavoidable kink is excused",
          "[checker][kinks]") {
  const tg::Tensor x = tg::testing::f64({0.0, 0.5, -0.5, 1.0, 3e-7, -3e-7}, {6}).set_requires_grad(true);
  for (auto mode : kModes) {
    // relu at 0 and at ±3e-7 (inside the first step): a one-sided or smaller step crosses
    // nothing, so these are compared, not excused.
    const auto r = tg::gradcheck([](const auto& in) { return tg::relu(in[0]); }, {x}, {.mode = mode});
    INFO(r.to_string());
    CHECK(r.passed);
    CHECK(r.inputs[0].kinks == 0);
    CHECK(r.inputs[0].retried > 0);
    CHECK_THAT(r.to_string(), Contains("crossed a kink of relu (x = 0)"));
    // |x| at 0: both sides change branch at every step, but the central difference is the
    // VJP's 0, so nothing needs excusing.
    const auto ra = tg::gradcheck([](const auto& in) { return tg::abs(in[0]); }, {x}, {.mode = mode});
    INFO(ra.to_string());
    CHECK(ra.passed);
    if (mode != tg::GradcheckMode::fast) CHECK(ra.inputs[0].kinks == 0);
    // relu(x) + 2 relu(-x) at 0: slopes 1 and -2 on the two sides, both crossing at every
    // step; the VJP's 0 lies between them: a kink, excused and named.
    const auto rk = tg::gradcheck(
        [](const auto& in) { return tg::relu(in[0]) + tg::relu(-in[0]) * 2.0; }, {x}, {.mode = mode});
    INFO(rk.to_string());
    CHECK(rk.passed);
    if (mode != tg::GradcheckMode::fast) {
      CHECK(rk.inputs[0].kinks > 0);
      CHECK(rk.inputs[0].kink_op == "relu (x = 0)");
      CHECK(rk.inputs[0].kink_index == std::vector<std::int64_t>{0});
      CHECK_THAT(rk.to_string(), Contains("kink at [0]") && Contains("no smaller or one-sided step avoided"));
    }
  }
  // A kinked op without `branches` is judged from its one-sided differences alone.
  const auto ru = tg::gradcheck([](const auto& in) { return tg::apply(UserVee{}, {in[0]}); }, {x});
  INFO(ru.to_string());
  CHECK(ru.passed);
  CHECK(ru.inputs[0].kinks > 0);
  CHECK(ru.inputs[0].kink_op == "user_vee (x = 0)");
  // A wrong VJP right at a kink the checker watches is not excused: relu's gradient at 0
  // claimed to be 1 is wrong on the side that crosses nothing.
  const auto wrong = tg::gradcheck(
      [](const auto& in) { return tg::apply(ReluGradOneAtZero{}, {in[0]}); }, {x});
  INFO(wrong.to_string());
  CHECK_FALSE(wrong.passed);
  CHECK(wrong.inputs[0].worst_index == std::vector<std::int64_t>{0});
}

TEST_CASE("report: an absent optional input is shown as absent", "[checker]") {
  const tg::Tensor x = leaf({1, 2, 5, 5}, 108);
  const tg::Tensor w = leaf({3, 2, 3, 3}, 109);
  const auto r = tg::gradcheck(
      [](const auto& in) { return tg::conv2d(in[0], in[1], in[2]); }, {x, w, tg::Tensor()});
  INFO(r.to_string());
  CHECK(r.passed);
  CHECK_FALSE(r.inputs[2].defined);
  CHECK_THAT(r.to_string(), Contains("input 2: absent"));
  CHECK_THAT(r.to_string(), !Contains("not checked"));
}
