// Adding an op from user code: softsign(x) = x / (1 + |x|), with its VJP
// grad_x = grad_out / (1 + |x|)². It is registered with sample inputs, used in a small
// network, trained a few steps and gradchecked. Its VJP is written with public ops, so it is
// also twice differentiable, which check_op verifies too. Then a twin with a deliberately wrong VJP
// is caught by gradcheck and localised inside the network by check_graph.
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

namespace {

tg::Tensor softsign(const tg::Tensor& x, bool wrong_vjp = false);

struct Softsign {
  static constexpr std::string_view name = "softsign";
  bool wrong_vjp = false;  // for the demonstration below: forgets the square

  tg::TensorMeta infer(std::span<const tg::Tensor> in) const {
    if (in.size() != 1 || !in[0].defined() || !tg::is_floating(in[0].dtype())) {
      throw tg::ValueError("softsign: expects one f32 or f64 tensor");
    }
    return in[0].meta();
  }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    const tg::Tensor& x = in[0];
    ctx.save(x);
    return x / (tg::abs(x) + 1.0);
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& grad_out) {
    const tg::Tensor d = tg::abs(ctx.saved(0)) + 1.0;
    return {wrong_vjp ? grad_out / d : grad_out / (d * d)};
  }
  std::string attributes() const { return wrong_vjp ? "wrong_vjp=true" : ""; }
  static std::vector<tg::Sample> samples() {
    tg::manual_seed(5);
    tg::Tensor x = tg::uniform({3, 4}, -4, 4, tg::DType::f64).set_requires_grad(true);
    return {{"[3, 4]", {x}, [](const std::vector<tg::Tensor>& in) { return softsign(in[0]); }}};
  }
};

tg::Tensor softsign(const tg::Tensor& x, bool wrong_vjp) {
  return tg::apply(Softsign{wrong_vjp}, {x});
}

/// A two-layer classifier with softsign in the middle.
tg::Tensor net(const tg::Tensor& x, const std::vector<tg::Tensor>& p, bool wrong_vjp = false) {
  return tg::linear(softsign(tg::linear(x, p[0], p[1]), wrong_vjp), p[2], p[3]);
}

}  // namespace

int main() {
  tg::register_op<Softsign>();  // now tapegrad-check style sweeps see it too

  // 1. The op's own samples through gradcheck and the contract checks.
  const tg::OpCheckReport contract = tg::check_op(tg::find_op("softsign"));
  fmt::print("{}\n", contract.to_string(true));

  // 2. Train a few steps on a toy problem: class = whether x0 + x1 > 0.
  tg::manual_seed(1);
  const tg::Tensor x = tg::randn({32, 2}, tg::DType::f64);
  std::vector<std::int64_t> labels;
  for (std::int64_t i = 0; i < 32; ++i) labels.push_back(x.at({i, 0}) + x.at({i, 1}) > 0 ? 1 : 0);
  const tg::Tensor target = tg::from_vector(labels, {32});
  std::vector<tg::Tensor> params = {
      (tg::randn({8, 2}, tg::DType::f64) * 0.5).detach().set_requires_grad(true),
      tg::zeros({8}, tg::DType::f64).set_requires_grad(true),
      (tg::randn({2, 8}, tg::DType::f64) * 0.5).detach().set_requires_grad(true),
      tg::zeros({2}, tg::DType::f64).set_requires_grad(true)};
  double first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    tg::Tensor loss = tg::cross_entropy(net(x, params), target);
    loss.backward();
    (step == 0 ? first : last) = loss.item<double>();
    tg::NoGradGuard no_grad;
    for (auto& p : params) {
      p.add_(p.grad(), -0.5);
      p.zero_grad();
    }
  }
  fmt::print("training: loss {:.4f} -> {:.4f}\n", first, last);

  // 3. gradcheck the whole network with respect to every parameter.
  auto whole = [&](const std::vector<tg::Tensor>& p) {
    return tg::cross_entropy(net(x, p), target);
  };
  const tg::GradcheckReport good = tg::gradcheck(whole, params);
  fmt::print("{}\n", good);

  // 4. A wrong VJP: gradcheck fails, check_graph names the op.
  auto wrong = [&](const std::vector<tg::Tensor>& p) {
    return tg::cross_entropy(net(x, p, true), target);
  };
  const tg::GradcheckReport bad = tg::gradcheck(wrong, params);
  fmt::print("\nwith a wrong softsign VJP:\n{}\n", bad);
  tg::Tensor loss;
  {
    tg::RecordInputsGuard keep;  // nodes keep their inputs so each can be re-checked
    loss = wrong(params);
  }
  const tg::GraphCheckReport where = tg::check_graph(loss);
  fmt::print("\n{}\n", where);

  const bool ok = contract.passed() && last < first * 0.5 && good.passed && !bad.passed &&
                  where.failing_ops() == std::vector<std::string>{"softsign"};
  fmt::print("\ncustom_op: {}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
