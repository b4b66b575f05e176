// tapegrad's memory-bound ops on 64 MB f32 tensors (16 Mi floats): the element-wise ops and
// activations of issue 14, cat of two 32 MB halves and pad, forward and forward+backward
// (backward with a ones upstream gradient), at 1 and 2 threads. One JSON line per figure;
// memory_ops_torch.cpp is the libtorch twin (same shapes, ops and timing).
#include <omp.h>

#include <functional>
#include <string>
#include <vector>

#include <tapegrad/tapegrad.hpp>

#include "harness.hpp"

namespace tg = tapegrad;

namespace {

struct Inputs {
  tg::Tensor x, y, p;       // [4096, 4096]: randn, randn, rand + 0.5 (positive)
  tg::Tensor top, bottom;   // [2048, 4096] halves for cat along dim 0
  tg::Tensor left, right;   // [4096, 2048] halves for cat along dim 1
  tg::Tensor img;           // [16, 64, 128, 128] for pad
};

struct Case {
  const char* name;
  std::function<tg::Tensor(const Inputs&)> f;
};

const std::vector<Case>& cases() {
  using GA = tg::GeluApproximate;
  static const std::vector<Case> c = {
      {"clamp", [](const Inputs& i) { return tg::clamp(i.x, -0.5, 0.5); }},
      {"minimum", [](const Inputs& i) { return tg::minimum(i.x, i.y); }},
      {"maximum", [](const Inputs& i) { return tg::maximum(i.x, i.y); }},
      {"pow_tensor", [](const Inputs& i) { return tg::pow(i.p, i.y); }},
      {"log1p", [](const Inputs& i) { return tg::log1p(i.p); }},
      {"expm1", [](const Inputs& i) { return tg::expm1(i.x); }},
      {"sin", [](const Inputs& i) { return tg::sin(i.x); }},
      {"cos", [](const Inputs& i) { return tg::cos(i.x); }},
      {"erf", [](const Inputs& i) { return tg::erf(i.x); }},
      {"rsqrt", [](const Inputs& i) { return tg::rsqrt(i.p); }},
      {"gelu", [](const Inputs& i) { return tg::gelu(i.x, GA::none); }},
      {"gelu_tanh", [](const Inputs& i) { return tg::gelu(i.x, GA::tanh); }},
      {"silu", [](const Inputs& i) { return tg::silu(i.x); }},
      {"leaky_relu", [](const Inputs& i) { return tg::leaky_relu(i.x, 0.01); }},
      {"elu", [](const Inputs& i) { return tg::elu(i.x, 1.0); }},
      {"softplus", [](const Inputs& i) { return tg::softplus(i.x, 1.0, 20.0); }},
      {"hardtanh", [](const Inputs& i) { return tg::hardtanh(i.x, -1.0, 1.0); }},
      {"log_sigmoid", [](const Inputs& i) { return tg::log_sigmoid(i.x); }},
      {"glu", [](const Inputs& i) { return tg::glu(i.x, -1); }},
      {"cat_dim0", [](const Inputs& i) { return tg::cat({i.top, i.bottom}, 0); }},
      {"cat_dim1", [](const Inputs& i) { return tg::cat({i.left, i.right}, 1); }},
      {"pad_constant", [](const Inputs& i) { return tg::pad(i.img, {2, 2, 2, 2}, tg::PadMode::constant, 0.0); }},
      {"pad_reflect", [](const Inputs& i) { return tg::pad(i.img, {2, 2, 2, 2}, tg::PadMode::reflect); }},
  };
  return c;
}

}  // namespace

int main() {
  Inputs in{tg::randn({4096, 4096}), tg::randn({4096, 4096}), tg::rand({4096, 4096}) + 0.5,
            tg::randn({2048, 4096}), tg::randn({2048, 4096}), tg::randn({4096, 2048}),
            tg::randn({4096, 2048}), tg::randn({16, 64, 128, 128})};
  // Few repetitions: each figure moves hundreds of MB, and one run should take minutes.
  constexpr int kReps = 5, kWarmup = 1;
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    omp_set_num_threads(threads);
    for (const auto& c : cases()) {
      const std::string name = std::string("mem.") + c.name;
      if (!bench::wanted(name)) continue;
      for (tg::Tensor* t : {&in.x, &in.y, &in.p, &in.top, &in.bottom, &in.left, &in.right, &in.img})
        t->set_requires_grad(false);
      auto fwd = bench::measure([&] { tg::NoGradGuard g; (void)c.f(in); }, kReps, kWarmup, 0.0);
      bench::print("tapegrad", name + ".fwd", threads, fwd);
      for (tg::Tensor* t : {&in.x, &in.y, &in.p, &in.top, &in.bottom, &in.left, &in.right, &in.img}) {
        t->set_requires_grad(true);
        // Each input starts from a gradient of its own, as after zero_grad in a training loop:
        // a backward then adds into it. (Left undefined, libtorch takes the first incoming
        // gradient as the leaf's grad: for cat along dim 0 a view of `seed`, and every later
        // repetition added that memory to itself.)
        t->set_grad(tg::zeros_like(*t));
      }
      const tg::Tensor seed = tg::ones(c.f(in).shape());
      auto both = bench::measure([&] { c.f(in).backward(seed); }, kReps, kWarmup, 0.0);
      bench::print("tapegrad", name + ".fwd_bwd", threads, both);
    }
  }
}
