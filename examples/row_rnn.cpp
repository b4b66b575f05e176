// row_rnn: a recurrent classifier that reads each Fashion-MNIST image one row at a time.
//
//   row_rnn [--epochs 1] [--limit 60000] [--test-limit 10000] [--hidden 64] [--min-accuracy 0]
//           [--data DIR]
//
// The recurrent cell is a module of two inputs, (x_t, h) -> h', PyTorch's GRUCell written
// with two nn::Linear layers; the classifier unrolls it over the 28 rows on the tape and
// reads the class off the last state:
//   [N, 1, 28, 28] -> 28 steps of GRUCell(28 -> hidden) -> linear(hidden -> 10).
// It also shows the tree API (apply<nn::Linear> for PyTorch's GRU initialisation) and
// functional_call (a gradient check of the cell's recurrent weights in f64, the model left
// as it was). One epoch on all 60,000 images reaches about 80% test accuracy. Exits 1 when the
// accuracy is below --min-accuracy or the gradient check fails, 2 when the data is missing.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "lenet_model.hpp"  // the Fashion-MNIST normalisation and count_correct

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

/// h' = (1 - z)·n + z·h with r, z = σ(W_i x + b_i + W_h h + b_h) and n = tanh(W_in x + b_in +
/// r·(W_hn h + b_hn)): torch.nn.GRUCell, whose weight_ih and weight_hh are ih.weight, hh.weight.
struct GRUCell : nn::Module {
  GRUCell(std::int64_t input_size, std::int64_t hidden) : hidden_size(hidden) {
    ih = register_module("ih", nn::linear(input_size, 3 * hidden));
    hh = register_module("hh", nn::linear(hidden, 3 * hidden));
  }
  /// x: [N, input_size], h: [N, hidden_size] -> [N, hidden_size].
  tg::Tensor forward(const tg::Tensor& x, const tg::Tensor& h) {
    const auto gi = tg::chunk((*ih)(x), 3, 1);
    const auto gh = tg::chunk((*hh)(h), 3, 1);
    const tg::Tensor r = tg::sigmoid(gi[0] + gh[0]);
    const tg::Tensor z = tg::sigmoid(gi[1] + gh[1]);
    const tg::Tensor n = tg::tanh(gi[2] + r * gh[2]);
    return (1.0 - z) * n + z * h;
  }
  std::int64_t hidden_size;
  std::shared_ptr<nn::Linear> ih, hh;
};

/// Images [N, 1, 28, 28] -> logits [N, 10]: a module of one tensor, so evaluation code that
/// takes any nn::Module (lenet::count_correct) serves it too.
struct RowReader : nn::Module {
  explicit RowReader(std::int64_t hidden) {
    cell = register_module("cell", std::make_shared<GRUCell>(28, hidden));
    head = register_module("head", nn::linear(hidden, 10));
    // PyTorch initialises every GRU weight and bias U(-1/√hidden, 1/√hidden).
    const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
    cell->apply<nn::Linear>([bound](nn::Linear& l) {
      nn::uniform_(l.weight(), -bound, bound);
      nn::uniform_(l.bias(), -bound, bound);
    });
  }
  tg::Tensor forward(const tg::Tensor& images) override {
    const std::int64_t n = images.shape()[0];
    const tg::Tensor rows = tg::reshape(images, {n, 28, 28});
    tg::Tensor h = tg::zeros({n, cell->hidden_size}, images.dtype());
    for (std::int64_t t = 0; t < 28; ++t) h = cell->forward(tg::select(rows, 1, t), h);
    return (*head)(h);
  }
  std::shared_ptr<GRUCell> cell;
  std::shared_ptr<nn::Linear> head;
};

struct Args {
  std::int64_t epochs = 1, limit = 60000, test_limit = 10000, hidden = 64;
  double min_accuracy = 0;
  std::string data = "/usr/share/datasets/fashion-mnist";
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--epochs") a.epochs = std::atoll(value.c_str());
    else if (flag == "--limit") a.limit = std::atoll(value.c_str());
    else if (flag == "--test-limit") a.test_limit = std::atoll(value.c_str());
    else if (flag == "--hidden") a.hidden = std::atoll(value.c_str());
    else if (flag == "--min-accuracy") a.min_accuracy = std::atof(value.c_str());
    else if (flag == "--data") a.data = value;
    else throw tg::ValueError(fmt::format("row_rnn: unknown flag {}", flag));
  }
  if (argc % 2 == 0) throw tg::ValueError(fmt::format("row_rnn: {} needs a value", argv[argc - 1]));
  if (a.epochs < 1 || a.limit < 1 || a.test_limit < 1 || a.hidden < 1) {
    throw tg::ValueError("row_rnn: --epochs, --limit, --test-limit and --hidden must be >= 1");
  }
  return a;
}

/// gradcheck (fast mode, f64) of the loss on a few images with respect to the cell's
/// recurrent weights, passed in through functional_call: the model's own weight is not
/// touched, so the check can run in the middle of training.
bool check_recurrent_gradient(RowReader& model, const nn::Batch& batch) {
  model.to(tg::DType::f64);
  const tg::Tensor images = tg::narrow(batch.images, 0, 0, 4).to(tg::DType::f64);
  const tg::Tensor labels = tg::narrow(batch.labels, 0, 0, 4);
  const tg::Tensor w = model.cell->hh->weight().detach().set_requires_grad(true);
  const auto report = tg::gradcheck(
      [&](const std::vector<tg::Tensor>& in) {
        return tg::cross_entropy(nn::functional_call(model, {{"cell.hh.weight", in[0]}}, images), labels);
      },
      {w}, {.mode = tg::GradcheckMode::fast});
  model.to(tg::DType::f32);
  fmt::print("gradcheck of cell.hh.weight through functional_call: {}\n", report.to_string());
  return report.passed;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  nn::Dataset train, test;
  try {
    train = nn::load_mnist(args.data, nn::MnistSplit::train).head(args.limit);
    test = nn::load_mnist(args.data, nn::MnistSplit::test).head(args.test_limit);
  } catch (const tg::IoError& e) {
    fmt::print(stderr, "row_rnn: {}\ninstall the data with: sudo apt-get install dataset-fashion-mnist\n",
               e.what());
    return 2;
  }
  tg::manual_seed(0);
  auto model = std::make_shared<RowReader>(args.hidden);
  for (const auto& [name, m] : model->named_modules()) {
    fmt::print("{:<8} {} parameter tensors\n", name.empty() ? "(model)" : name, m->named_parameters().size());
  }
  nn::Adam optimizer(model->parameters(), {.lr = 0.005});
  nn::DataLoaderOptions loader_options = lenet::kNormalise;
  loader_options.batch_size = 64;
  loader_options.shuffle = true;
  nn::DataLoader loader(train, loader_options);

  bool gradient_ok = true;
  double accuracy = 0;
  for (std::int64_t epoch = 0; epoch < args.epochs; ++epoch) {
    double loss_sum = 0;
    std::int64_t batches = 0;
    for (const nn::Batch& batch : loader) {
      if (epoch == 0 && batches == 10) gradient_ok = check_recurrent_gradient(*model, batch);
      tg::Tensor loss = tg::cross_entropy((*model)(batch.images), batch.labels);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
      ++batches;
    }
    accuracy = static_cast<double>(lenet::count_correct(*model, test)) / static_cast<double>(test.size());
    fmt::print("epoch {}: train loss {:.4f}, test accuracy {:.2f}%\n", epoch + 1,
               loss_sum / static_cast<double>(batches), 100 * accuracy);
  }
  return gradient_ok && accuracy >= args.min_accuracy ? 0 : 1;
} catch (const tg::Error& e) {
  fmt::print(stderr, "{}\n", e.what());
  return 1;
}
