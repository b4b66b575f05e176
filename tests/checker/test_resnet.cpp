// The checker on a whole ResNet-18 (width 8, batch 4 of 3×32×32, train-mode batch norm):
// gradcheck with respect to the stem conv weight passes at the default options in every
// mode although a step in that weight moves every ReLU downstream, and check_graph names a
// mutated residual add alone.
#include <chrono>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"
#include "support/resnet.hpp"

namespace tg = tapegrad;
using tapegrad::testing::ResNet18;

namespace {

/// a + b whose VJP for b is scaled by 1 + 3e-4: a wrong op hidden in one block.
struct ScaledResidualAdd {
  static constexpr std::string_view name = "residual_add";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0] + in[1]; }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) {
    return {g * 1.0, g * (1 + 3e-4)};
  }
};

struct Fixture {
  ResNet18 net{8, 500};
  tg::Tensor x = tg::testing::random_tensor({4, 3, 32, 32}, 600);
  tg::Tensor target = tg::testing::i64({3, 7, 0, 9}, {4});

  tg::Tensor loss(const std::vector<tg::Tensor>& p) const {
    return tg::cross_entropy(net.forward(x, p), target);
  }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("ResNet-18: gradcheck of the stem conv weight at the defaults, every mode",
          "[checker][resnet]") {
  const Fixture f;
  tg::Tensor stem = tg::testing::copy_values(f.net.params[0]).set_requires_grad(true);
  auto fn = [&f](const std::vector<tg::Tensor>& in) {
    std::vector<tg::Tensor> p = f.net.params;
    p[0] = in[0];
    return f.loss(p);
  };
  for (auto mode : {tg::GradcheckMode::elementwise, tg::GradcheckMode::full,
                    tg::GradcheckMode::fast}) {
    const auto start = std::chrono::steady_clock::now();
    const auto r = tg::gradcheck(fn, {stem}, {.mode = mode});
    const double took = seconds_since(start);
    INFO(r.to_string());
    WARN(fmt::format("ResNet-18 gradcheck ({}): {:.1f} s; {} steps retried, {} kinks",
                     static_cast<int>(mode), took, r.inputs[0].retried, r.inputs[0].kinks));
    CHECK(r.passed);
    CHECK(r.inputs[0].kinks == 0);
  }
}

TEST_CASE("ResNet-18: check_graph names one mutated op alone", "[checker][resnet]") {
  Fixture f;
  f.net.odd_add = [](const tg::Tensor& a, const tg::Tensor& b) {
    return tg::apply(ScaledResidualAdd{}, {a, b});
  };
  std::vector<tg::Tensor> p;
  for (const auto& t : f.net.params) p.push_back(tg::testing::copy_values(t).set_requires_grad(true));
  // A mutated add in the first downsampling block, then a clean network.
  for (int odd : {2, -1}) {
    f.net.odd_block = odd;
    tg::Tensor loss;
    {
      tg::RecordInputsGuard keep;
      loss = f.loss(p);
    }
    const auto start = std::chrono::steady_clock::now();
    const auto report = tg::check_graph(loss, {.mode = tg::GradcheckMode::fast});
    WARN(fmt::format("ResNet-18 check_graph (fast, {} ops): {:.1f} s", report.nodes.size(),
                     seconds_since(start)));
    INFO(report.to_string());
    if (odd < 0) {
      CHECK(report.passed);
    } else {
      CHECK(report.failing_ops() == std::vector<std::string>{"residual_add"});
    }
  }
}
