// Module::to converts in place (Tensor::set_data): members kept from register_parameter and
// optimizers built before the conversion see the new tensors; what cannot work any more (a
// parameter nobody else holds, a graph recorded before the change) is an error, never a
// silent no-op.
#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

/// Keeps copies of its parameter and buffer handles as members, as users write.
struct Affine : nn::Module {
  Affine() {
    scale = register_parameter("scale", tg::from_vector(std::vector<double>{0.5, -1.5, 2.0}, {3}));
    shift = register_buffer("shift", tg::from_vector(std::vector<double>{0.25, 0.0, -1.0}, {3}));
  }
  tg::Tensor forward(const tg::Tensor& x) override { return x * scale + shift; }
  tg::Tensor scale;  // a copy of the handle, not the reference register_parameter returns
  tg::Tensor shift;
};

std::shared_ptr<nn::Sequential> make_model(std::uint64_t seed) {
  tg::manual_seed(seed);
  return nn::sequential({nn::linear(4, 5), nn::relu(), nn::linear(5, 3)});
}

/// Three steps of mean squared error on fixed data.
void train(nn::Module& model, nn::Optimizer& opt, tg::DType dtype, int steps) {
  const tg::Tensor x = random_tensor({6, 4}, 11, -1, 1, dtype);
  const tg::Tensor y = random_tensor({6, 3}, 12, -1, 1, dtype);
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    tg::mse_loss(model(x), y).backward();
    opt.step();
  }
}

}  // namespace

TEST_CASE("Module::to: a member kept from register_parameter sees the converted tensor",
          "[nn][module][to]") {
  Affine m;
  const auto before = m.scale.to_vector<double>();
  m.to(tg::DType::f64);
  CHECK(m.scale.dtype() == tg::DType::f64);
  CHECK(m.shift.dtype() == tg::DType::f64);
  CHECK(m.scale.impl() == m.named_parameters()[0].second.impl());  // one tensor object
  CHECK(m.shift.impl() == m.named_buffers()[0].second.impl());
  CHECK(m.scale.to_vector<double>() == before);
  CHECK(m.scale.requires_grad());
  CHECK(m.scale.is_leaf());
  // Before in-place conversion this failed with "mul: operands have different dtypes".
  const tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3}, {3}, tg::DType::f64);
  const tg::Tensor out = m(x);
  CHECK_THAT(out, AllClose({0.75, -3.0, 5.0}, {3}, tg::DType::f64, 0, 0));
  tg::sum(out * out).backward();
  CHECK_THAT(m.scale.grad(), AllClose({1.5, -12.0, 30.0}, {3}, tg::DType::f64, 0, 0));
}

TEST_CASE("Module::to: an accumulated gradient is converted with its parameter",
          "[nn][module][to]") {
  Affine m;
  tg::sum(m(tg::ones({3}))).backward();
  REQUIRE(m.scale.grad().dtype() == tg::DType::f32);
  m.to(tg::DType::f64);
  CHECK(m.scale.grad().dtype() == tg::DType::f64);
  CHECK_THAT(m.scale.grad(), AllClose({1, 1, 1}, {3}, tg::DType::f64, 0, 0));
  m.to(tg::DType::f32);  // and back
  CHECK(m.scale.dtype() == tg::DType::f32);
  CHECK(m.scale.grad().dtype() == tg::DType::f32);
}

TEST_CASE("Module::to: an optimizer built before keeps training and matches one built after",
          "[nn][module][to][optim]") {
  SECTION("SGD with momentum, converted before the first step") {
    auto a = make_model(3);
    nn::SGD opt_a(a->parameters(), {.lr = 0.1, .momentum = 0.9});
    a->to(tg::DType::f64);
    auto b = make_model(3);
    b->to(tg::DType::f64);
    nn::SGD opt_b(b->parameters(), {.lr = 0.1, .momentum = 0.9});
    const auto start = a->parameters()[0].to_vector<double>();
    train(*a, opt_a, tg::DType::f64, 3);
    train(*b, opt_b, tg::DType::f64, 3);
    // Before, opt_a's step() silently changed nothing.
    CHECK(a->parameters()[0].to_vector<double>() != start);
    for (std::size_t i = 0; i < a->parameters().size(); ++i) {
      CHECK_THAT(a->parameters()[i], AllClose(b->parameters()[i], 0, 0));
    }
  }
  SECTION("Adam whose state was made in f32: the state is converted at the next step") {
    auto a = make_model(4);
    nn::Adam opt_a(a->parameters(), {.lr = 0.01, .amsgrad = true});
    train(*a, opt_a, tg::DType::f32, 2);
    auto b = make_model(4);
    nn::Adam opt_b(b->parameters(), {.lr = 0.01, .amsgrad = true});
    train(*b, opt_b, tg::DType::f32, 2);
    // b: a fresh optimizer built after to(), loaded with b's state converted by hand.
    tg::NamedTensors converted;
    for (const auto& [name, t] : opt_b.state()) {
      const bool moment = t.dtype() == tg::DType::f32;
      converted.emplace_back(name, moment ? t.to(tg::DType::f64) : t);
    }
    a->to(tg::DType::f64);
    b->to(tg::DType::f64);
    nn::Adam opt_b2(b->parameters(), {.lr = 0.01, .amsgrad = true});
    opt_b2.load_state(converted);
    train(*a, opt_a, tg::DType::f64, 3);
    train(*b, opt_b2, tg::DType::f64, 3);
    for (std::size_t i = 0; i < a->parameters().size(); ++i) {
      CHECK_THAT(a->parameters()[i], AllClose(b->parameters()[i], 0, 0));
    }
    for (const auto& [name, t] : opt_a.state()) {
      INFO(name);
      if (name.find("exp_avg") != std::string::npos) CHECK(t.dtype() == tg::DType::f64);
    }
  }
}

TEST_CASE("optimizers: a parameter that no module holds any more is an error at step()",
          "[nn][optim][to]") {
  auto model = nn::sequential({nn::linear(3, 2)});
  nn::SGD opt(model->parameters(), {.lr = 0.1});
  auto& layer = model->at<nn::Linear>(0);
  // The slot is given a new tensor: the optimizer's parameter 0 now belongs to nothing.
  layer.weight() = tg::zeros({2, 3}).set_requires_grad(true);
  tg::sum((*model)(tg::ones({1, 3}))).backward();
  const auto bias = layer.bias().to_vector<double>();
  CHECK_THROWS_AS(opt.step(), tg::ValueError);
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("SGD::step") && Catch::Contains("parameter 0") &&
                                    Catch::Contains("[2, 3]") &&
                                    Catch::Contains("held by nothing but this optimizer"));
  // Nothing was updated: the check runs before any parameter changes.
  CHECK(layer.bias().to_vector<double>() == bias);
}

TEST_CASE("optimizers: a parameter whose shape changed under its state is an error at step()",
          "[nn][optim][to]") {
  tg::Tensor p = tg::ones({3}, tg::DType::f64).set_requires_grad(true);
  nn::SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
  p.set_grad(tg::ones({3}, tg::DType::f64));
  opt.step();
  p.set_data(tg::ones({4}, tg::DType::f64));
  p.set_grad(tg::ones({4}, tg::DType::f64));
  CHECK_THROWS_AS(opt.step(), tg::ShapeError);
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("SGD::step") && Catch::Contains("parameter 0") &&
                                    Catch::Contains("momentum_buffer") && Catch::Contains("[3]"));
}

TEST_CASE("Tensor::set_data: every handle sees the new data, and misuse is reported",
          "[autograd][to]") {
  tg::Tensor p = tg::from_vector(std::vector<double>{1, 2}, {2}).set_requires_grad(true);
  const tg::Tensor handle = p;
  p.set_grad(tg::ones({2}));
  p.set_data(tg::from_vector(std::vector<double>{3, 4, 5}, {3}, tg::DType::f64));
  CHECK(handle.shape() == tg::Shape{3});
  CHECK(handle.dtype() == tg::DType::f64);
  CHECK(handle.requires_grad());
  CHECK_FALSE(handle.grad().defined());  // a gradient of the old shape is dropped
  CHECK_THAT(handle, AllClose({3, 4, 5}, {3}, tg::DType::f64, 0, 0));

  CHECK_THROWS_AS(p.set_data(tg::zeros({2}, tg::DType::i64)), tg::DTypeError);
  const tg::Tensor y = p * 2.0;
  CHECK_THROWS_AS(tg::Tensor(y).set_data(tg::zeros({3})), tg::GraphError);

  // A graph recorded before a change of dtype cannot accumulate into the changed leaf.
  tg::Tensor w = tg::ones({2}).set_requires_grad(true);
  const tg::Tensor loss = tg::sum(w * w);
  const tg::Tensor loss2 = tg::sum(w * 3.0);
  w.set_data(tg::ones({2}, tg::DType::f64));
  CHECK_THROWS_AS(loss.backward(), tg::GraphError);
  CHECK_THROWS_WITH(loss2.backward(), Catch::Contains("backward") && Catch::Contains("[2] f32") &&
                                          Catch::Contains("[2] f64"));
  tg::sum(w * w).backward();  // a graph recorded after the change works
  CHECK_THAT(w.grad(), AllClose({2, 2}, {2}, tg::DType::f64, 0, 0));
}
