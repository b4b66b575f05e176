// One LeNet-5 gradient-penalty training step at batch 64, 1x28x28, f32: the model, init and
// data of lenet_step.cpp, loss = cross_entropy(logits, y) + λ·‖∂L_ce/∂x‖² (λ = 0.1) with
// ∂L_ce/∂x from grad(..., {.create_graph = true}), backward of the total loss, SGD with
// momentum 0.9 (as lenet_step). Twin: gradient_penalty_torch.cpp.
//
// Agreement with the twin: the two libraries' random generators differ, so the timed model
// (lenet_step's init) is not the same in both. Before timing, both programs therefore also
// evaluate one step on a shared init (splitmix64 streams, as the generator of
// tests/fixtures/make_second_order_reference.py: integer steps and correctly rounded
// operations only, so every library gets the same numbers) in f32 and in f64, and print
// L_ce, the penalty, the total loss, ‖∂total/∂θ‖ and ‖∂penalty/∂θ‖ to stderr; this program
// also prints the relative difference of its f32 figures from its own f64 computation.
// Compare the lines "shared init" of both programs (1e-4 relative is the bar).
//
// BENCH_THREADS=1 (or 2) times only that thread count, e.g. under perf record.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"
#include "lenet.hpp"

namespace tg = tapegrad;

namespace {

constexpr double kLambda = 0.1;

struct Losses {
  tg::Tensor ce, penalty, total;
};

/// x must require grad.
Losses gradient_penalty_loss(const tg::Tensor& x, const tg::Tensor& y,
                             const std::vector<tg::Tensor>& p) {
  const tg::Tensor ce = tg::cross_entropy(bench::lenet_logits(x, p), y);
  const std::vector<tg::Tensor> gx = tg::grad({ce}, {x}, {}, {.create_graph = true});
  const tg::Tensor penalty = tg::sum(gx[0] * gx[0]);
  return {ce, penalty, ce + penalty * kLambda};
}

// ---- the shared init of the agreement check (the twin has the same code) -------------------

struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    state += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [-1, 1).
  double symmetric() { return 2.0 * (static_cast<double>(next() >> 11) * 0x1p-53) - 1.0; }
};

const std::vector<tg::Shape> kShapes = {{6, 1, 5, 5}, {6},  {16, 6, 5, 5}, {16}, {120, 400},
                                        {120},        {84, 120}, {84},     {10, 84}, {10}};

struct SharedInit {
  std::vector<std::vector<double>> params;  // ±1/sqrt(fan_in), a bias takes its weight's fan_in
  std::vector<double> x;                    // uniform ±sqrt(3) (unit variance), [64, 1, 28, 28]
  std::vector<std::int64_t> y;              // [64] in 0..9
};

SharedInit shared_init() {
  SharedInit s;
  SplitMix64 rp{20261127};
  for (std::size_t i = 0; i < kShapes.size(); ++i) {
    const tg::Shape& w = kShapes[i - i % 2];
    const double bound = 1.0 / std::sqrt(static_cast<double>(w.numel() / w[0]));
    std::vector<double> v(static_cast<std::size_t>(kShapes[i].numel()));
    for (double& e : v) e = rp.symmetric() * bound;
    s.params.push_back(std::move(v));
  }
  SplitMix64 rx{7};
  s.x.resize(64 * 28 * 28);
  for (double& e : s.x) e = rx.symmetric() * std::sqrt(3.0);
  SplitMix64 ry{11};
  s.y.resize(64);
  for (auto& e : s.y) e = static_cast<std::int64_t>(ry.next() % 10);
  return s;
}

struct Figures {
  double ce, penalty, total, grad_norm, penalty_grad_norm;
};

/// One step's losses, ‖∂total/∂θ‖ and ‖∂penalty/∂θ‖ (the second-order part alone: the
/// penalty is ~1e-5, so it hardly moves the total) on the shared init, in `dtype` (no update).
Figures shared_figures(const SharedInit& s, tg::DType dtype) {
  std::vector<tg::Tensor> p;
  for (std::size_t i = 0; i < kShapes.size(); ++i)
    p.push_back(tg::from_vector(s.params[i], kShapes[i], dtype).set_requires_grad(true));
  tg::Tensor x = tg::from_vector(s.x, {64, 1, 28, 28}, dtype).set_requires_grad(true);
  const tg::Tensor y = tg::from_vector(s.y, {64});
  const Losses l = gradient_penalty_loss(x, y, p);
  const std::vector<tg::Tensor> dp = tg::grad({l.penalty}, p, {}, /*retain_graph=*/true);
  l.total.backward();
  double sq = 0, sq_penalty = 0;
  for (const auto& t : p)
    for (double g : t.grad().to_vector<double>()) sq += g * g;
  for (const auto& t : dp)
    for (double g : t.to_vector<double>()) sq_penalty += g * g;
  return {l.ce.item<double>(), l.penalty.item<double>(), l.total.item<double>(), std::sqrt(sq),
          std::sqrt(sq_penalty)};
}

void print_figures(const char* what, const Figures& f) {
  std::fprintf(stderr,
               "gradient_penalty tapegrad %s: L_ce %.9g penalty %.9g total %.9g |dtotal/dtheta| "
               "%.9g |dpenalty/dtheta| %.9g\n",
               what, f.ce, f.penalty, f.total, f.grad_norm, f.penalty_grad_norm);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

}  // namespace

int main() {
  {
    const SharedInit s = shared_init();
    const Figures f32 = shared_figures(s, tg::DType::f32);
    const Figures f64 = shared_figures(s, tg::DType::f64);
    print_figures("shared init f32", f32);
    print_figures("shared init f64", f64);
    const double worst = std::max({rel(f32.ce, f64.ce), rel(f32.penalty, f64.penalty),
                                   rel(f32.total, f64.total), rel(f32.grad_norm, f64.grad_norm),
                                   rel(f32.penalty_grad_norm, f64.penalty_grad_norm)});
    std::fprintf(stderr, "gradient_penalty tapegrad shared init: f32 vs f64 max relative difference "
                         "%.2e (%s 1e-4)\n", worst, worst <= 1e-4 ? "within" : "NOT within");
  }

  std::vector<tg::Tensor> p = bench::lenet_params();
  std::vector<tg::Tensor> velocity;
  tg::Tensor x = tg::randn({64, 1, 28, 28});
  x.set_requires_grad(true);  // for ∂L_ce/∂x
  const tg::Tensor y = tg::randint(0, 10, {64});
  {  // the first step's losses on lenet_step's init (its f64 twin: the same values in f64)
    const Losses l = gradient_penalty_loss(x, y, p);
    std::vector<tg::Tensor> p64;
    for (const auto& t : p) p64.push_back(t.detach().to(tg::DType::f64).set_requires_grad(true));
    tg::Tensor x64 = x.detach().to(tg::DType::f64).set_requires_grad(true);
    const Losses l64 = gradient_penalty_loss(x64, y, p64);
    std::fprintf(stderr,
                 "gradient_penalty tapegrad first step (lenet_step init): total %.9g penalty %.9g "
                 "(f64: %.9g %.9g)\n",
                 l.total.item<double>(), l.penalty.item<double>(), l64.total.item<double>(),
                 l64.penalty.item<double>());
  }
  auto step = [&] {
    const Losses l = gradient_penalty_loss(x, y, p);
    l.total.backward();
    bench::sgd_momentum(p, velocity);
    x.set_grad(tg::Tensor());  // backward also reached x; drop it (not part of the update)
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    const auto s = bench::measure(step, 50);
    bench::print("tapegrad", "lenet_gradient_penalty_step_b64", threads, s);
  }
}
