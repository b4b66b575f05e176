// The Module API beyond one tensor: modules with any forward signature, module trees
// (named_modules, apply), functional_call, and one options type per layer with scalar
// shorthand.
#include <tuple>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Contains;
using tg::testing::AllClose;

namespace {

/// An LSTM-like cell as a user writes one: (x, (h, c)) -> (h', c'), state optional.
struct Cell : nn::Module {
  Cell(std::int64_t in, std::int64_t hidden_size) : hidden(hidden_size) {
    gates = register_module("gates", nn::linear(in + hidden_size, 2 * hidden_size));
  }
  std::tuple<tg::Tensor, tg::Tensor> forward(const tg::Tensor& x,
                                             std::optional<std::tuple<tg::Tensor, tg::Tensor>> state = {}) {
    const auto [h, c] = state ? *state
                              : std::tuple{tg::zeros({x.shape()[0], hidden}, x.dtype()),
                                           tg::zeros({x.shape()[0], hidden}, x.dtype())};
    const auto parts = tg::chunk((*gates)(tg::cat({x, h}, 1)), 2, 1);
    const tg::Tensor c2 = tg::sigmoid(parts[0]) * c + tg::tanh(parts[1]);
    return {tg::tanh(c2), c2};
  }
  std::int64_t hidden;
  std::shared_ptr<nn::Linear> gates;
};

/// Two inputs, one output: a bilinear-ish mix of two feature vectors.
struct Mix : nn::Module {
  Mix() {
    a = register_module("a", nn::linear(3, 2));
    b = register_module("b", nn::linear(4, 2));
  }
  tg::Tensor forward(const tg::Tensor& x, const tg::Tensor& y) { return (*a)(x) * (*b)(y); }
  std::shared_ptr<nn::Linear> a, b;
};

static_assert(nn::OneTensorModule<nn::Linear>);
static_assert(nn::OneTensorModule<nn::Sequential>);
static_assert(nn::OneTensorModule<nn::Module>);
static_assert(!nn::OneTensorModule<Cell>);  // nn::sequential({cell}) does not compile
static_assert(!nn::OneTensorModule<Mix>);
static_assert(std::is_same_v<nn::Conv2dOptions, tg::Conv2dOptions>);

std::vector<std::string> names(const auto& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

/// A nested model for the tree functions: stem, body (a Sequential), head; `shared` twice.
struct Tree : nn::Module {
  Tree() {
    stem = register_module("stem", nn::conv2d(1, 2, 3, {.padding = 1}));
    body = register_module("body", nn::sequential({nn::relu(), nn::flatten(), nn::linear(2 * 4 * 4, 3)}));
    shared = register_module("shared", nn::linear(3, 3));
    again = register_module("again", shared);
  }
  tg::Tensor forward(const tg::Tensor& x) override { return (*again)((*shared)((*body)((*stem)(x)))); }
  std::shared_ptr<nn::Conv2d> stem;
  std::shared_ptr<nn::Sequential> body;
  std::shared_ptr<nn::Linear> shared, again;
};

}  // namespace

TEST_CASE("modules with any forward: several inputs, several outputs, optional state",
          "[nn][module-api]") {
  tg::manual_seed(3);
  auto cell = std::make_shared<Cell>(3, 4);
  CHECK(names(cell->named_parameters()) == std::vector<std::string>{"gates.weight", "gates.bias"});
  const tg::Tensor x = tg::randn({2, 3});
  const auto [h1, c1] = cell->forward(x);
  const auto [h2, c2] = cell->forward(x, std::tuple{h1, c1});
  CHECK(h2.shape() == tg::Shape{2, 4});
  tg::sum(h2 + c2).backward();
  CHECK(cell->gates->weight().grad().defined());

  auto mix = std::make_shared<Mix>();
  CHECK(mix->forward(tg::randn({5, 3}), tg::randn({5, 4})).shape() == tg::Shape{5, 2});
  // Kept in containers like any module; typed access reaches its forward.
  auto list = nn::module_list({mix, cell});
  CHECK(list->at<Mix>(0).forward(tg::randn({1, 3}), tg::randn({1, 4})).shape() == tg::Shape{1, 2});
  CHECK(names(list->named_parameters()).size() == 6);
  // Called as a module of one tensor, it says what to do instead.
  nn::Module& as_base = *mix;
  CHECK_THROWS_AS(as_base(x), tg::ValueError);
  CHECK_THROWS_WITH(as_base(x), Contains("Mix") && Contains("no forward of one tensor"));
}

TEST_CASE("named_modules and children list the tree as PyTorch does", "[nn][module-api]") {
  auto tree = std::make_shared<Tree>();
  CHECK(names(tree->named_modules()) ==
        std::vector<std::string>{"", "stem", "body", "body.0", "body.1", "body.2", "shared"});
  CHECK(tree->named_modules()[0].second.get() == tree.get());
  CHECK(names(tree->named_modules(false)).front() == "stem");
  CHECK(names(tree->children()) == std::vector<std::string>{"stem", "body", "shared", "again"});
  // A module that is not held by a shared_ptr cannot return itself as one.
  Tree on_stack;
  CHECK_THROWS_WITH(on_stack.named_modules(), Contains("not held by a std::shared_ptr"));
  CHECK(on_stack.named_modules(false).size() == 6);
}

TEST_CASE("apply visits children before parents, and apply<M> only the Ms", "[nn][module-api]") {
  auto tree = std::make_shared<Tree>();
  std::vector<std::string> order;
  tree->apply([&order](nn::Module& m) { order.push_back(typeid(m).name()); });
  CHECK(order.size() == 8);  // stem, relu, flatten, linear, body, shared, again (= shared), tree
  CHECK(order.back() == typeid(Tree).name());
  CHECK(order[4] == typeid(nn::Sequential).name());

  int linears = 0;
  tree->apply<nn::Linear>([&linears](nn::Linear& l) {
    ++linears;
    nn::constant_(l.weight(), 0.5);
  });
  CHECK(linears == 3);  // body.2, shared and again (the same module twice)
  CHECK_THAT(tree->shared->weight(), AllClose(tg::full({3, 3}, 0.5), 0, 0));
  CHECK(tree->stem->weight().to_vector<float>() != std::vector<float>(18, 0.5f));
}

TEST_CASE("functional_call runs a module with tensors replaced and leaves it as it was",
          "[nn][module-api]") {
  tg::manual_seed(11);
  auto model = nn::sequential({nn::linear(3, 4), nn::relu(), nn::linear(4, 2)});
  model->to(tg::DType::f64);
  const tg::Tensor x = tg::testing::random_tensor({5, 3}, 12);
  const tg::Tensor w0 = model->at<nn::Linear>(0).weight();
  const tg::Tensor w0_values = tg::testing::copy_values(w0);
  const tg::Tensor w = tg::testing::random_tensor({4, 3}, 13).set_requires_grad(true);

  const tg::Tensor y = nn::functional_call(model, {{"0.weight", w}}, x);
  const tg::Tensor expected =
      model->at<nn::Linear>(2)(tg::relu(tg::linear(x, w, model->at<nn::Linear>(0).bias())));
  CHECK_THAT(y, AllClose(expected, 0, 0));
  // The module is untouched: same tensor object, same values; its output is the original one.
  CHECK(model->at<nn::Linear>(0).weight().impl() == w0.impl());
  CHECK_THAT(w0, AllClose(w0_values, 0, 0));
  CHECK((*model)(x).to_vector<double>() != y.to_vector<double>());
  // Gradients reach the given tensor, not the module's parameter.
  tg::sum(y).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(w0.grad().defined());

  SECTION("the module is restored when forward throws") {
    const tg::Tensor wrong = tg::zeros({4, 7}, tg::DType::f64);
    CHECK_THROWS_AS(nn::functional_call(model, {{"0.weight", wrong}}, x), tg::ShapeError);
    CHECK(model->at<nn::Linear>(0).weight().impl() == w0.impl());
  }
  SECTION("unknown, repeated and undefined names are one error, and nothing is replaced") {
    CHECK_THROWS_WITH(nn::functional_call(model, {{"0.weight", w}, {"1.weight", w}, {"0.weight", w},
                                                  {"2.bias", tg::Tensor()}}, x),
                      Contains("no parameter or buffer named '1.weight'") &&
                          Contains("given twice: '0.weight'") && Contains("undefined tensor for '2.bias'") &&
                          Contains("nothing was replaced"));
    CHECK(model->at<nn::Linear>(0).weight().impl() == w0.impl());
  }
  SECTION("buffers and multi-input modules") {
    auto mix = std::make_shared<Mix>();
    mix->to(tg::DType::f64);
    const tg::Tensor a = tg::testing::random_tensor({2, 3}, 20), b = tg::testing::random_tensor({2, 4}, 21);
    const tg::Tensor zero_bias = tg::zeros({2}, tg::DType::f64);
    const tg::Tensor out = nn::functional_call(mix, {{"a.bias", zero_bias}}, a, b);
    CHECK_THAT(out, AllClose(tg::linear(a, mix->a->weight()) * (*mix->b)(b), 0, 0));
    auto bn = nn::batch_norm2d(2);
    bn->eval();
    const tg::Tensor img = tg::testing::random_tensor({1, 2, 2, 2}, 22).to(tg::DType::f32);
    const tg::Tensor mean = tg::full({2}, 1.0, tg::DType::f32);
    CHECK_THAT(nn::functional_call(bn, {{"running_mean", mean}}, img), AllClose((*bn)(img - 1.0), 1e-6, 1e-6));
  }
}

TEST_CASE("functional_call: gradcheck of a model with respect to one parameter, and a MAML step",
          "[nn][module-api]") {
  tg::manual_seed(17);
  auto model = nn::sequential({nn::linear(3, 5), nn::tanh(), nn::linear(5, 1)});
  model->to(tg::DType::f64);
  const tg::Tensor x = tg::testing::random_tensor({6, 3}, 18);
  const tg::Tensor target = tg::testing::random_tensor({6, 1}, 19);
  auto loss_with = [&](const tg::Tensor& w) {
    return tg::mse_loss(nn::functional_call(model, {{"2.weight", w}}, x), target);
  };
  const tg::Tensor w = tg::testing::copy_values(model->at<nn::Linear>(2).weight()).set_requires_grad(true);
  const auto report = tg::gradcheck([&](const std::vector<tg::Tensor>& in) { return loss_with(in[0]); }, {w});
  INFO(report.to_string());
  CHECK(report.passed);

  // MAML: one inner SGD step with create_graph, the outer loss differentiated through it.
  // d outer / d w = (I - lr·H)·g', checked against gradcheck of the whole two-level function.
  const double lr = 0.3;
  auto outer = [&](const std::vector<tg::Tensor>& in) {
    // gradcheck's numeric evaluations run without recording, on inputs that do not require
    // grad; the inner step differentiates all the same.
    tg::EnableGradGuard record;
    const tg::Tensor w0 = in[0].requires_grad() ? in[0] : in[0].detach().set_requires_grad(true);
    const tg::Tensor inner_grad = tg::grad({loss_with(w0)}, {w0}, {}, {.create_graph = true})[0];
    return loss_with(w0 - lr * inner_grad);
  };
  const auto maml = tg::gradcheck(outer, {w});
  INFO(maml.to_string());
  CHECK(maml.passed);
  CHECK_FALSE(model->at<nn::Linear>(2).weight().grad().defined());
}

TEST_CASE("one options type per layer, with scalar shorthand for pairs", "[nn][module-api]") {
  tg::manual_seed(23);
  const tg::Tensor x = tg::randn({1, 2, 9, 9});
  auto short_form = nn::conv2d(2, 3, 3, {.stride = 2, .padding = 1, .bias = false});
  auto long_form = nn::conv2d(2, 3, {3, 3}, {.stride = {2, 2}, .padding = {1, 1}, .bias = false});
  long_form->weight().set_data(short_form->weight().detach());
  CHECK(short_form->options().stride == tg::Size2{2, 2});
  CHECK_FALSE(short_form->bias().defined());
  CHECK_THAT((*short_form)(x), AllClose((*long_form)(x), 0, 0));
  // The functional takes the same struct; it is the layer's computation.
  CHECK_THAT(tg::conv2d(x, short_form->weight(), {}, short_form->options()), AllClose((*short_form)(x), 0, 0));
  CHECK_THAT(tg::max_pool2d(x, {.kernel_size = 3, .stride = 2}),
             AllClose(tg::max_pool2d(x, {.kernel_size = {3, 3}, .stride = {2, 2}}), 0, 0));
  CHECK(tg::avg_pool2d(x, {.kernel_size = 2, .padding = 1}).shape() == tg::Shape{1, 2, 5, 5});
  // A bias tensor with bias = false is a contradiction, not silently used or dropped.
  CHECK_THROWS_WITH(tg::conv2d(x, short_form->weight(), tg::zeros({3}), {.bias = false}),
                    Contains("conv2d") && Contains("bias is false") && Contains("[3]"));
}
