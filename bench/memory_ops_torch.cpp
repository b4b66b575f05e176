// libtorch's twin of memory_ops.cpp: the same rows, shapes and timing, so bench/run.sh can
// print the ratio measured in one run. Built only when Debian's libtorch-dev is installed.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace F = torch::nn::functional;

namespace {

struct Inputs {
  torch::Tensor x, y, p;       // [4096, 4096]: randn, randn, rand + 0.5 (positive)
  torch::Tensor top, bottom;   // [2048, 4096] halves for cat along dim 0
  torch::Tensor left, right;   // [4096, 2048] halves for cat along dim 1
  torch::Tensor img;           // [16, 64, 128, 128] for pad
};

struct Case {
  const char* name;
  std::function<torch::Tensor(const Inputs&)> f;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"clamp", [](const Inputs& i) { return torch::clamp(i.x, -0.5, 0.5); }},
      {"minimum", [](const Inputs& i) { return torch::minimum(i.x, i.y); }},
      {"maximum", [](const Inputs& i) { return torch::maximum(i.x, i.y); }},
      {"pow_tensor", [](const Inputs& i) { return torch::pow(i.p, i.y); }},
      {"log1p", [](const Inputs& i) { return torch::log1p(i.p); }},
      {"expm1", [](const Inputs& i) { return torch::expm1(i.x); }},
      {"sin", [](const Inputs& i) { return torch::sin(i.x); }},
      {"cos", [](const Inputs& i) { return torch::cos(i.x); }},
      {"erf", [](const Inputs& i) { return torch::erf(i.x); }},
      {"rsqrt", [](const Inputs& i) { return torch::rsqrt(i.p); }},
      {"gelu", [](const Inputs& i) { return F::gelu(i.x, F::GELUFuncOptions().approximate("none")); }},
      {"gelu_tanh", [](const Inputs& i) { return F::gelu(i.x, F::GELUFuncOptions().approximate("tanh")); }},
      {"silu", [](const Inputs& i) { return F::silu(i.x); }},
      {"leaky_relu", [](const Inputs& i) { return F::leaky_relu(i.x, F::LeakyReLUFuncOptions().negative_slope(0.01)); }},
      {"elu", [](const Inputs& i) { return F::elu(i.x, F::ELUFuncOptions().alpha(1.0)); }},
      {"softplus", [](const Inputs& i) { return F::softplus(i.x, F::SoftplusFuncOptions().beta(1.0).threshold(20.0)); }},
      {"hardtanh", [](const Inputs& i) { return F::hardtanh(i.x, F::HardtanhFuncOptions().min_val(-1.0).max_val(1.0)); }},
      {"log_sigmoid", [](const Inputs& i) { return F::logsigmoid(i.x); }},
      {"glu", [](const Inputs& i) { return F::glu(i.x, F::GLUFuncOptions(-1)); }},
      {"cat_dim0", [](const Inputs& i) { return torch::cat({i.top, i.bottom}, 0); }},
      {"cat_dim1", [](const Inputs& i) { return torch::cat({i.left, i.right}, 1); }},
      {"pad_constant", [](const Inputs& i) { return F::pad(i.img, F::PadFuncOptions({2, 2, 2, 2}).mode(torch::kConstant).value(0.0)); }},
      {"pad_reflect", [](const Inputs& i) { return F::pad(i.img, F::PadFuncOptions({2, 2, 2, 2}).mode(torch::kReflect)); }},
  };
  return c;
}

}  // namespace

int main() {
  torch::manual_seed(0);
  Inputs in{torch::randn({4096, 4096}), torch::randn({4096, 4096}), torch::rand({4096, 4096}) + 0.5,
            torch::randn({2048, 4096}), torch::randn({2048, 4096}), torch::randn({4096, 2048}),
            torch::randn({4096, 2048}), torch::randn({16, 64, 128, 128})};
  constexpr int kReps = 5, kWarmup = 1;
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    for (const auto& c : cases()) {
      const std::string name = std::string("mem.") + c.name;
      if (!bench::wanted(name)) continue;
      for (torch::Tensor* t : {&in.x, &in.y, &in.p, &in.top, &in.bottom, &in.left, &in.right, &in.img})
        t->set_requires_grad(false);
      auto fwd = bench::measure([&] { torch::NoGradGuard g; (void)c.f(in); }, kReps, kWarmup, 0.0);
      bench::print("libtorch", name + ".fwd", threads, fwd);
      for (torch::Tensor* t : {&in.x, &in.y, &in.p, &in.top, &in.bottom, &in.left, &in.right, &in.img}) {
        t->set_requires_grad(true);
        // Each input starts from a gradient of its own, as after zero_grad in a training loop:
        // a backward then adds into it. (Left undefined, libtorch takes the first incoming
        // gradient as the leaf's grad: for cat along dim 0 a view of `seed`, and every later
        // repetition added that memory to itself.)
        t->mutable_grad() = torch::zeros_like(*t);
      }
      const auto seed = torch::ones(c.f(in).sizes());
      auto both = bench::measure([&] { c.f(in).backward(seed); }, kReps, kWarmup, 0.0);
      bench::print("libtorch", name + ".fwd_bwd", threads, both);
    }
  }
}
