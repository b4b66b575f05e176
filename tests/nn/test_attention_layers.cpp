// MultiheadAttention and TransformerEncoderLayer: parameter names and shapes as PyTorch 1.13's,
// forward, attention weights and every input and parameter gradient against
// tests/fixtures/attention_reference.txt (make_attention_reference.py: torch's modules with
// their weights copied, float64, eval mode) to 1e-9 relative, and the errors.
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Matchers::Contains;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/attention_reference.txt";

std::int64_t config_int(const tg::testing::FixtureCase& c, std::size_t i) {
  return static_cast<std::int64_t>(std::llround(c.values("config").at(i)));
}

/// The case's optional mask `key`, bool or f64.
tg::Tensor mask(const tg::testing::FixtureCase& c, const std::string& key) {
  if (!c.has(key + ".shape")) return {};
  return c.tensor(key, c.values(key + "_bool").at(0) != 0.0 ? tg::DType::boolean : tg::DType::f64);
}

/// Copies the case's parameters into the module (names must be the same set as torch's).
void load_parameters(const tg::testing::FixtureCase& c, nn::Module& module) {
  std::size_t count = 0;
  for (auto& [name, p] : module.named_parameters()) {
    INFO(c.name << ": parameter " << name);
    REQUIRE(c.has("param." + name + ".shape"));
    REQUIRE(p.shape() == c.shape("param." + name));
    p.set_data(c.tensor("param." + name));
    ++count;
  }
  std::size_t in_file = 0;
  for (const auto& [key, values] : c.raw) in_file += key.rfind("param.", 0) == 0 && key.find(".shape") == std::string::npos;
  CHECK(count == in_file);
}

void check_parameter_grads(const tg::testing::FixtureCase& c, nn::Module& module) {
  for (auto& [name, p] : module.named_parameters()) {
    tg::testing::check_reference(c.name, "grad of " + name, p.grad(), c.tensor("grad.param." + name, p.shape()),
                                 kAtol, kRtol);
  }
}

void run_mha(const tg::testing::FixtureCase& c) {
  const std::int64_t E = config_int(c, 0), H = config_int(c, 1);
  const bool batch_first = config_int(c, 2) != 0, need_weights = config_int(c, 3) != 0,
             average = config_int(c, 4) != 0, bias = config_int(c, 5) != 0;
  auto m = nn::multihead_attention(E, H, {.bias = bias, .batch_first = batch_first});
  m->to(tg::DType::f64);
  m->eval();
  load_parameters(c, *m);
  const bool self = c.values("self").at(0) != 0.0;
  const tg::Tensor query = c.tensor("query").set_requires_grad(true);
  const tg::Tensor key = self ? query : c.tensor("key").set_requires_grad(true);
  const tg::Tensor value = self ? query : c.tensor("value").set_requires_grad(true);
  const auto [out, weights] = m->forward(query, key, value, mask(c, "key_padding_mask"), need_weights,
                                         mask(c, "attn_mask"), average);
  tg::testing::check_reference(c.name, "out", out, c.tensor("out"), kAtol, kRtol);
  tg::Tensor loss = tg::sum(out * c.tensor("v_out", c.shape("out")));
  REQUIRE(weights.defined() == need_weights);
  if (need_weights) {
    tg::testing::check_reference(c.name, "weights", weights, c.tensor("weights"), kAtol, kRtol);
    loss = loss + tg::sum(weights * c.tensor("v_weights", c.shape("weights")));
  }
  loss.backward();
  tg::testing::check_reference(c.name, "grad of query", query.grad(), c.tensor("grad.query", query.shape()), kAtol,
                               kRtol);
  if (!self) {
    tg::testing::check_reference(c.name, "grad of key", key.grad(), c.tensor("grad.key", key.shape()), kAtol, kRtol);
    tg::testing::check_reference(c.name, "grad of value", value.grad(), c.tensor("grad.value", value.shape()),
                                 kAtol, kRtol);
  }
  check_parameter_grads(c, *m);
}

void run_tel(const tg::testing::FixtureCase& c) {
  const std::vector<double>& cfg = c.values("config");
  REQUIRE(cfg.size() == 7);
  auto layer = nn::transformer_encoder_layer(
      config_int(c, 0), config_int(c, 1),
      {.dim_feedforward = config_int(c, 2),
       .activation = config_int(c, 4) != 0 ? nn::TransformerActivation::gelu : nn::TransformerActivation::relu,
       .layer_norm_eps = cfg[6],
       .batch_first = config_int(c, 5) != 0,
       .norm_first = config_int(c, 3) != 0});
  layer->to(tg::DType::f64);
  layer->eval();
  load_parameters(c, *layer);
  const tg::Tensor src = c.tensor("src").set_requires_grad(true);
  const tg::Tensor out = layer->forward(src, mask(c, "attn_mask"), mask(c, "key_padding_mask"));
  tg::testing::check_reference(c.name, "out", out, c.tensor("out"), kAtol, kRtol);
  tg::sum(out * c.tensor("v_out", c.shape("out"))).backward();
  tg::testing::check_reference(c.name, "grad of src", src.grad(), c.tensor("grad.src", src.shape()), kAtol, kRtol);
  check_parameter_grads(c, *layer);
}

}  // namespace

TEST_CASE("attention layers reference: MultiheadAttention and TransformerEncoderLayer outputs, weights and every "
          "gradient match PyTorch 1.13",
          "[nn][attention]") {
  std::map<std::string, int> seen;
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    const std::string& op = c.word("op");
    if (op == "sdpa") continue;
    ++seen[op];
    SECTION(c.name) {
      if (op == "mha") run_mha(c);
      else if (op == "tel") run_tel(c);
      else FAIL(fmt::format("{}: case {} has op {}, which the test does not know", kFixture, c.name, op));
    }
  }
  CHECK(seen["mha"] >= 13);
  CHECK(seen["tel"] >= 4);
}

TEST_CASE("MultiheadAttention and TransformerEncoderLayer have PyTorch's parameter names and shapes", "[nn][attention]") {
  auto m = nn::multihead_attention(8, 2);
  std::vector<std::string> names;
  for (const auto& [name, p] : m->named_parameters()) names.push_back(fmt::format("{} {}", name, p.shape()));
  CHECK(names == std::vector<std::string>{"in_proj_weight [24, 8]", "in_proj_bias [24]", "out_proj.weight [8, 8]",
                                          "out_proj.bias [8]"});
  CHECK(tg::sum(tg::abs(m->in_proj_bias())).item<double>() == 0.0);
  CHECK(tg::sum(tg::abs(m->out_proj()->bias())).item<double>() == 0.0);
  CHECK(nn::multihead_attention(8, 2, {.bias = false})->named_parameters().size() == 2);

  auto layer = nn::transformer_encoder_layer(8, 2, {.dim_feedforward = 16});
  names.clear();
  for (const auto& [name, p] : layer->named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"self_attn.in_proj_weight", "self_attn.in_proj_bias",
                                          "self_attn.out_proj.weight", "self_attn.out_proj.bias", "linear1.weight",
                                          "linear1.bias", "linear2.weight", "linear2.bias", "norm1.weight",
                                          "norm1.bias", "norm2.weight", "norm2.bias"});
  std::vector<std::string> children;
  for (const auto& [name, child] : layer->children()) children.push_back(name);
  CHECK(children == std::vector<std::string>{"self_attn", "linear1", "dropout", "linear2", "norm1", "norm2",
                                             "dropout1", "dropout2"});
}

TEST_CASE("TransformerEncoderLayer drops out in training only", "[nn][attention]") {
  auto layer = nn::transformer_encoder_layer(8, 2, {.dim_feedforward = 16, .dropout = 0.5, .batch_first = true});
  const tg::Tensor src = tg::randn({2, 5, 8});
  const tg::Tensor a = (*layer)(src), b = (*layer)(src);
  CHECK(tg::amax(tg::abs(a - b)).item<double>() > 1e-3);
  layer->eval();
  const tg::Tensor c = (*layer)(src), d = (*layer)(src);
  CHECK(tg::amax(tg::abs(c - d)).item<double>() == 0.0);
  CHECK(c.shape() == src.shape());
}

TEST_CASE("MultiheadAttention errors name the module, the argument and the shapes", "[nn][attention][errors]") {
  CHECK_THROWS_AS(nn::multihead_attention(10, 4), tg::ValueError);
  CHECK_THROWS_WITH(nn::multihead_attention(10, 4),
                    Contains("MultiheadAttention") && Contains("embed_dim=10") && Contains("num_heads=4"));
  CHECK_THROWS_WITH(nn::multihead_attention(8, 2, {.kdim = 4}), Contains("MultiheadAttention") && Contains("kdim=4"));
  auto m = nn::multihead_attention(8, 2);
  const tg::Tensor x = tg::randn({3, 2, 8});
  CHECK_THROWS_AS(m->forward(tg::randn({3, 2, 6}), x, x), tg::ShapeError);
  CHECK_THROWS_WITH(m->forward(tg::randn({3, 2, 6}), x, x),
                    Contains("MultiheadAttention") && Contains("[3, 2, 6]") && Contains("E=8"));
  CHECK_THROWS_WITH(m->forward(x, tg::randn({4, 3, 8}), tg::randn({4, 3, 8})),
                    Contains("MultiheadAttention") && Contains("[4, 3, 8]") && Contains("batch size 2"));
  CHECK_THROWS_AS(m->forward(x, x, x, tg::zeros({2, 4}, tg::DType::boolean)), tg::ShapeError);
  CHECK_THROWS_WITH(m->forward(x, x, x, tg::zeros({2, 4}, tg::DType::boolean)),
                    Contains("key_padding_mask") && Contains("[2, 3]") && Contains("[2, 4]"));
  CHECK_THROWS_AS(m->forward(x, x, x, {}, false, tg::zeros({3, 4}, tg::DType::boolean)), tg::ShapeError);
  CHECK_THROWS_WITH(m->forward(x, x, x, {}, false, tg::zeros({3, 4}, tg::DType::boolean)),
                    Contains("attn_mask") && Contains("[3, 3]") && Contains("[4, 3, 3]") && Contains("[3, 4]"));
  CHECK_THROWS_AS(m->forward(x, x, x, {}, false, tg::zeros({3, 3}, tg::DType::i64)), tg::DTypeError);
  CHECK_THROWS_WITH(m->forward(x, x, x, {}, false, tg::zeros({3, 3}, tg::DType::i64)),
                    Contains("MultiheadAttention") && Contains("attn_mask") && Contains("i64"));
  CHECK_THROWS_AS(m->forward(x, x, x, tg::zeros({2, 3}, tg::DType::f64)), tg::DTypeError);
  CHECK_THROWS_AS(nn::transformer_encoder_layer(8, 3), tg::ValueError);
  CHECK_THROWS_WITH(nn::transformer_encoder_layer(8, 2, {.dim_feedforward = 0}),
                    Contains("TransformerEncoderLayer") && Contains("dim_feedforward"));
}
