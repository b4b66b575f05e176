// Module registration and names, train/eval, to(DType), the layers' shapes and errors.
#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

std::vector<std::string> names(const tg::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

/// A module with a parameter, a buffer and two children, registered in a mixed order.
struct Block : nn::Module {
  Block() {
    scale = &register_parameter("scale", tg::ones({3}));
    conv = register_module("conv", nn::conv2d(2, 3, 3, {.padding = {1, 1}}));
    register_buffer("count", tg::zeros({}, tg::DType::i64));
    head = register_module("head", nn::sequential({nn::flatten(), nn::linear(3 * 4 * 5, 2)}));
  }
  tg::Tensor forward(const tg::Tensor& x) override {
    return (*head)((*conv)(x) * tg::reshape(*scale, {1, 3, 1, 1}));
  }
  using nn::Module::register_buffer;
  using nn::Module::register_module;
  using nn::Module::register_parameter;
  tg::Tensor* scale;
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::Sequential> head;
};

}  // namespace

TEST_CASE("Module: dotted names follow registration order, parameters then buffers",
          "[nn][module]") {
  Block block;
  CHECK(names(block.named_parameters()) ==
        std::vector<std::string>{"scale", "conv.weight", "conv.bias", "head.1.weight",
                                 "head.1.bias"});
  CHECK(names(block.named_buffers()) == std::vector<std::string>{"count"});
  CHECK(names(block.named_state()) ==
        std::vector<std::string>{"scale", "conv.weight", "conv.bias", "head.1.weight",
                                 "head.1.bias", "count"});
  const auto params = block.parameters();
  REQUIRE(params.size() == 5);
  CHECK(params[1].shape() == tg::Shape{3, 2, 3, 3});
  CHECK(params[3].shape() == tg::Shape{2, 60});
  for (const auto& p : params) CHECK(p.requires_grad());
  CHECK_FALSE(block.named_buffers()[0].second.requires_grad());
  // The tensors are shared with the layers, not copies.
  CHECK(params[1].shares_storage(block.conv->weight()));
  CHECK(block.children().size() == 2);
  CHECK(block.children()[1].first == "head");
}

TEST_CASE("Module: registering a name twice, an empty or dotted name throws", "[nn][module]") {
  Block block;
  CHECK_THROWS_AS(block.register_parameter("scale", tg::ones({2})), tg::ValueError);
  CHECK_THROWS_WITH(block.register_parameter("scale", tg::ones({2})),
                    Catch::Contains("register_parameter") && Catch::Contains("'scale'") &&
                        Catch::Contains("already registered"));
  CHECK_THROWS_AS(block.register_buffer("conv", tg::ones({2})), tg::ValueError);
  CHECK_THROWS_AS(block.register_module("count", nn::relu()), tg::ValueError);
  CHECK_THROWS_AS(block.register_parameter("a.b", tg::ones({2})), tg::ValueError);
  CHECK_THROWS_AS(block.register_parameter("", tg::ones({2})), tg::ValueError);
  CHECK_THROWS_AS(block.register_parameter("idx", tg::zeros({2}, tg::DType::i64)), tg::ValueError);
  CHECK_THROWS_AS(block.register_module("none", std::shared_ptr<nn::Module>()), tg::ValueError);
}

TEST_CASE("Module: forward through the call operator, zero_grad, Sequential indexing",
          "[nn][module]") {
  tg::manual_seed(3);
  Block block;
  const tg::Tensor x = tg::randn({2, 2, 4, 5});
  const tg::Tensor y = block(x);
  CHECK(y.shape() == tg::Shape{2, 2});
  tg::sum(y * y).backward();
  for (const auto& [name, p] : block.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
  CHECK(tg::sum(tg::abs(block.conv->weight().grad())).item<double>() > 0);
  block.zero_grad();
  for (const auto& [name, p] : block.named_parameters()) {
    INFO(name);
    CHECK(tg::sum(tg::abs(p.grad())).item<double>() == 0.0);
  }
  CHECK(block.head->size() == 2);
  CHECK(dynamic_cast<nn::Linear*>(&(*block.head)[1]) != nullptr);
  CHECK_THROWS_AS((*block.head)[2], tg::ValueError);
}

TEST_CASE("Module: train()/eval() propagate to submodules and switch Dropout", "[nn][module]") {
  auto model = nn::sequential({nn::linear(6, 50), nn::dropout(0.5), nn::batch_norm2d(2)});
  CHECK(model->is_training());
  CHECK((*model)[1].is_training());
  model->eval();
  CHECK_FALSE(model->is_training());
  CHECK_FALSE((*model)[1].is_training());
  CHECK_FALSE((*model)[2].is_training());

  nn::Dropout drop(0.5);
  tg::manual_seed(11);
  const tg::Tensor x = tg::rand({400}) + 1.0;  // no zeros in x
  const auto train_values = drop(x).to_vector<double>();
  const auto zeros = std::count(train_values.begin(), train_values.end(), 0.0);
  CHECK(zeros > 150);
  CHECK(zeros < 250);
  const auto xs = x.to_vector<double>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (train_values[i] != 0.0) CHECK(train_values[i] == Approx(2.0 * xs[i]));
  }
  drop.eval();
  CHECK_THAT(drop(x), AllClose(x, 0, 0));
  CHECK_THROWS_AS(nn::Dropout(1.5), tg::ValueError);
}

TEST_CASE("Module: to(DType) converts parameters and floating buffers in place",
          "[nn][module]") {
  auto bn = nn::batch_norm2d(3);
  auto model = nn::sequential({nn::conv2d(2, 3, 3), bn, nn::flatten(), nn::linear(3 * 4 * 4, 2)});
  auto& conv = dynamic_cast<nn::Conv2d&>((*model)[0]);
  const auto before = conv.weight().to_vector<double>();
  model->to(tg::DType::f64);
  for (const auto& [name, t] : model->named_parameters()) {
    INFO(name);
    CHECK(t.dtype() == tg::DType::f64);
    CHECK(t.requires_grad());
    CHECK(t.is_leaf());
  }
  CHECK(bn->running_mean().dtype() == tg::DType::f64);
  CHECK(bn->running_var().dtype() == tg::DType::f64);
  CHECK(bn->num_batches_tracked().dtype() == tg::DType::i64);
  // The layer sees the converted tensor, with the same values.
  CHECK(conv.weight().dtype() == tg::DType::f64);
  CHECK(conv.weight().to_vector<double>() == before);
  CHECK(model->parameters()[0].shares_storage(conv.weight()));
  const tg::Tensor y = (*model)(tg::randn({2, 2, 6, 6}, tg::DType::f64));
  CHECK(y.dtype() == tg::DType::f64);
  tg::sum(y).backward();
  CHECK(conv.weight().grad().dtype() == tg::DType::f64);
  CHECK_THROWS_AS(model->to(tg::DType::i64), tg::DTypeError);
}

TEST_CASE("Layers: output shapes and options", "[nn][layers]") {
  tg::manual_seed(5);
  const tg::Tensor x = tg::randn({2, 4, 9, 7});
  CHECK(nn::Conv2d(4, 6, {3, 2}, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}})(x)
            .shape() == tg::Shape{2, 6, 5, 5});
  nn::Conv2d grouped(4, 6, 3, {.groups = 2, .padding_mode = tg::ConvPadding::same, .bias = false});
  CHECK(grouped.weight().shape() == tg::Shape{6, 2, 3, 3});
  CHECK_FALSE(grouped.bias().defined());
  CHECK(grouped.named_parameters().size() == 1);
  CHECK(grouped(x).shape() == tg::Shape{2, 6, 9, 7});
  CHECK(nn::Conv2d(4, 2, 3, {.padding_mode = tg::ConvPadding::valid})(x).shape() ==
        tg::Shape{2, 2, 7, 5});
  CHECK(nn::MaxPool2d(2)(x).shape() == tg::Shape{2, 4, 4, 3});
  CHECK(nn::MaxPool2d({.kernel_size = {3, 3}, .stride = {{2, 2}}, .ceil_mode = true})(x).shape() ==
        tg::Shape{2, 4, 4, 3});
  CHECK(nn::AvgPool2d(nn::Size2{3, 1})(x).shape() == tg::Shape{2, 4, 3, 7});
  CHECK(nn::Flatten()(x).shape() == tg::Shape{2, 4 * 9 * 7});
  CHECK(nn::Flatten(2)(x).shape() == tg::Shape{2, 4, 63});
  CHECK(nn::Linear(7, 3)(x).shape() == tg::Shape{2, 4, 9, 3});
  CHECK_THAT(nn::ReLU()(x), AllClose(tg::relu(x), 0, 0));
  CHECK_THAT(nn::Sigmoid()(x), AllClose(tg::sigmoid(x), 0, 0));
  CHECK_THAT(nn::Tanh()(x), AllClose(tg::tanh(x), 0, 0));
  CHECK_THAT(nn::GELU()(x), AllClose(tg::gelu(x), 0, 0));
  CHECK_THAT(nn::GELU(tg::GeluApproximate::tanh)(x),
             AllClose(tg::gelu(x, tg::GeluApproximate::tanh), 0, 0));
  CHECK_THAT(nn::SiLU()(x), AllClose(tg::silu(x), 0, 0));
  CHECK_THAT(nn::LeakyReLU()(x), AllClose(tg::leaky_relu(x), 0, 0));
  CHECK_THAT((*nn::leaky_relu(0.3))(x), AllClose(tg::leaky_relu(x, 0.3), 0, 0));
  CHECK_THAT(nn::ELU(0.7)(x), AllClose(tg::elu(x, 0.7), 0, 0));
  CHECK_THAT((*nn::elu())(x), AllClose(tg::elu(x), 0, 0));
  CHECK_THAT(nn::Softplus(2.0, 1.0)(x), AllClose(tg::softplus(x, 2.0, 1.0), 0, 0));
  CHECK_THAT((*nn::gelu())(x), AllClose(tg::gelu(x), 0, 0));
  CHECK_THAT((*nn::silu())(x), AllClose(tg::silu(x), 0, 0));
  CHECK_THAT((*nn::softplus())(x), AllClose(tg::softplus(x), 0, 0));
  CHECK(nn::GELU().named_parameters().empty());
  nn::Linear no_bias(7, 3, false);
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK_THAT(no_bias(x), AllClose(tg::linear(x, no_bias.weight()), 0, 0));
}

TEST_CASE("Layers: misuse throws naming the layer and the values", "[nn][layers]") {
  nn::Linear fc(4, 3);
  CHECK_THROWS_AS(fc(tg::randn({2, 5})), tg::ShapeError);
  CHECK_THROWS_AS(nn::Linear(0, 3), tg::ValueError);
  CHECK_THROWS_WITH(nn::Conv2d(4, 6, 3, {.groups = 4}),
                    Catch::Contains("Conv2d") && Catch::Contains("groups=4"));
  CHECK_THROWS_AS(nn::Conv2d(3, 6, 0), tg::ValueError);
  CHECK_THROWS_AS(nn::Conv2d(3, 6, 3)(tg::randn({1, 4, 5, 5})), tg::ShapeError);
  CHECK_THROWS_AS(nn::BatchNorm2d(3)(tg::randn({2, 4, 3, 3})), tg::ShapeError);
  CHECK_THROWS_AS(nn::BatchNorm2d(3, {.momentum = 1.5}), tg::ValueError);
}

TEST_CASE("Losses as modules match the functional ops", "[nn][loss]") {
  const tg::Tensor logits = random_tensor({4, 3}, 1);
  const tg::Tensor target = i64({0, 2, 1, 2}, {4});
  CHECK_THAT(nn::CrossEntropyLoss{}(logits, target), AllClose(tg::cross_entropy(logits, target), 0, 0));
  CHECK_THAT(nn::CrossEntropyLoss{tg::Reduction::sum}(logits, target),
             AllClose(tg::cross_entropy(logits, target, tg::Reduction::sum), 0, 0));
  const tg::Tensor logp = tg::log_softmax(logits, 1);
  CHECK_THAT(nn::NLLLoss{tg::Reduction::none}(logp, target),
             AllClose(tg::nll_loss(logp, target, tg::Reduction::none), 0, 0));
  const tg::Tensor b = random_tensor({4, 3}, 2);
  CHECK(nn::MSELoss{}(logits, b).item<double>() ==
        Approx(tg::mean((logits - b) * (logits - b)).item<double>()).epsilon(1e-12));
}
