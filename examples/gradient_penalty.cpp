// gradient_penalty: a WGAN-GP critic (Gulrajani et al. 2017) on Fashion-MNIST.
//
//   gradient_penalty [--steps 300] [--limit 60000] [--batch-size 32] [--data DIR]
//
// A Wasserstein GAN's critic D estimates the Wasserstein-1 distance between a "real" and a
// "fake" distribution as max over 1-Lipschitz D of E[D(real)] - E[D(fake)]. WGAN-GP keeps D
// close to 1-Lipschitz softly, by penalising how far the norm of its input gradient is from 1
// at random interpolates x̂ = ε·real + (1-ε)·fake (ε ~ U[0, 1) per sample):
//
//   loss = mean(D(fake)) - mean(D(real)) + λ·mean((‖∇_x̂ D(x̂)‖₂ - 1)²),   λ = 10.
//
// The penalty contains a gradient, so training the critic differentiates a gradient:
// ∇_x̂ D is computed with create_graph, which records its VJPs like any forward, and
// loss.backward() then reaches the weights through them (∂/∂θ of ∂D/∂x, a second derivative).
//
// Here there is no generator: "real" is the Trouser class, "fake" a fixed other class
// (Dress), so the critic only has to learn the distance W between two fixed distributions.
// The penalty does not pin ‖∇D‖ to exactly 1: the distance term pulls the other way. For a
// critic of slope s along the direction that carries fake onto real, at distance W₁ for a
// slope of 1, the loss is about -s·W₁ + λ·(s - 1)², smallest at s = 1 + W₁/(2λ). The critic
// reports W = s·W₁, so s = (1 + √(1 + 2W/λ))/2: the closer the two classes, the closer the
// norms end to 1 (Trouser vs Dress: W ≈ 5, s ≈ 1.2; Sneaker vs Ankle boot: W ≈ 10, s ≈ 1.35).
// Without the penalty they would grow without bound (the loss is linear in D's scale).
//
// The critic: [N, 1, 28, 28] → conv 4×4 stride 2 (8) → relu → [N, 8, 14, 14]
//                            → conv 4×4 stride 2 (16) → relu → [N, 16, 7, 7] → linear → [N, 1].
//
// At the start, the penalty's gradient with respect to the first conv's weight is checked
// against finite differences (tg::gradcheck). At the end, on test images, the penalty must
// have done its job: the mean ‖∇D‖ at interpolates within [0.5, 1.5] and a positive distance
// estimate. Exits 1 otherwise, 2 when Fashion-MNIST is not installed, 64 on a bad flag.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr std::int64_t kReal = 1;  // Trouser
constexpr std::int64_t kFake = 3;  // Dress
constexpr double kLambda = 10.0;
constexpr std::int64_t kPixels = 28 * 28;

struct Args {
  std::int64_t steps = 300;
  std::int64_t limit = 60000;  // training images read (both classes are taken from these)
  std::int64_t batch_size = 32;
  std::string data = "/usr/share/datasets/fashion-mnist";
};

[[noreturn]] void usage_error(const std::string& message) {
  fmt::print(stderr,
             "gradient_penalty: {}\nusage: gradient_penalty [--steps N] [--limit N] "
             "[--batch-size N] [--data DIR]\n",
             message);
  std::exit(64);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage_error("help");
    if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", flag));
    const std::string value = argv[++i];
    if (flag == "--data") {
      a.data = value;
      continue;
    }
    std::int64_t* target = flag == "--steps"        ? &a.steps
                           : flag == "--limit"      ? &a.limit
                           : flag == "--batch-size" ? &a.batch_size
                                                    : nullptr;
    if (target == nullptr) usage_error(fmt::format("unknown flag {}", flag));
    try {
      std::size_t used = 0;
      *target = std::stoll(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::logic_error&) {
      usage_error(fmt::format("bad value '{}' for {}", value, flag));
    }
  }
  if (a.steps < 1 || a.limit < 1 || a.batch_size < 1) {
    usage_error("--steps, --limit and --batch-size must be >= 1");
  }
  return a;
}

/// The images of one class, row after row of 784 pixels in [0, 1].
struct ClassImages {
  std::vector<double> pixels;
  std::int64_t count = 0;

  ClassImages(const nn::Dataset& data, std::int64_t label) {
    // Batch by batch: the whole training set as doubles would take 376 MB.
    const nn::DataLoader loader(data, {.batch_size = 1000});
    for (const nn::Batch& batch : loader.epoch(0)) {
      const auto images = batch.images.to_vector<double>();
      const auto labels = batch.labels.to_vector<std::int64_t>();
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] != label) continue;
        const auto first = images.begin() + static_cast<std::ptrdiff_t>(i) * kPixels;
        pixels.insert(pixels.end(), first, first + kPixels);
        ++count;
      }
    }
  }
  /// The images at `indices` as f64 [B, 1, 28, 28].
  tg::Tensor gather(const std::vector<std::int64_t>& indices) const {
    std::vector<double> out;
    for (const std::int64_t i : indices) {
      const auto first = pixels.begin() + i * kPixels;
      out.insert(out.end(), first, first + kPixels);
    }
    return tg::from_vector(out, {static_cast<std::int64_t>(indices.size()), 1, 28, 28},
                           tg::DType::f64);
  }
  /// `n` images drawn with replacement from the global generator.
  tg::Tensor sample(std::int64_t n) const {
    return gather(tg::randint(0, count, {n}).to_vector<std::int64_t>());
  }
  /// The first min(n, count) images.
  tg::Tensor head(std::int64_t n) const {
    std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(n, count)));
    std::iota(indices.begin(), indices.end(), 0);
    return gather(indices);
  }
};

/// The critic, x: [N, 1, 28, 28] -> [N, 1], in f64 (the checker's precision). Its layers
/// start from PyTorch's default initialisation (uniform in ±1/sqrt(fan_in)).
std::shared_ptr<nn::Sequential> make_critic() {
  auto critic = nn::sequential({nn::conv2d(1, 8, 4, {.stride = 2, .padding = 1}), nn::relu(),
                                nn::conv2d(8, 16, 4, {.stride = 2, .padding = 1}), nn::relu(),
                                nn::flatten(), nn::linear(16 * 7 * 7, 1)});
  critic->to(tg::DType::f64);
  return critic;
}
using Critic = nn::Sequential;

/// The penalty mean((‖∇_x̂ D(x̂)‖₂ - 1)²) (without λ) and the per-sample norms ‖∇_x̂ D(x̂)‖₂.
struct Penalty {
  tg::Tensor value;
  tg::Tensor norms;  // [B]
};

Penalty gradient_penalty(Critic& critic, const tg::Tensor& interpolates) {
  const tg::Tensor x_hat = interpolates.detach().set_requires_grad(true);
  // D(x̂_i) depends on x̂_i alone (no batch statistics), so the gradient of the sum holds each
  // sample's own ∇D(x̂_i) in its row. create_graph makes that gradient a recorded function of
  // the critic's weights, so that the penalty built from it can be backpropagated to them.
  const tg::Tensor g = tg::grad({tg::sum(critic(x_hat))}, {x_hat}, {}, {.create_graph = true})[0];
  // The 1e-12 keeps sqrt differentiable for a sample whose gradient vanishes (all relus off).
  const tg::Tensor norms = tg::sqrt(tg::sum(g * g, {1, 2, 3}) + 1e-12);
  return {tg::mean(tg::pow(norms - 1.0, 2.0)), norms};
}

/// x̂ = ε·real + (1-ε)·fake with ε ~ U[0, 1) per sample.
tg::Tensor interpolate(const tg::Tensor& real, const tg::Tensor& fake) {
  const tg::Tensor eps = tg::rand({real.size(0), 1, 1, 1}, tg::DType::f64);
  return eps * real + (1.0 - eps) * fake;
}

/// The penalty's gradient with respect to the first conv's weight, by backprop through the
/// create_graph gradient, against central finite differences of the penalty. gradcheck hands
/// fn copies of the weight; the guard runs the critic with them in place of its own.
bool check_penalty_gradient(Critic& critic, const ClassImages& real, const ClassImages& fake) {
  const tg::Tensor x_hat = interpolate(real.sample(4), fake.sample(4));
  auto penalty_of = [&](const std::vector<tg::Tensor>& w) {
    // gradcheck evaluates fn under a NoGradGuard; the penalty needs a gradient of its own.
    tg::EnableGradGuard record;
    const nn::SwapTensorsGuard swap(critic, {{"0.weight", w[0]}});
    return gradient_penalty(critic, x_hat).value;
  };
  const tg::GradcheckReport report = tg::gradcheck(penalty_of, {critic.at<nn::Conv2d>(0).weight()});
  fmt::print("gradcheck of d(penalty)/d(conv1 weight [8, 1, 4, 4]):\n{}\n", report);
  return report.passed;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  nn::Dataset train, test;
  try {
    train = nn::load_mnist(args.data, nn::MnistSplit::train).head(args.limit);
    test = nn::load_mnist(args.data, nn::MnistSplit::test);
  } catch (const tg::IoError& e) {
    fmt::print(stderr,
               "gradient_penalty: {}\ninstall the data with: sudo apt-get install "
               "dataset-fashion-mnist\n",
               e.what());
    return 2;
  }
  const ClassImages real(train, kReal), fake(train, kFake);
  if (real.count == 0 || fake.count == 0) {
    fmt::print(stderr, "gradient_penalty: --limit {} leaves no image of a class\n", args.limit);
    return 64;
  }
  fmt::print("real: {} Trouser images, fake: {} Dress images\n", real.count, fake.count);

  tg::manual_seed(0);
  const auto critic_ptr = make_critic();
  Critic& critic = *critic_ptr;
  const bool gradient_ok = check_penalty_gradient(critic, real, fake);

  // β1 = 0.5, β2 = 0.9 as in the WGAN-GP paper (which uses β1 = 0); a larger lr than its 1e-4,
  // since this critic is small and the distributions fixed.
  nn::Adam optimizer(critic.parameters(), {.lr = 1e-3, .beta1 = 0.5, .beta2 = 0.9});
  const std::int64_t print_every = std::max<std::int64_t>(1, args.steps / 10);
  for (std::int64_t step = 1; step <= args.steps; ++step) {
    const tg::Tensor real_batch = real.sample(args.batch_size);
    const tg::Tensor fake_batch = fake.sample(args.batch_size);
    const tg::Tensor distance = tg::mean(critic(real_batch)) - tg::mean(critic(fake_batch));
    const Penalty penalty = gradient_penalty(critic, interpolate(real_batch, fake_batch));
    const tg::Tensor loss = kLambda * penalty.value - distance;
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (step % print_every == 0 || step == 1) {
      fmt::print("step {:4}: loss {:8.4f}  W estimate {:7.4f}  mean |grad D| {:.3f}\n", step,
                 loss.item<double>(), distance.item<double>(),
                 tg::mean(penalty.norms).item<double>());
    }
  }

  // On test images the critic has not seen: the distance estimate and the gradient norms.
  const tg::Tensor real_test = ClassImages(test, kReal).head(500);
  const tg::Tensor fake_test = ClassImages(test, kFake).head(500);
  const Penalty penalty = gradient_penalty(critic, interpolate(real_test, fake_test));
  tg::NoGradGuard no_grad;
  const double distance =
      (tg::mean(critic(real_test)) - tg::mean(critic(fake_test))).item<double>();
  const double mean_norm = tg::mean(penalty.norms).item<double>();
  fmt::print("test: W estimate {:.4f}, mean |grad D| at interpolates {:.3f} (balance s = {:.3f}), "
             "penalty {:.4f}\n",
             distance, mean_norm, (1 + std::sqrt(1 + 2 * distance / kLambda)) / 2,
             penalty.value.item<double>());

  const bool ok = gradient_ok && distance > 0 && mean_norm >= 0.5 && mean_norm <= 1.5;
  fmt::print("gradient_penalty: {}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
} catch (const tg::Error& e) {
  fmt::print(stderr, "gradient_penalty: {}\n", e.what());
  return 1;
}
