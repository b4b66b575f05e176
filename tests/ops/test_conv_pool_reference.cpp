// conv2d, max_pool2d and avg_pool2d against values PyTorch 1.13 computed (CPU, float64),
// read from tests/fixtures/conv_pool_reference.txt (make_conv_pool_reference.py writes it).
// Forward outputs, max-pool indices and every gradient must agree to 1e-9 relative.
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

namespace {

struct Case {
  std::string op, label;
  std::map<std::string, std::vector<std::int64_t>> attrs;
  std::map<std::string, tg::Tensor> tensors;

  std::array<std::int64_t, 2> pair(const std::string& name) const {
    const auto& v = attrs.at(name);
    return {v.at(0), v.at(1)};
  }
  std::int64_t one(const std::string& name) const { return attrs.at(name).at(0); }
  tg::Tensor leaf(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) return {};
    return it->second.clone().detach().set_requires_grad(true);
  }
};

std::vector<Case> load_cases() {
  std::ifstream in(TAPEGRAD_FIXTURE_DIR "/conv_pool_reference.txt");
  REQUIRE(in.good());
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string kind;
    s >> kind;
    if (kind == "case") {
      cases.emplace_back();
      s >> cases.back().op >> cases.back().label;
    } else if (kind == "attr") {
      std::string name;
      s >> name;
      std::int64_t v = 0;
      while (s >> v) cases.back().attrs[name].push_back(v);
    } else if (kind == "tensor") {
      std::string name;
      std::size_t rank = 0;
      s >> name >> rank;
      std::vector<std::int64_t> sizes(rank);
      for (auto& d : sizes) s >> d;
      std::vector<double> values;
      std::string token;
      while (s >> token) values.push_back(std::strtod(token.c_str(), nullptr));
      cases.back().tensors[name] = tg::from_vector(values, tg::Shape(sizes), tg::DType::f64);
    }
  }
  return cases;
}

void require_close(const tg::Tensor& got, const tg::Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(got.shape() == want.shape());
  const auto g = got.to_vector<double>();
  const auto w = want.to_vector<double>();
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO("element " << i << ": got " << g[i] << ", PyTorch " << w[i]);
    if (std::isnan(w[i])) {
      REQUIRE(std::isnan(g[i]));
    } else if (std::isinf(w[i])) {
      REQUIRE(g[i] == w[i]);
    } else {
      REQUIRE(std::abs(g[i] - w[i]) <= 1e-9 * std::abs(w[i]) + 1e-12);
    }
  }
}

}  // namespace

TEST_CASE("conv2d, max_pool2d and avg_pool2d match PyTorch 1.13 in f64", "[conv][pool][reference]") {
  const auto cases = load_cases();
  REQUIRE(cases.size() >= 30);
  for (const Case& c : cases) {
    SECTION(c.op + " " + c.label) {
      tg::Tensor x = c.leaf("x");
      tg::Tensor out;
      std::map<std::string, tg::Tensor> wrt;  // expected-gradient name -> leaf
      wrt["grad_x"] = x;
      if (c.op == "conv2d") {
        tg::Tensor w = c.leaf("w");
        tg::Tensor b = c.leaf("b");
        wrt["grad_w"] = w;
        if (b.defined()) wrt["grad_b"] = b;
        const auto mode = c.one("padding_mode");
        out = tg::conv2d(x, w, b,
                         {.stride = c.pair("stride"), .padding = c.pair("padding"),
                          .dilation = c.pair("dilation"), .groups = c.one("groups"),
                          .padding_mode = mode == 1   ? tg::ConvPadding::same
                                          : mode == 2 ? tg::ConvPadding::valid
                                                      : tg::ConvPadding::explicit_sizes});
      } else if (c.op == "max_pool2d") {
        auto r = tg::max_pool2d_with_indices(
            x, {.kernel_size = c.pair("kernel_size"), .stride = c.pair("stride"),
                .padding = c.pair("padding"), .dilation = c.pair("dilation"),
                .ceil_mode = c.one("ceil_mode") != 0});
        out = r.values;
        REQUIRE(r.indices.dtype() == tg::DType::i64);
        require_close(r.indices, c.tensors.at("indices"), "indices");
      } else {
        const auto divisor = c.one("divisor_override");
        out = tg::avg_pool2d(x, {.kernel_size = c.pair("kernel_size"), .stride = c.pair("stride"),
                                 .padding = c.pair("padding"), .ceil_mode = c.one("ceil_mode") != 0,
                                 .count_include_pad = c.one("count_include_pad") != 0,
                                 .divisor_override = divisor != 0 ? std::optional<std::int64_t>(divisor)
                                                                  : std::nullopt});
      }
      require_close(out, c.tensors.at("out"), "forward output");
      out.backward(c.tensors.at("grad_out"));
      for (const auto& [name, t] : wrt) require_close(t.grad(), c.tensors.at(name), name);
    }
  }
}
