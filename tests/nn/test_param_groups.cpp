// Optimizer parameter groups: per-group options against PyTorch 1.13 (tests/fixtures/
// param_groups_reference.txt, written by make_param_groups_reference.py) and by hand, lr
// changed between steps, add_param_group, schedulers, checkpoints and the errors.
#include <algorithm>
#include <filesystem>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

constexpr int kSteps = 4;
constexpr int kLrChangeAfter = 2;

/// The optimizer of each fixture case, with the groups the generator gives torch: group 0 is
/// {p0, p2}, group 1 is {p1}.
std::unique_ptr<nn::Optimizer> make_case(const std::string& name, const std::vector<tg::Tensor>& p) {
  const std::vector<tg::Tensor> g0{p[0], p[2]}, g1{p[1]};
  if (name == "sgd") {
    return std::make_unique<nn::SGD>(
        std::vector<nn::SGDGroup>{{.params = g0},
                                  {.params = g1, .lr = 0.05, .momentum = 0.5, .weight_decay = 0.0}},
        nn::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  }
  if (name == "sgd_nesterov") {
    return std::make_unique<nn::SGD>(
        std::vector<nn::SGDGroup>{{.params = g0, .weight_decay = 0.05, .nesterov = true},
                                  {.params = g1, .dampening = 0.3}},
        nn::SGDOptions{.lr = 0.03, .momentum = 0.8});
  }
  if (name == "adam") {
    return std::make_unique<nn::Adam>(
        std::vector<nn::AdamGroup>{{.params = g0},
                                   {.params = g1, .lr = 0.03, .beta1 = 0.8, .beta2 = 0.99,
                                    .weight_decay = 0.0, .amsgrad = true}},
        nn::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
  }
  REQUIRE(name == "adamw");
  return std::make_unique<nn::AdamW>(
      std::vector<nn::AdamGroup>{{.params = g0}, {.params = g1, .lr = 0.02, .eps = 1e-6, .weight_decay = 0.0}},
      nn::AdamOptions{.lr = 0.01, .weight_decay = 1e-2});
}

std::vector<tg::Tensor> leaves(std::initializer_list<tg::Shape> shapes, std::uint64_t seed) {
  std::vector<tg::Tensor> out;
  for (const auto& s : shapes) out.push_back(random_tensor(s, seed++, -1, 1, tg::DType::f64, true));
  return out;
}

void feed(const std::vector<tg::Tensor>& ps, std::uint64_t seed) {
  for (auto p : ps) p.set_grad(random_tensor(p.shape(), seed++, -1, 1, tg::DType::f64));
}

}  // namespace

TEST_CASE("param groups: per-group options and an lr changed mid-training match PyTorch",
          "[nn][optim][groups][reference]") {
  for (const FixtureCase& c : read_fixture(TAPEGRAD_FIXTURE_DIR "/param_groups_reference.txt")) {
    INFO("case " << c.name);
    std::vector<tg::Tensor> p;
    for (int i = 0; i < 3; ++i) p.push_back(c.tensor(fmt::format("p{}.init", i)).set_requires_grad(true));
    const auto opt = make_case(c.name, p);
    REQUIRE(opt->num_param_groups() == 2);
    for (int t = 1; t <= kSteps; ++t) {
      INFO("step " << t);
      for (int i = 0; i < 3; ++i) {
        const auto key = fmt::format("p{}.grad.{}", i, t);
        p[static_cast<std::size_t>(i)].set_grad(c.tensor(key, p[static_cast<std::size_t>(i)].shape()));
      }
      opt->step();
      for (int i = 0; i < 3; ++i) {
        const tg::Tensor& got = p[static_cast<std::size_t>(i)];
        check_reference(c.name, fmt::format("p{} after step {}", i, t), got,
                        c.tensor(fmt::format("p{}.after.{}", i, t), got.shape()), 1e-13, 1e-11);
      }
      if (t == kLrChangeAfter) {
        const auto& change = c.values("lr_change");
        opt->set_lr(static_cast<std::size_t>(change[0]), change[1]);
      }
    }
  }
}

TEST_CASE("param groups: weight decay and lr per group, by hand", "[nn][optim][groups]") {
  // p -= lr·(grad + wd·p): group 0 decays (lr 0.1, wd 0.5), group 1 does not (lr 0.2).
  tg::Tensor w = tg::full({2}, 1.0, tg::DType::f64).set_requires_grad(true);
  tg::Tensor b = tg::full({1}, 2.0, tg::DType::f64).set_requires_grad(true);
  nn::SGD opt({{.params = {w}}, {.params = {b}, .lr = 0.2, .weight_decay = 0.0}},
              {.lr = 0.1, .weight_decay = 0.5});
  for (double expected_w : {1.0 - 0.1 * (1.0 + 0.5), 0.85 - 0.1 * (1.0 + 0.5 * 0.85)}) {
    w.set_grad(tg::ones({2}, tg::DType::f64));
    b.set_grad(tg::ones({1}, tg::DType::f64));
    opt.step();
    CHECK_THAT(w, AllClose({expected_w, expected_w}, {2}, tg::DType::f64, 1e-15, 0));
  }
  CHECK_THAT(b, AllClose({2.0 - 0.2 - 0.2}, {1}, tg::DType::f64, 1e-15, 0));
  // Options changed through param_groups() between steps apply at the next step.
  opt.param_groups()[1].options().lr = 1.0;
  opt.param_groups()[1].options().weight_decay = 1.0;
  opt.step();
  CHECK_THAT(b, AllClose({1.6 - (1.0 + 1.6)}, {1}, tg::DType::f64, 1e-15, 0));
  CHECK(opt.param_groups()[0].options().lr == 0.1);
  CHECK(opt.defaults().weight_decay == 0.5);
}

TEST_CASE("param groups: one list of parameters is one group, with parameters() and lr()",
          "[nn][optim][groups]") {
  auto ps = leaves({{2, 3}, {4}}, 1);
  nn::Adam opt(ps, {.lr = 0.02});
  REQUIRE(opt.num_param_groups() == 1);
  CHECK(opt.param_groups()[0].params().size() == 2);
  CHECK(opt.param_groups()[0].options().lr == 0.02);
  auto more = leaves({{3}}, 5);
  opt.add_param_group({.params = more, .lr = 0.5, .amsgrad = true});
  REQUIRE(opt.num_param_groups() == 2);
  CHECK(opt.lr() == 0.02);
  CHECK(opt.lr(1) == 0.5);
  CHECK(opt.param_groups()[1].options().beta1 == 0.9);  // unset: the defaults
  CHECK(opt.param_groups()[1].options().amsgrad);
  const auto all = opt.parameters();
  REQUIRE(all.size() == 3);
  CHECK(all[2].impl() == more[0].impl());
  opt.set_lr(0.1);  // every group
  CHECK(opt.lr(0) == 0.1);
  CHECK(opt.lr(1) == 0.1);
  // amsgrad switched on for a group whose parameters already have state.
  feed(all, 10);
  opt.step();
  opt.param_groups()[0].options().amsgrad = true;
  feed(all, 20);
  opt.step();
  std::vector<std::string> keys;
  for (const auto& [k, _] : opt.state()) keys.push_back(k);
  CHECK(std::count(keys.begin(), keys.end(), "0.max_exp_avg_sq") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "2.max_exp_avg_sq") == 1);
}

TEST_CASE("param groups: schedulers set every group's lr from its own base lr",
          "[nn][optim][groups]") {
  auto ps = leaves({{2}, {3}}, 1);
  nn::SGD opt({{.params = {ps[0]}}, {.params = {ps[1]}, .lr = 0.4}}, {.lr = 0.1});
  nn::StepLR sched(opt, 2, 0.5);
  CHECK(sched.base_lrs() == std::vector<double>{0.1, 0.4});
  sched.step();
  sched.step();
  CHECK(opt.lr(0) == Approx(0.05).epsilon(1e-15));
  CHECK(opt.lr(1) == Approx(0.2).epsilon(1e-15));
  auto late = leaves({{1}}, 9);
  opt.add_param_group({.params = late, .lr = 1.0});
  sched.step();  // epoch 3: the new group's base lr is its lr when the scheduler first sees it
  CHECK(opt.lr(2) == Approx(0.5).epsilon(1e-15));
  CHECK(sched.base_lrs().size() == 3);
}

TEST_CASE("param groups: the checkpoint round trip keeps each group's options",
          "[nn][optim][groups][state]") {
  const auto dir = std::filesystem::temp_directory_path() / "tapegrad_param_groups_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "opt.tgc").string();
  auto make = [](const std::vector<tg::Tensor>& ps) {
    return nn::AdamW({{.params = {ps[0]}}, {.params = {ps[1]}, .lr = 0.03, .beta2 = 0.9, .weight_decay = 0.0,
                                             .amsgrad = true}},
                     {.lr = 0.01});
  };
  auto a = leaves({{2, 3}, {4}}, 1);
  nn::AdamW opt_a = make(a);
  feed(a, 10);
  opt_a.step();
  opt_a.param_groups()[1].options().lr = 0.007;  // as a scheduler would
  opt_a.param_groups()[0].options().eps = 1e-5;
  feed(a, 20);
  opt_a.step();
  const tg::NamedTensors state = opt_a.state();
  std::vector<std::string> keys;
  for (const auto& [k, _] : state) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{
                    "group.0.lr", "group.0.beta1", "group.0.beta2", "group.0.eps", "group.0.weight_decay",
                    "group.0.amsgrad", "group.0.size", "group.1.lr", "group.1.beta1", "group.1.beta2",
                    "group.1.eps", "group.1.weight_decay", "group.1.amsgrad", "group.1.size", "0.step",
                    "0.exp_avg", "0.exp_avg_sq", "1.step", "1.exp_avg", "1.exp_avg_sq", "1.max_exp_avg_sq"});
  nn::save_checkpoint(path, nn::add_prefix(state, "optimizer."));

  std::vector<tg::Tensor> b;
  for (const auto& p : a) b.push_back(copy_values(p).set_requires_grad(true));
  nn::AdamW opt_b = make(b);
  opt_b.load_state(nn::strip_prefix(nn::load_checkpoint(path), "optimizer."));
  CHECK(opt_b.lr(1) == 0.007);
  CHECK(opt_b.param_groups()[0].options().eps == 1e-5);
  CHECK(opt_b.param_groups()[1].options().amsgrad);
  for (int s = 0; s < 2; ++s) {
    feed(a, 30 + 10 * s);
    feed(b, 30 + 10 * s);
    opt_a.step();
    opt_b.step();
  }
  for (std::size_t i = 0; i < a.size(); ++i) CHECK_THAT(b[i], AllClose(a[i], 0, 0));
  std::filesystem::remove_all(dir);
}

TEST_CASE("param groups: the state of a tapegrad without groups still loads",
          "[nn][optim][groups][state]") {
  auto ps = leaves({{2}, {3}}, 1);
  nn::SGD opt({{.params = {ps[0]}}, {.params = {ps[1]}, .lr = 0.3}}, {.lr = 0.1, .momentum = 0.9});
  const tg::NamedTensors old{{"lr", tg::scalar_tensor(0.05, tg::DType::f64)},
                             {"1.momentum_buffer", tg::ones({3}, tg::DType::f64)}};
  opt.load_state(old);
  CHECK(opt.lr(0) == 0.05);
  CHECK(opt.lr(1) == 0.05);
  const tg::Tensor before = copy_values(ps[1]);
  ps[1].set_grad(tg::zeros({3}, tg::DType::f64));
  opt.step();  // buf = 0.9·buf + 0; p -= lr·buf
  CHECK_THAT(ps[1], AllClose(before - 0.05 * 0.9, 1e-15, 0));
  tg::NamedTensors both = old;
  both.emplace_back("group.0.lr", tg::scalar_tensor(0.1, tg::DType::f64));
  CHECK_THROWS_WITH(opt.load_state(both), Catch::Contains("SGD::load_state") && Catch::Contains("both 'lr'"));
}

TEST_CASE("param groups: errors name the optimizer, the group and the parameter",
          "[nn][optim][groups]") {
  auto ps = leaves({{2, 3}, {4}, {5}}, 1);
  SECTION("a parameter in two groups") {
    CHECK_THROWS_AS(nn::SGD({{.params = {ps[0], ps[1]}}, {.params = {ps[2], ps[0]}}}), tg::ValueError);
    CHECK_THROWS_WITH(nn::Adam({{.params = {ps[0], ps[1]}}, {.params = {ps[2], ps[0]}}}),
                      Catch::Contains("Adam") && Catch::Contains("parameter 1 of group 1") &&
                          Catch::Contains("[2, 3]") && Catch::Contains("already in group 0"));
    nn::SGD opt({{.params = {ps[0]}}});
    CHECK_THROWS_WITH(opt.add_param_group({.params = {ps[1], ps[0]}}),
                      Catch::Contains("SGD") && Catch::Contains("already in group 0"));
    CHECK(opt.num_param_groups() == 1);  // the failed group was not added
    CHECK_THROWS_AS(opt.add_param_group({.params = {ps[1], ps[1]}}), tg::ValueError);
    opt.add_param_group({.params = {ps[1]}});
    CHECK(opt.parameters().size() == 2);
  }
  SECTION("invalid options, at construction, add_param_group and step") {
    CHECK_THROWS_WITH(nn::SGD({{.params = {ps[0]}}, {.params = {ps[1]}, .lr = -1.0}}),
                      Catch::Contains("SGD (group 1)") && Catch::Contains("lr") && Catch::Contains("-1"));
    CHECK_THROWS_WITH(nn::AdamW({{.params = {ps[0]}, .beta2 = 1.0}}),
                      Catch::Contains("AdamW (group 0)") && Catch::Contains("beta2"));
    CHECK_THROWS_AS(nn::SGD({{.params = {ps[0]}, .nesterov = true}}), tg::ValueError);
    CHECK_THROWS_WITH(nn::SGD(std::vector<nn::SGDGroup>{{.params = {}}}), Catch::Contains("empty parameter list"));
    nn::SGD opt({{.params = {ps[0]}}, {.params = {}}});  // an empty group among others is allowed
    CHECK_THROWS_AS(opt.add_param_group({.params = {ps[1]}, .momentum = -0.5}), tg::ValueError);
    CHECK(opt.num_param_groups() == 2);
    opt.param_groups()[0].options().weight_decay = -1.0;
    ps[0].set_grad(tg::ones({2, 3}, tg::DType::f64));
    const auto before = ps[0].to_vector<double>();
    CHECK_THROWS_WITH(opt.step(), Catch::Contains("SGD (group 0)") && Catch::Contains("weight_decay"));
    CHECK(ps[0].to_vector<double>() == before);
    CHECK_THROWS_WITH(opt.lr(2), Catch::Contains("SGD::lr") && Catch::Contains("no group 2"));
    CHECK_THROWS_AS(opt.set_lr(0, -0.1), tg::ValueError);
  }
  SECTION("load_state: groups that do not match") {
    nn::SGD two({{.params = {ps[0]}}, {.params = {ps[1], ps[2]}, .lr = 0.2}}, {.momentum = 0.9});
    const tg::NamedTensors state = two.state();
    nn::SGD one({{.params = {ps[0]}}});
    CHECK_THROWS_WITH(one.load_state(state), Catch::Contains("SGD::load_state") && Catch::Contains("group.1"));
    nn::SGD sizes({{.params = {ps[0], ps[1]}}, {.params = {ps[2]}}});
    CHECK_THROWS_WITH(sizes.load_state(state),
                      Catch::Contains("group 0 of the state has 1 parameters, this optimizer's has 2"));
    tg::NamedTensors missing = state;
    missing.erase(missing.begin() + 1);  // group.0.momentum
    CHECK_THROWS_WITH(two.load_state(missing), Catch::Contains("lacks [group.0.momentum]"));
    tg::NamedTensors bad_bool = state;
    bad_bool[4].second = tg::scalar_tensor(0.5, tg::DType::f64);  // group.0.nesterov
    REQUIRE(bad_bool[4].first == "group.0.nesterov");
    CHECK_THROWS_WITH(two.load_state(bad_bool), Catch::Contains("group.0.nesterov must be 0 or 1"));
    tg::NamedTensors bad_value = state;
    bad_value[6].second = tg::scalar_tensor(-3.0, tg::DType::f64);  // group.1.lr
    REQUIRE(bad_value[6].first == "group.1.lr");
    CHECK_THROWS_WITH(two.load_state(bad_value), Catch::Contains("SGD (group 1)") && Catch::Contains("lr"));
    tg::NamedTensors unknown = state;
    unknown.emplace_back("group.0.beta1", tg::scalar_tensor(0.9, tg::DType::f64));
    CHECK_THROWS_WITH(two.load_state(unknown), Catch::Contains("unexpected entry 'group.0.beta1'"));
    CHECK(two.lr(1) == 0.2);  // nothing was half-loaded
  }
}
