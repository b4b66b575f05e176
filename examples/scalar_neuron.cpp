// scalar_neuron: micrograd's multilayer perceptron, with every weight a 0-dim tensor.
//
// Each neuron computes tanh(b + sum_i w_i * x_i) one scalar op at a time, so the tape holds
// one node per multiply and add, exactly as micrograd's Value graph does. A 2 -> 4 -> 4 -> 1
// net learns the XOR pattern of four noisy point clouds with full-batch SGD on the mean
// squared error. The program exits 0 only when the final loss is below kTargetLoss, every
// point is classified correctly and the tape is empty again, so it doubles as a smoke test.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

namespace {

constexpr double kTargetLoss = 0.05;
constexpr int kSteps = 100;
constexpr double kLearningRate = 0.05;
constexpr int kPointsPerCloud = 8;

tg::Tensor parameter(double low, double high) {
  tg::Tensor p = tg::uniform({}, low, high, tg::DType::f64);
  p.set_requires_grad(true);
  return p;
}

struct Neuron {
  std::vector<tg::Tensor> w;
  tg::Tensor b;
  bool nonlinear;

  Neuron(std::size_t inputs, bool nonlinear_) : b(parameter(-1, 1)), nonlinear(nonlinear_) {
    for (std::size_t i = 0; i < inputs; ++i) w.push_back(parameter(-1, 1));
  }
  tg::Tensor operator()(const std::vector<tg::Tensor>& x) const {
    tg::Tensor act = b;
    for (std::size_t i = 0; i < w.size(); ++i) act = act + w[i] * x[i];
    return nonlinear ? tg::tanh(act) : act;
  }
};

struct Layer {
  std::vector<Neuron> neurons;

  Layer(std::size_t inputs, std::size_t outputs, bool nonlinear) {
    for (std::size_t i = 0; i < outputs; ++i) neurons.emplace_back(inputs, nonlinear);
  }
  std::vector<tg::Tensor> operator()(const std::vector<tg::Tensor>& x) const {
    std::vector<tg::Tensor> out;
    for (const Neuron& n : neurons) out.push_back(n(x));
    return out;
  }
};

struct Mlp {
  std::vector<Layer> layers;

  // sizes = {inputs, hidden..., outputs}; the last layer is linear, as in micrograd.
  explicit Mlp(const std::vector<std::size_t>& sizes) {
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i)
      layers.emplace_back(sizes[i], sizes[i + 1], i + 2 < sizes.size());
  }
  tg::Tensor operator()(std::vector<tg::Tensor> x) const {
    for (const Layer& layer : layers) x = layer(x);
    return x.front();
  }
  std::vector<tg::Tensor> parameters() const {
    std::vector<tg::Tensor> params;
    for (const Layer& layer : layers)
      for (const Neuron& n : layer.neurons) {
        params.insert(params.end(), n.w.begin(), n.w.end());
        params.push_back(n.b);
      }
    return params;
  }
};

struct Point {
  std::vector<tg::Tensor> x;  // two 0-dim inputs, recorded by no op
  double label;               // +1 or -1
};

// Four clouds around (+-1, +-1); the label is the sign of x0 * x1 (XOR of the signs).
std::vector<Point> xor_clouds() {
  std::vector<Point> points;
  for (double cx : {-1.0, 1.0})
    for (double cy : {-1.0, 1.0}) {
      const std::vector<double> noise =
          tg::uniform({kPointsPerCloud, 2}, -0.4, 0.4, tg::DType::f64).to_vector<double>();
      for (std::size_t i = 0; i < kPointsPerCloud; ++i)
        points.push_back({{tg::scalar_tensor(cx + noise[2 * i], tg::DType::f64),
                           tg::scalar_tensor(cy + noise[2 * i + 1], tg::DType::f64)},
                          cx * cy});
    }
  return points;
}

struct Evaluation {
  tg::Tensor loss;
  int correct = 0;
};

Evaluation evaluate(const Mlp& model, const std::vector<Point>& points) {
  Evaluation e{tg::scalar_tensor(0, tg::DType::f64)};
  for (const Point& p : points) {
    const tg::Tensor pred = model(p.x);
    e.loss = e.loss + tg::pow(pred - p.label, 2);
    if (pred.item<double>() * p.label > 0) ++e.correct;
  }
  e.loss = e.loss / static_cast<double>(points.size());
  return e;
}

}  // namespace

int main() {
  tg::manual_seed(1337);
  const std::vector<Point> points = xor_clouds();
  const Mlp model({2, 4, 4, 1});
  const std::vector<tg::Tensor> params = model.parameters();
  fmt::print("scalar_neuron: {} parameters, {} points, target loss < {}\n", params.size(),
             points.size(), kTargetLoss);

  double final_loss = 0;
  int final_correct = 0;
  for (int step = 1; step <= kSteps; ++step) {
    Evaluation e = evaluate(model, points);
    for (tg::Tensor p : params) p.zero_grad();  // copies of a handle share the tensor
    e.loss.backward();
    {
      tg::NoGradGuard no_grad;
      for (tg::Tensor p : params) p.add_(p.grad(), -kLearningRate);
    }
    final_loss = e.loss.item<double>();
    final_correct = e.correct;
    if (step == 1 || step % 10 == 0)
      fmt::print("step {:4d}  loss {:.5f}  accuracy {}/{}\n", step, final_loss, e.correct,
                 points.size());
  }

  const std::int64_t records = tg::live_tape_records();
  const bool ok = final_loss < kTargetLoss &&
                  final_correct == static_cast<int>(points.size()) && records == 0;
  fmt::print("final loss {:.5f} (target < {}), accuracy {}/{}, live tape records {}: {}\n",
             final_loss, kTargetLoss, final_correct, points.size(), records,
             ok ? "OK" : "FAILED");
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
