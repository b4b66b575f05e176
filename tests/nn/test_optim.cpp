// Optimizers, schedulers and clip_grad_norm_ against PyTorch 1.13 (tests/fixtures/
// nn_reference.txt, written by make_nn_reference.py), optimizer state round trips and errors.
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

using Reference = std::map<std::string, std::vector<double>>;

const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    std::ifstream in(TAPEGRAD_FIXTURE_DIR "/nn_reference.txt");
    REQUIRE(in.good());
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream s(line);
      std::string key, word;
      s >> key;
      std::vector<double>& v = r[key];
      while (s >> word) v.push_back(word == "inf" ? INFINITY : std::stod(word));
    }
    return r;
  }();
  return ref;
}

const std::vector<double>& fixture(const std::string& key) {
  const auto it = reference().find(key);
  INFO("fixture key " << key);
  REQUIRE(it != reference().end());
  return it->second;
}

const tg::Shape kShapes[] = {{2, 3}, {4}};
constexpr int kSteps = 4;

std::unique_ptr<nn::Optimizer> make_optimizer(const std::string& name,
                                              const std::vector<tg::Tensor>& params) {
  const auto& c = fixture(name + ".config");
  if (name.rfind("sgd", 0) == 0) {
    return std::make_unique<nn::SGD>(params, nn::SGDOptions{.lr = c[0], .momentum = c[1],
                                                           .dampening = c[2],
                                                           .weight_decay = c[3],
                                                           .nesterov = c[4] != 0});
  }
  const nn::AdamOptions opt{.lr = c[0], .beta1 = c[1], .beta2 = c[2], .eps = c[3],
                            .weight_decay = c[4], .amsgrad = c[5] != 0};
  if (name.rfind("adamw", 0) == 0) return std::make_unique<nn::AdamW>(params, opt);
  return std::make_unique<nn::Adam>(params, opt);
}

}  // namespace

TEST_CASE("optimizers: parameter trajectories match PyTorch", "[nn][optim][reference]") {
  for (const char* name : {"sgd_plain", "sgd_momentum", "sgd_momentum_dampening_wd",
                           "sgd_nesterov_wd", "adam", "adam_wd_amsgrad", "adamw",
                           "adamw_amsgrad"}) {
    INFO("case " << name);
    std::vector<tg::Tensor> params;
    for (int i = 0; i < 2; ++i) {
      params.push_back(f64(fixture(fmt::format("{}.p{}.init", name, i)), kShapes[i]));
      params.back().set_requires_grad(true);
    }
    const auto opt = make_optimizer(name, params);
    for (int t = 1; t <= kSteps; ++t) {
      INFO("step " << t);
      for (int i = 0; i < 2; ++i) {
        const std::string key = fmt::format("{}.p{}.grad.{}", name, i, t);
        params[static_cast<std::size_t>(i)].set_grad(
            reference().count(key) != 0 ? f64(fixture(key), kShapes[i]) : tg::Tensor());
      }
      opt->step();
      for (int i = 0; i < 2; ++i) {
        INFO("parameter " << i);
        CHECK_THAT(params[static_cast<std::size_t>(i)],
                   AllClose(fixture(fmt::format("{}.p{}.after.{}", name, i, t)), kShapes[i],
                            tg::DType::f64, 1e-13, 1e-11));
      }
    }
  }
}

TEST_CASE("optimizers: f32 parameters are updated in place in f32", "[nn][optim]") {
  tg::Tensor p = tg::from_vector(std::vector<double>{1, -2, 3}, {3}).set_requires_grad(true);
  const tg::Tensor alias = p;
  nn::Adam opt({p}, {.lr = 0.1});
  p.set_grad(tg::from_vector(std::vector<double>{0.5, 0.5, -1}, {3}));
  opt.step();
  CHECK(p.dtype() == tg::DType::f32);
  CHECK(p.shares_storage(alias));
  // First Adam step moves every element by lr·sign(grad) (up to eps).
  CHECK_THAT(p.to(tg::DType::f64), AllClose({0.9, -2.1, 3.1}, {3}, tg::DType::f64, 1e-6, 1e-6));
  opt.zero_grad();
  CHECK(tg::sum(tg::abs(p.grad())).item<double>() == 0.0);
}

TEST_CASE("schedulers: StepLR and CosineAnnealingLR match PyTorch", "[nn][optim][reference]") {
  for (const char* name : {"steplr", "cosine"}) {
    INFO(name);
    const auto& c = fixture(std::string(name) + ".config");
    const auto& lrs = fixture(std::string(name) + ".lr");
    tg::Tensor p = tg::zeros({1}).set_requires_grad(true);
    nn::SGD opt({p}, {.lr = c[0]});
    std::unique_ptr<nn::LRScheduler> sched;
    if (std::string(name) == "steplr") {
      sched = std::make_unique<nn::StepLR>(opt, static_cast<std::int64_t>(c[1]), c[2]);
    } else {
      sched = std::make_unique<nn::CosineAnnealingLR>(opt, static_cast<std::int64_t>(c[1]), c[2]);
    }
    for (std::size_t e = 0; e < lrs.size(); ++e) {
      INFO("epoch " << e);
      CHECK(sched->last_epoch() == static_cast<std::int64_t>(e));
      CHECK(opt.lr() == Approx(lrs[e]).epsilon(1e-12).margin(1e-15));
      sched->step();
    }
    sched->set_epoch(5);
    CHECK(opt.lr() == Approx(lrs[5]).epsilon(1e-12));
  }
  tg::Tensor p = tg::zeros({1}).set_requires_grad(true);
  nn::SGD opt({p});
  CHECK_THROWS_AS(nn::StepLR(opt, 0), tg::ValueError);
  CHECK_THROWS_AS(nn::CosineAnnealingLR(opt, -3), tg::ValueError);
}

TEST_CASE("clip_grad_norm_: total norm and clipped gradients match PyTorch",
          "[nn][optim][reference]") {
  const tg::Shape shapes[] = {{3, 2}, {5}};
  for (const char* name : {"clip_l2", "clip_l1", "clip_inf", "clip_l2_noop", "clip_l3"}) {
    INFO(name);
    const std::string n = name;
    const auto& c = fixture(n + ".config");
    std::vector<tg::Tensor> params;
    for (int i = 0; i < 2; ++i) {
      params.push_back(tg::zeros(shapes[i], tg::DType::f64).set_requires_grad(true));
      params.back().set_grad(f64(fixture(fmt::format("{}.g{}", n, i)), shapes[i]));
    }
    params.push_back(tg::zeros({2}, tg::DType::f64).set_requires_grad(true));  // no grad: ignored
    const double total = nn::clip_grad_norm_(params, c[0], c[1]);
    CHECK(total == Approx(fixture(n + ".total")[0]).epsilon(1e-12));
    for (int i = 0; i < 2; ++i) {
      CHECK_THAT(params[static_cast<std::size_t>(i)].grad(),
                 AllClose(fixture(fmt::format("{}.clipped{}", n, i)), shapes[i], tg::DType::f64,
                          1e-14, 1e-12));
    }
    CHECK_FALSE(params[2].grad().defined());
  }
  CHECK_THROWS_AS(nn::clip_grad_norm_({}, -1.0), tg::ValueError);
  CHECK_THROWS_AS(nn::clip_grad_norm_({}, 1.0, 0.0), tg::ValueError);
}

TEST_CASE("optimizers: state() and load_state() resume exactly", "[nn][optim][state]") {
  auto make_params = [] {
    return std::vector<tg::Tensor>{random_tensor({2, 3}, 1, -1, 1, tg::DType::f64, true),
                                   random_tensor({4}, 2, -1, 1, tg::DType::f64, true)};
  };
  auto feed = [](std::vector<tg::Tensor>& ps, std::uint64_t seed) {
    for (auto& p : ps) p.set_grad(random_tensor(p.shape(), seed++, -1, 1, tg::DType::f64));
  };
  SECTION("AdamW with amsgrad") {
    auto a = make_params();
    nn::AdamW opt_a(a, {.lr = 0.05, .weight_decay = 0.1, .amsgrad = true});
    feed(a, 10);
    opt_a.step();
    feed(a, 20);
    opt_a.step();
    const tg::NamedTensors state = opt_a.state();
    std::vector<std::string> keys;
    for (const auto& [k, _] : state) keys.push_back(k);
    CHECK(keys == std::vector<std::string>{"group.0.lr", "group.0.beta1", "group.0.beta2",
                                           "group.0.eps", "group.0.weight_decay",
                                           "group.0.amsgrad", "group.0.size", "0.step",
                                           "0.exp_avg", "0.exp_avg_sq", "0.max_exp_avg_sq",
                                           "1.step", "1.exp_avg", "1.exp_avg_sq",
                                           "1.max_exp_avg_sq"});
    CHECK(state[7].second.item<std::int64_t>() == 2);

    std::vector<tg::Tensor> b;
    for (auto& p : a) b.push_back(copy_values(p).set_requires_grad(true));
    nn::AdamW opt_b(b, {.lr = 0.9, .weight_decay = 0.1, .amsgrad = true});
    opt_b.load_state(state);
    CHECK(opt_b.lr() == 0.05);
    feed(a, 30);
    feed(b, 30);
    opt_a.step();
    opt_b.step();
    for (std::size_t i = 0; i < a.size(); ++i) CHECK_THAT(b[i], AllClose(a[i], 0, 0));
  }
  SECTION("SGD momentum; misuse is reported and leaves the state unchanged") {
    auto a = make_params();
    nn::SGD opt(a, {.lr = 0.1, .momentum = 0.9});
    CHECK(opt.state().size() == 6);  // the group's five options and size; no buffers yet
    feed(a, 40);
    opt.step();
    tg::NamedTensors state = opt.state();
    REQUIRE(state.size() == 8);
    CHECK(state[6].first == "0.momentum_buffer");
    // state() returns copies.
    CHECK_FALSE(state[6].second.shares_storage(a[0].grad()));

    tg::NamedTensors bad_shape = state;
    bad_shape[7].second = tg::zeros({5}, tg::DType::f64);
    CHECK_THROWS_AS(opt.load_state(bad_shape), tg::ShapeError);
    CHECK_THROWS_WITH(opt.load_state(bad_shape),
                      Catch::Contains("SGD::load_state") && Catch::Contains("1.momentum_buffer") &&
                          Catch::Contains("[5]") && Catch::Contains("[4]"));
    tg::NamedTensors bad_dtype = state;
    bad_dtype[7].second = tg::zeros({4}, tg::DType::f32);
    CHECK_THROWS_AS(opt.load_state(bad_dtype), tg::DTypeError);
    tg::NamedTensors bad_index = state;
    bad_index.emplace_back("7.momentum_buffer", tg::zeros({4}, tg::DType::f64));
    CHECK_THROWS_AS(opt.load_state(bad_index), tg::ValueError);
    tg::NamedTensors bad_key = state;
    bad_key.emplace_back("0.exp_avg", tg::zeros({2, 3}, tg::DType::f64));
    CHECK_THROWS_WITH(opt.load_state(bad_key), Catch::Contains("unexpected entry '0.exp_avg'"));
    tg::NamedTensors bad_lr = state;
    bad_lr[0].second = tg::scalar_tensor(-1.0, tg::DType::f64);
    CHECK_THROWS_AS(opt.load_state(bad_lr), tg::ValueError);
    // Nothing was half-loaded: the state is still the one saved.
    const tg::NamedTensors after = opt.state();
    REQUIRE(after.size() == 8);
    for (std::size_t i = 0; i < after.size(); ++i) CHECK_THAT(after[i].second, AllClose(state[i].second, 0, 0));
  }
  SECTION("Adam: a parameter's state must be complete") {
    auto a = make_params();
    nn::Adam opt(a);
    feed(a, 50);
    opt.step();
    tg::NamedTensors state = opt.state();
    state.erase(state.begin() + 8);  // drop 0.exp_avg
    REQUIRE(state[8].first == "0.exp_avg_sq");
    CHECK_THROWS_WITH(opt.load_state(state), Catch::Contains("lacks '0.exp_avg'"));
  }
}

TEST_CASE("optimizers: invalid hyperparameters throw naming the value", "[nn][optim]") {
  const std::vector<tg::Tensor> ps{tg::zeros({2}).set_requires_grad(true)};
  CHECK_THROWS_WITH(nn::SGD(ps, {.lr = -0.1}), Catch::Contains("SGD") && Catch::Contains("lr") &&
                                                   Catch::Contains("-0.1"));
  CHECK_THROWS_AS(nn::SGD(ps, {.momentum = -1}), tg::ValueError);
  CHECK_THROWS_AS(nn::SGD(ps, {.weight_decay = -1}), tg::ValueError);
  CHECK_THROWS_AS(nn::SGD(ps, {.nesterov = true}), tg::ValueError);
  CHECK_THROWS_AS(nn::SGD(ps, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}), tg::ValueError);
  CHECK_THROWS_WITH(nn::Adam(ps, {.beta1 = 1.0}), Catch::Contains("Adam") && Catch::Contains("beta1") &&
                                                      Catch::Contains("[0, 1)"));
  CHECK_THROWS_AS(nn::AdamW(ps, {.beta2 = -0.1}), tg::ValueError);
  CHECK_THROWS_AS(nn::Adam(ps, {.eps = -1}), tg::ValueError);
  CHECK_THROWS_AS(nn::Adam({}), tg::ValueError);
  CHECK_THROWS_AS(nn::SGD({tg::zeros({2})}), tg::ValueError);  // does not require grad
  CHECK_THROWS_AS(nn::SGD({ps[0], ps[0]}), tg::ValueError);
  nn::SGD opt(ps);
  CHECK_THROWS_AS(opt.set_lr(-1), tg::ValueError);
}
