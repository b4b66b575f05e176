// ConvTranspose2d, Conv1d, MaxPool1d and AvgPool1d: libtorch's parameter names and layouts,
// PyTorch's init bounds, and the forward and derivatives (to 2nd order) of each module with
// the weights of its PyTorch twin, from the module cases of
// tests/fixtures/conv_transpose_reference.txt (make_conv_transpose_reference.py).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;

namespace {

constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/conv_transpose_reference.txt";

std::vector<std::int64_t> config(const tg::testing::FixtureCase& c) {
  std::vector<std::int64_t> out;
  for (double v : c.values("config")) out.push_back(static_cast<std::int64_t>(std::llround(v)));
  return out;
}

/// The case's module, built from its config and parameter shapes (nullptr: not a module case).
std::shared_ptr<nn::Module> module_of(const tg::testing::FixtureCase& c) {
  const std::string& op = c.word("op");
  const std::vector<std::int64_t> k = config(c);
  if (op == "ConvTranspose2d") {
    const tg::Shape w = c.shape("x1");
    return nn::conv_transpose2d(w[0], w[1] * k[6], {w[2], w[3]},
                                {.stride = {k[0], k[1]}, .padding = {k[2], k[3]}, .output_padding = {k[4], k[5]},
                                 .groups = k[6], .dilation = {k[7], k[8]}, .bias = k[9] != 0});
  }
  if (op == "Conv1d") {
    const tg::Shape w = c.shape("x1");
    return nn::conv1d(w[1] * k[3], w[0], w[2],
                      {.stride = k[0], .padding = k[1], .dilation = k[2], .groups = k[3], .bias = k[4] != 0});
  }
  if (op == "MaxPool1d") {
    return nn::max_pool1d({.kernel_size = k[0], .stride = k[1], .padding = k[2], .dilation = k[3], .ceil_mode = k[4] != 0});
  }
  if (op == "AvgPool1d") {
    return nn::avg_pool1d(
        {.kernel_size = k[0], .stride = k[1], .padding = k[2], .ceil_mode = k[3] != 0, .count_include_pad = k[4] != 0});
  }
  return nullptr;
}

}  // namespace

TEST_CASE("ConvTranspose2d Conv1d MaxPool1d AvgPool1d with their PyTorch twins' weights match forward and "
          "derivatives",
          "[nn][conv-transpose-layers]") {
  std::size_t modules = 0;
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    const std::shared_ptr<nn::Module> m = module_of(c);
    if (!m) continue;
    ++modules;
    SECTION(c.name) {
      m->to(tg::DType::f64);
      // libtorch's names and layouts: the twin's parameters, in its order, fit ours exactly.
      const tg::NamedTensors params = m->named_parameters();
      std::size_t count = 0;
      while (c.has(fmt::format("x{}.shape", count + 1))) ++count;
      REQUIRE(params.size() == count);
      const char* names[] = {"weight", "bias"};
      for (std::size_t i = 0; i < count; ++i) {
        CHECK(params[i].first == names[i]);
        CHECK(params[i].second.shape() == c.shape(fmt::format("x{}", i + 1)));
      }
      tg::testing::check_case_derivatives(
          c,
          [&](const std::vector<tg::Tensor>& x) {
            tg::NamedTensors swapped;
            for (std::size_t i = 1; i < x.size(); ++i) swapped.emplace_back(names[i - 1], x[i]);
            return nn::functional_call(*m, swapped, x[0]);
          },
          1e-12, 1e-9);
      // The same through the module's own parameters, after copying the twin's values in.
      for (std::size_t i = 0; i < count; ++i) {
        tg::NoGradGuard no_grad;
        m->named_parameters()[i].second.copy_(c.tensor(fmt::format("x{}", i + 1)));
      }
      const tg::Tensor x = c.tensor("x0").set_requires_grad(true);
      (*m)(x).backward(c.tensor("v", c.shape("out")));
      tg::testing::check_reference(c.name, "g0 via the module", x.grad(), c.tensor("g0", x.shape()), 1e-12, 1e-9);
      for (std::size_t i = 0; i < count; ++i) {
        const std::string key = fmt::format("g{}", i + 1);
        tg::testing::check_reference(c.name, key + " via the module", m->named_parameters()[i].second.grad(),
                                     c.tensor(key, c.shape(fmt::format("x{}", i + 1))), 1e-12, 1e-9);
      }
    }
  }
  CHECK(modules == 5);
}

TEST_CASE("ConvTranspose2d and Conv1d: layouts and PyTorch's init bounds", "[nn][conv-transpose-layers]") {
  tg::manual_seed(7);
  const auto ct = nn::conv_transpose2d(8, 6, {3, 2}, {.stride = 2, .groups = 2});
  CHECK(ct->weight().shape() == tg::Shape{8, 3, 3, 2});  // [in, out/groups, kh, kw]
  CHECK(ct->bias().shape() == tg::Shape{6});
  const auto c1 = nn::conv1d(4, 6, 5, {.groups = 2, .bias = false});
  CHECK(c1->weight().shape() == tg::Shape{6, 2, 5});
  CHECK_FALSE(c1->bias().defined());
  CHECK(c1->named_parameters().size() == 1);
  // kaiming_uniform(a = √5) and the bias: U(±1/√fan_in), fan_in = weight.size(1)·kernel
  // (3·3·2 = 18 for the transposed layer, PyTorch's rule; 2·5 = 10 for Conv1d).
  auto max_abs = [](const tg::Tensor& t) {
    const auto v = t.to_vector<double>();
    double m = 0;
    for (double e : v) m = std::max(m, std::abs(e));
    return m;
  };
  for (const auto& [t, fan_in] : {std::pair{ct->weight(), 18.0}, std::pair{ct->bias(), 18.0},
                                  std::pair{c1->weight(), 10.0}}) {
    const double bound = 1 / std::sqrt(fan_in);
    CHECK(max_abs(t) <= bound);
    CHECK(max_abs(t) > 0.5 * bound);
  }
  const tg::Tensor y = (*ct)(tg::randn({2, 8, 3, 4}));
  CHECK(y.shape() == tg::Shape{2, 6, 7, 8});  // (3-1)·2 + 3 = 7, (4-1)·2 + 2 = 8
  CHECK((*c1)(tg::randn({4, 9})).shape() == tg::Shape{6, 5});
  CHECK((*nn::max_pool1d({.kernel_size = 3}))(tg::randn({2, 3, 10})).shape() == tg::Shape{2, 3, 3});
  CHECK((*nn::avg_pool1d({.kernel_size = 2, .stride = 1}))(tg::randn({3, 10})).shape() == tg::Shape{3, 9});
}

TEST_CASE("ConvTranspose2d and Conv1d: bad channels, groups or kernels name the layer", "[nn][conv-transpose-layers]") {
  auto message = [](auto f) {
    try {
      f();
    } catch (const tg::ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no ValueError");
  };
  CHECK(message([] { nn::ConvTranspose2d(4, 6, 3, {.groups = 4}); }) ==
        "ConvTranspose2d: groups=4 must divide in_channels=4 and out_channels=6");
  CHECK(message([] { nn::ConvTranspose2d(0, 6, 3); }) == "ConvTranspose2d: in_channels must be positive, got 0");
  CHECK(message([] { nn::Conv1d(4, 6, 0); }) == "Conv1d: kernel_size must be positive, got 0");
  CHECK(message([] { nn::Conv1d(3, 6, 2, {.groups = 2}); }) ==
        "Conv1d: groups=2 must divide in_channels=3 and out_channels=6");
}
