// libtorch's twin of gradient_penalty.cpp: loss = cross_entropy + λ·‖∂L_ce/∂x‖² (λ = 0.1),
// ∂L_ce/∂x from torch::autograd::grad with create_graph, backward of the total loss, SGD with
// momentum 0.9, on lenet_step_torch.cpp's model, init and data.
//
// Agreement: libtorch's generator is not tapegrad's, so the timed model differs between the
// twins; both programs also evaluate one step on the same shared init (splitmix64, the code is
// the same in both files) in f32 and f64 and print L_ce, the penalty, the total loss,
// ‖∂total/∂θ‖ and ‖∂penalty/∂θ‖ to stderr, to be compared with gradient_penalty.cpp's lines.
// BENCH_THREADS=1 (or 2) times only that thread count.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "harness.hpp"

namespace F = torch::nn::functional;

namespace {

constexpr double kLambda = 0.1;

torch::Tensor lenet(const torch::Tensor& x, const std::vector<torch::Tensor>& p) {
  auto h = F::max_pool2d(torch::relu(F::conv2d(x, p[0], F::Conv2dFuncOptions().bias(p[1]).padding(2))), F::MaxPool2dFuncOptions(2));
  h = F::max_pool2d(torch::relu(F::conv2d(h, p[2], F::Conv2dFuncOptions().bias(p[3]))), F::MaxPool2dFuncOptions(2));
  h = torch::relu(F::linear(h.flatten(1), p[4], p[5]));
  h = torch::relu(F::linear(h, p[6], p[7]));
  return F::linear(h, p[8], p[9]);
}

struct Losses {
  torch::Tensor ce, penalty, total;
};

/// x must require grad.
Losses gradient_penalty_loss(const torch::Tensor& x, const torch::Tensor& y,
                             const std::vector<torch::Tensor>& p) {
  const auto ce = F::cross_entropy(lenet(x, p), y);
  const auto gx = torch::autograd::grad({ce}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  const auto penalty = (gx[0] * gx[0]).sum();
  return {ce, penalty, ce + penalty * kLambda};
}

// ---- the shared init of the agreement check (the same code as in gradient_penalty.cpp) ------

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

const std::vector<std::vector<int64_t>> kShapes = {{6, 1, 5, 5}, {6},  {16, 6, 5, 5}, {16}, {120, 400},
                                                   {120},        {84, 120}, {84},     {10, 84}, {10}};

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

struct SharedInit {
  std::vector<std::vector<double>> params;  // ±1/sqrt(fan_in), a bias takes its weight's fan_in
  std::vector<double> x;                    // uniform ±sqrt(3) (unit variance), [64, 1, 28, 28]
  std::vector<int64_t> y;                   // [64] in 0..9
};

SharedInit shared_init() {
  SharedInit s;
  SplitMix64 rp{20261127};
  for (std::size_t i = 0; i < kShapes.size(); ++i) {
    const auto& w = kShapes[i - i % 2];
    const double bound = 1.0 / std::sqrt(static_cast<double>(numel(w) / w[0]));
    std::vector<double> v(static_cast<std::size_t>(numel(kShapes[i])));
    for (double& e : v) e = rp.symmetric() * bound;
    s.params.push_back(std::move(v));
  }
  SplitMix64 rx{7};
  s.x.resize(64 * 28 * 28);
  for (double& e : s.x) e = rx.symmetric() * std::sqrt(3.0);
  SplitMix64 ry{11};
  s.y.resize(64);
  for (auto& e : s.y) e = static_cast<int64_t>(ry.next() % 10);
  return s;
}

struct Figures {
  double ce, penalty, total, grad_norm, penalty_grad_norm;
};

/// One step's losses, ‖∂total/∂θ‖ and ‖∂penalty/∂θ‖ (the second-order part alone: the
/// penalty is ~1e-5, so it hardly moves the total) on the shared init, in `dtype` (no update).
Figures shared_figures(const SharedInit& s, torch::Dtype dtype) {
  std::vector<torch::Tensor> p;
  for (std::size_t i = 0; i < kShapes.size(); ++i)
    p.push_back(torch::tensor(s.params[i], torch::kDouble).reshape(kShapes[i]).to(dtype).set_requires_grad(true));
  const auto x = torch::tensor(s.x, torch::kDouble).reshape({64, 1, 28, 28}).to(dtype).set_requires_grad(true);
  const auto y = torch::tensor(s.y, torch::kLong);
  const Losses l = gradient_penalty_loss(x, y, p);
  const auto dp = torch::autograd::grad({l.penalty}, p, {}, /*retain_graph=*/true);
  l.total.backward();
  double sq = 0, sq_penalty = 0;
  for (const auto& t : p) sq += t.grad().to(torch::kDouble).square().sum().item<double>();
  for (const auto& t : dp) sq_penalty += t.to(torch::kDouble).square().sum().item<double>();
  return {l.ce.item<double>(), l.penalty.item<double>(), l.total.item<double>(), std::sqrt(sq),
          std::sqrt(sq_penalty)};
}

void print_figures(const char* what, const Figures& f) {
  std::fprintf(stderr,
               "gradient_penalty libtorch %s: L_ce %.9g penalty %.9g total %.9g |dtotal/dtheta| "
               "%.9g |dpenalty/dtheta| %.9g\n",
               what, f.ce, f.penalty, f.total, f.grad_norm, f.penalty_grad_norm);
}

}  // namespace

int main() {
  {
    const SharedInit s = shared_init();
    print_figures("shared init f32", shared_figures(s, torch::kFloat));
    print_figures("shared init f64", shared_figures(s, torch::kDouble));
  }

  torch::manual_seed(0);
  auto param = [](std::vector<int64_t> s, double fan_in) {
    return (torch::rand(s) * 2 - 1).div(std::sqrt(fan_in)).set_requires_grad(true);
  };
  std::vector<torch::Tensor> p{param({6, 1, 5, 5}, 25),   param({6}, 25),   param({16, 6, 5, 5}, 150),
                               param({16}, 150),          param({120, 400}, 400), param({120}, 400),
                               param({84, 120}, 120),     param({84}, 120), param({10, 84}, 84),
                               param({10}, 84)};
  torch::optim::SGD opt(p, torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto x = torch::randn({64, 1, 28, 28}).set_requires_grad(true);  // for ∂L_ce/∂x
  const auto y = torch::randint(0, 10, {64});
  {  // the first step's losses on lenet_step_torch's init (and the same values in f64)
    const Losses l = gradient_penalty_loss(x, y, p);
    std::vector<torch::Tensor> p64;
    for (const auto& t : p) p64.push_back(t.detach().to(torch::kDouble).set_requires_grad(true));
    const auto x64 = x.detach().to(torch::kDouble).set_requires_grad(true);
    const Losses l64 = gradient_penalty_loss(x64, y, p64);
    std::fprintf(stderr,
                 "gradient_penalty libtorch first step (lenet_step init): total %.9g penalty %.9g "
                 "(f64: %.9g %.9g)\n",
                 l.total.item<double>(), l.penalty.item<double>(), l64.total.item<double>(),
                 l64.penalty.item<double>());
  }
  auto step = [&] {
    opt.zero_grad();
    gradient_penalty_loss(x, y, p).total.backward();
    opt.step();
    x.mutable_grad().reset();  // backward also reached x; drop it (not part of the update)
  };
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    const auto s = bench::measure(step, 50);
    bench::print("libtorch", "lenet_gradient_penalty_step_b64", threads, s);
  }
}
