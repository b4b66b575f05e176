// Second derivatives (double backward) against values PyTorch 1.13 computed (CPU, float64),
// read from tests/fixtures/second_order_reference.txt (make_second_order_reference.py writes it
// and documents the format). For each case out = f(x_0, ..., x_k-1), a random upstream v that
// itself requires grad and random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = sum_i <g_i, u_i>,  ds/dx_j and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0). An input s does not depend
// on comes back undefined (allow_unused) and stands for zeros, as PyTorch's None does.
// The cases through avg_pool2d, max_pool2d and batch_norm2d are a test case of their own,
// tagged [pool-bn]: their second order runs through the ops that are their VJPs
// (avg_pool2d_backward, max_pool2d_backward and max_pool2d_gather) and through
// batch_norm2d's recorded VJP, which recomputes the batch statistics from x. So are the conv2d
// cases, tagged [conv]: theirs runs through conv2d_input_grad and conv2d_weight_grad.
// The last test case, tagged [lenet-penalty], is a WGAN-GP gradient penalty on LeNet-5:
// P = ||dL/dx||² for a cross-entropy L, and dP/dθ for all ten parameters, which differentiates
// every layer's VJP (conv2d, max_pool2d, relu, linear, cross_entropy) once more.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/second_order_reference.txt";
constexpr const char* kLenetCase = "lenet_penalty";  // its own layout, see the generator

/// One case of the fixture: inputs, options and PyTorch's results.
struct Case {
  std::string name;
  std::vector<double> config;       ///< op options (empty when f reads none)
  std::vector<tg::Tensor> x;        ///< differentiable inputs
  std::vector<tg::Tensor> c;        ///< floating constants (running statistics)
  tg::Tensor target;                ///< i64 class indices, or undefined
  tg::Tensor v, out, ds_dv;         ///< upstream gradient, forward output, ds/dv
  std::vector<tg::Tensor> u, g, ds_dx;  ///< one per input

  std::int64_t option(std::size_t i) const {
    if (i >= config.size())
      FAIL(fmt::format("{}: config has {} values, option {} was asked for", name, config.size(),
                       i));
    return static_cast<std::int64_t>(std::llround(config[i]));
  }
  tg::Tensor constant(std::size_t i) const { return i < c.size() ? c[i] : tg::Tensor(); }
  tg::Reduction reduction() const {
    const std::int64_t code = option(0);
    if (code < 0 || code > 2)
      FAIL(fmt::format("{}: reduction code {} is not 0 (none), 1 (mean) or 2 (sum)", name, code));
    return code == 0 ? tg::Reduction::none : code == 1 ? tg::Reduction::mean : tg::Reduction::sum;
  }
};

// ---- reading the fixture ------------------------------------------------------------------

using Items = std::map<std::string, std::vector<double>>;  // item ("x0.shape", "g1") -> values

std::vector<double> item(const Items& items, const std::string& case_name, const std::string& key) {
  const auto it = items.find(key);
  if (it == items.end()) FAIL(fmt::format("{}: case {} has no item {}", kFixture, case_name, key));
  return it->second;
}

tg::Shape shape_item(const Items& items, const std::string& case_name, const std::string& key) {
  std::vector<std::int64_t> sizes;
  for (double d : item(items, case_name, key)) sizes.push_back(static_cast<std::int64_t>(d));
  return tg::Shape(sizes);
}

tg::Tensor tensor_item(const Items& items, const std::string& case_name, const std::string& key,
                       const tg::Shape& shape, tg::DType dtype = tg::DType::f64) {
  const std::vector<double> values = item(items, case_name, key);
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    FAIL(fmt::format("{}: {}.{} has {} values, its shape {} needs {}", kFixture, case_name, key,
                     values.size(), shape, shape.numel()));
  }
  if (dtype == tg::DType::i64) {
    std::vector<std::int64_t> ints;
    for (double d : values) ints.push_back(static_cast<std::int64_t>(d));
    return tg::from_vector(ints, shape, tg::DType::i64);
  }
  return tg::from_vector(values, shape, dtype);
}

Case build_case(const std::string& name, const Items& items) {
  Case c;
  c.name = name;
  if (items.count("config")) c.config = items.at("config");
  for (std::size_t i = 0; items.count(fmt::format("x{}.shape", i)); ++i) {
    const tg::Shape shape = shape_item(items, name, fmt::format("x{}.shape", i));
    c.x.push_back(tensor_item(items, name, fmt::format("x{}", i), shape));
    c.u.push_back(tensor_item(items, name, fmt::format("u{}", i), shape));
    c.g.push_back(tensor_item(items, name, fmt::format("g{}", i), shape));
    c.ds_dx.push_back(tensor_item(items, name, fmt::format("ds_dx{}", i), shape));
  }
  if (c.x.empty()) FAIL(fmt::format("{}: case {} has no input x0", kFixture, name));
  for (std::size_t i = 0; items.count(fmt::format("c{}.shape", i)); ++i) {
    const tg::Shape shape = shape_item(items, name, fmt::format("c{}.shape", i));
    c.c.push_back(tensor_item(items, name, fmt::format("c{}", i), shape));
  }
  if (items.count("target")) {
    const auto n = static_cast<std::int64_t>(items.at("target").size());
    c.target = tensor_item(items, name, "target", tg::Shape{n}, tg::DType::i64);
  }
  const tg::Shape out_shape = shape_item(items, name, "v.shape");
  c.v = tensor_item(items, name, "v", out_shape);
  c.out = tensor_item(items, name, "out", out_shape);
  c.ds_dv = tensor_item(items, name, "ds_dv", out_shape);
  return c;
}

/// The fixture's cases in file order, each as its items.
std::vector<std::pair<std::string, Items>> read_fixture() {
  std::ifstream in(kFixture);
  if (!in.good()) FAIL(fmt::format("cannot open {}", kFixture));
  std::vector<std::string> order;
  std::map<std::string, Items> raw;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key;
    s >> key;
    const auto dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size())
      FAIL(fmt::format("{}:{}: key '{}' is not <case>.<item>", kFixture, line_no, key));
    const std::string case_name = key.substr(0, dot);
    if (!raw.count(case_name)) order.push_back(case_name);
    std::vector<double>& values = raw[case_name][key.substr(dot + 1)];
    if (!values.empty()) FAIL(fmt::format("{}:{}: key {} appears twice", kFixture, line_no, key));
    std::string token;
    while (s >> token) {
      char* end = nullptr;
      values.push_back(std::strtod(token.c_str(), &end));
      if (end != token.c_str() + token.size())
        FAIL(fmt::format("{}:{}: {} holds '{}', not a number", kFixture, line_no, key, token));
    }
  }
  std::vector<std::pair<std::string, Items>> cases;
  for (const std::string& name : order) cases.emplace_back(name, raw.at(name));
  return cases;
}

// ---- the functions, one per case name (the same f as the generator) ----------------------------

using Inputs = std::vector<tg::Tensor>;
using CaseFn = std::function<tg::Tensor(const Case&, const Inputs&)>;

/// Which test case runs a fixture case.
enum class Family {
  basic,    ///< element-wise, reductions, shapes, matmul, softmax and losses
  pool_bn,  ///< through avg_pool2d, max_pool2d or batch_norm2d
  conv,     ///< through conv2d
};

struct KnownCase {
  std::string name;
  Family family;
  CaseFn f;
};

tg::Tensor pow_case(const Case& c, const Inputs& x) { return tg::pow(x[0], c.config.at(0)); }
tg::Tensor matmul_case(const Case&, const Inputs& x) { return tg::matmul(x[0], x[1]); }
tg::Tensor nll_case(const Case& c, const Inputs& x) {
  return tg::nll_loss(tg::log_softmax(x[0] * x[1], 1), c.target, c.reduction());
}
tg::Tensor mse_case(const Case& c, const Inputs& x) {
  return tg::mse_loss(tg::tanh(x[0]), x[1], c.reduction());
}

/// config: kh kw sh sw ph pw ceil_mode count_include_pad divisor_override (0 = none)
tg::Tensor avg_pool(const Case& c, const tg::Tensor& x) {
  const std::int64_t divisor = c.option(8);
  return tg::avg_pool2d(x, {.kernel_size = {c.option(0), c.option(1)},
                            .stride = {c.option(2), c.option(3)},
                            .padding = {c.option(4), c.option(5)},
                            .ceil_mode = c.option(6) != 0,
                            .count_include_pad = c.option(7) != 0,
                            .divisor_override = divisor != 0 ? std::optional<std::int64_t>(divisor)
                                                             : std::nullopt});
}

/// config: kh kw sh sw ph pw dh dw ceil_mode
tg::Tensor max_pool(const Case& c, const tg::Tensor& x) {
  return tg::max_pool2d(x, {.kernel_size = {c.option(0), c.option(1)},
                            .stride = {c.option(2), c.option(3)},
                            .padding = {c.option(4), c.option(5)},
                            .dilation = {c.option(6), c.option(7)},
                            .ceil_mode = c.option(8) != 0});
}

// Pooling and batch norm feed tanh(layer(x) * m), m = x[1], so that their second derivatives
// are not identically zero.
tg::Tensor avg_pool_case(const Case& c, const Inputs& x) {
  return tg::tanh(avg_pool(c, x[0]) * x[1]);
}
tg::Tensor max_pool_case(const Case& c, const Inputs& x) {
  return tg::tanh(max_pool(c, x[0]) * x[1]);
}

/// config: training momentum eps; inputs x, m, weight, bias; constants running_mean, running_var
tg::Tensor batch_norm_case(const Case& c, const Inputs& x) {
  const tg::Tensor y = tg::batch_norm2d(x[0], c.constant(0), c.constant(1), x[2], x[3],
                                        c.option(0) != 0, c.config.at(1), c.config.at(2));
  return tg::tanh(y * x[1]);
}

/// config: sh sw ph pw dh dw groups padding_mode (0 explicit ph pw, 1 same, 2 valid) has_bias;
/// inputs x, w, b (when has_bias), m: out = tanh(conv2d(x, w, b) * m).
tg::Tensor conv_case(const Case& c, const Inputs& x) {
  const bool has_bias = c.option(8) != 0;
  if (x.size() != (has_bias ? 4U : 3U)) {
    FAIL(fmt::format("{}: has_bias={} needs {} inputs (x, w, {}m), the fixture has {}", c.name,
                     has_bias, has_bias ? 4 : 3, has_bias ? "b, " : "", x.size()));
  }
  const std::int64_t mode = c.option(7);
  if (mode < 0 || mode > 2)
    FAIL(fmt::format("{}: padding mode {} is not 0 (explicit), 1 (same) or 2 (valid)", c.name,
                     mode));
  const tg::Tensor y = tg::conv2d(
      x[0], x[1], has_bias ? x[2] : tg::Tensor(),
      {.stride = {c.option(0), c.option(1)},
       .padding = {c.option(2), c.option(3)},
       .dilation = {c.option(4), c.option(5)},
       .groups = c.option(6),
       .padding_mode = mode == 0   ? tg::ConvPadding::explicit_sizes
                       : mode == 1 ? tg::ConvPadding::same
                                   : tg::ConvPadding::valid});
  return tg::tanh(y * x.back());
}

const std::vector<KnownCase>& known_cases() {
  static const std::vector<KnownCase> table = {
      {"tanh", Family::basic, [](const Case&, const Inputs& x) { return tg::tanh(x[0]); }},
      {"sigmoid", Family::basic, [](const Case&, const Inputs& x) { return tg::sigmoid(x[0]); }},
      {"exp", Family::basic, [](const Case&, const Inputs& x) { return tg::exp(x[0]); }},
      {"log", Family::basic, [](const Case&, const Inputs& x) { return tg::log(x[0]); }},
      {"sqrt", Family::basic, [](const Case&, const Inputs& x) { return tg::sqrt(x[0]); }},
      {"pow_3", Family::basic, pow_case},
      {"pow_minus_1_5", Family::basic, pow_case},
      {"div", Family::basic, [](const Case&, const Inputs& x) { return x[0] / x[1]; }},
      {"mul_broadcast", Family::basic, [](const Case&, const Inputs& x) { return x[0] * x[1]; }},
      {"scalar_forms", Family::basic,
       [](const Case&, const Inputs& x) {
         return (1.5 - x[0]) * (2.0 / x[1]) + x[0] / 4.0 - x[0] * 0.5 + 0.25;
       }},
      {"relu_product", Family::basic,
       [](const Case&, const Inputs& x) { return tg::relu(x[0]) * x[1]; }},
      {"sum_dims_0_2_keepdim", Family::basic,
       [](const Case& c, const Inputs& x) {  // config: keepdim, dims...
         std::vector<std::int64_t> dims;
         for (std::size_t i = 1; i < c.config.size(); ++i) dims.push_back(c.option(i));
         return tg::sum(x[0] * x[1], dims, c.option(0) != 0);
       }},
      {"mean_all", Family::basic,
       [](const Case&, const Inputs& x) { return tg::mean(tg::tanh(x[0]) * x[1]); }},
      {"reshape_permute_tanh", Family::basic,
       [](const Case&, const Inputs& x) {
         return tg::tanh(tg::transpose(tg::permute(tg::reshape(x[0], {2, 3, 4}), {2, 0, 1}), 0, 2));
       }},
      {"matmul_2d", Family::basic, matmul_case},
      {"matmul_batched", Family::basic, matmul_case},
      {"matmul_shared_b", Family::basic, matmul_case},
      {"linear_bias", Family::basic,
       [](const Case&, const Inputs& x) { return tg::linear(x[0], x[1], x[2]); }},
      {"softmax_dim1", Family::basic,
       [](const Case& c, const Inputs& x) { return tg::softmax(x[0] * x[1], c.option(0)); }},
      {"log_softmax_dim_last", Family::basic,
       [](const Case& c, const Inputs& x) {
         return tg::log_softmax(tg::tanh(x[0]) * 3.0, c.option(0));
       }},
      {"nll_loss_mean", Family::basic, nll_case},
      {"nll_loss_sum", Family::basic, nll_case},
      {"nll_loss_none", Family::basic, nll_case},
      {"cross_entropy_mean", Family::basic,
       [](const Case& c, const Inputs& x) {
         return tg::cross_entropy(tg::tanh(x[0]) * x[1], c.target, c.reduction());
       }},
      {"mse_loss_mean", Family::basic, mse_case},
      {"mse_loss_sum", Family::basic, mse_case},
      {"avg_pool2d_include_pad", Family::pool_bn, avg_pool_case},
      {"avg_pool2d_exclude_pad", Family::pool_bn, avg_pool_case},
      {"avg_pool2d_ceil_include_pad", Family::pool_bn, avg_pool_case},
      {"avg_pool2d_ceil_exclude_pad", Family::pool_bn, avg_pool_case},
      {"avg_pool2d_divisor_override_5", Family::pool_bn, avg_pool_case},
      {"max_pool2d_overlap", Family::pool_bn, max_pool_case},
      {"max_pool2d_dilated_ceil", Family::pool_bn, max_pool_case},
      {"max_pool2d_ties", Family::pool_bn, max_pool_case},
      {"max_pool2d_relu_zeros", Family::pool_bn,
       [](const Case& c, const Inputs& x) { return tg::tanh(max_pool(c, tg::relu(x[0])) * x[1]); }},
      {"batch_norm2d_training", Family::pool_bn, batch_norm_case},
      {"batch_norm2d_eval", Family::pool_bn, batch_norm_case},
      {"conv2d_3x3_pad1_bias", Family::conv, conv_case},
      {"conv2d_stride_2_1_pad_1_0_dil_1_2", Family::conv, conv_case},
      {"conv2d_groups2_no_bias", Family::conv, conv_case},
      {"conv2d_depthwise_mult2", Family::conv, conv_case},
      {"conv2d_1x1", Family::conv, conv_case},
      {"conv2d_same_even_kernel_dilated", Family::conv, conv_case},
      {"conv2d_valid_stride_1_2", Family::conv, conv_case},
      {"conv2d_stride_2_3_remainder", Family::conv, conv_case},
  };
  return table;
}

// ---- running and comparing -------------------------------------------------------------------

void check_values(const std::string& case_name, const std::string& what, const tg::Tensor& got,
                  const tg::Tensor& want) {
  tg::testing::check_reference(case_name, what, got, want, kAtol, kRtol);
}

void run_case(const Case& c, const CaseFn& f) {
  std::vector<tg::Tensor> xs;
  for (const tg::Tensor& x : c.x) xs.push_back(tg::testing::copy_values(x).set_requires_grad(true));
  const tg::Tensor v = tg::testing::copy_values(c.v).set_requires_grad(true);

  const tg::Tensor out = f(c, xs);
  check_values(c.name, "out", out, c.out);
  const std::vector<tg::Tensor> g = tg::grad({out}, xs, {v}, {.create_graph = true});
  REQUIRE(g.size() == xs.size());
  tg::Tensor s;
  for (std::size_t i = 0; i < g.size(); ++i) {
    check_values(c.name, fmt::format("g{}", i), g[i], c.g[i]);
    const tg::Tensor term = tg::sum(g[i] * c.u[i]);
    s = s.defined() ? s + term : term;
  }

  std::vector<tg::Tensor> wrt = xs;
  wrt.push_back(v);
  const std::vector<tg::Tensor> h = tg::grad({s}, wrt, {}, {.allow_unused = true});
  REQUIRE(h.size() == wrt.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    const bool is_v = i == xs.size();
    const tg::Tensor got = h[i].defined() ? h[i] : tg::zeros_like(wrt[i]);
    check_values(c.name, is_v ? std::string("ds_dv") : fmt::format("ds_dx{}", i), got,
                 is_v ? c.ds_dv : c.ds_dx[i]);
  }
}

/// Loads the fixture, checks that its cases (kLenetCase aside) are exactly those of
/// known_cases(), and runs the cases of one family, each in its own section.
void run_family(Family family) {
  std::vector<Case> cases;
  for (const auto& [name, items] : read_fixture())
    if (name != kLenetCase) cases.push_back(build_case(name, items));
  std::set<std::string> in_fixture;
  for (const Case& c : cases) in_fixture.insert(c.name);
  for (const KnownCase& k : known_cases()) {
    INFO(fmt::format("{} has no case {}", kFixture, k.name));
    CHECK(in_fixture.count(k.name) == 1);
  }
  REQUIRE(in_fixture.size() == cases.size());
  for (const Case& c : cases) {
    const KnownCase* known = nullptr;
    for (const KnownCase& k : known_cases())
      if (k.name == c.name) known = &k;
    if (known == nullptr)
      FAIL(fmt::format("{}: case {} has no function in known_cases()", kFixture, c.name));
    if (known->family != family) continue;
    SECTION(c.name) { run_case(c, known->f); }
  }
}

// ---- the LeNet-5 gradient penalty ------------------------------------------------------------

const std::vector<std::string> kLenetParams = {
    "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
    "fc1.bias",     "fc2.weight", "fc2.bias",     "fc3.weight", "fc3.bias"};

/// The generator's lenet_parameters(seed): one splitmix64 stream over the parameters in
/// order, element = (2u - 1)·sqrt(3/fan_in) with u = (z >> 11)·2⁻⁵³ (a bias takes its weight's
/// fan_in). Integer steps and single correctly rounded operations only, so the doubles are
/// PyTorch's bit for bit.
std::vector<tg::Tensor> lenet_parameters(std::uint64_t seed,
                                         const std::vector<tg::Shape>& shapes) {
  std::uint64_t state = seed;
  std::vector<tg::Tensor> params;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const tg::Shape& weight = shapes[i - i % 2];
    const double bound = std::sqrt(3.0 / static_cast<double>(weight.numel() / weight[0]));
    std::vector<double> values(static_cast<std::size_t>(shapes[i].numel()));
    for (double& value : values) {
      state += 0x9E3779B97F4A7C15ULL;
      std::uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      z ^= z >> 31;
      value = (2.0 * (static_cast<double>(z >> 11) * 0x1p-53) - 1.0) * bound;
    }
    params.push_back(tg::from_vector(values, shapes[i], tg::DType::f64).set_requires_grad(true));
  }
  return params;
}

/// conv 1->6 5x5 padding 2, relu, max_pool 2x2, conv 6->16 5x5, relu, max_pool 2x2, flatten,
/// linear 400->120, relu, linear 120->84, relu, linear 84->10.
tg::Tensor lenet(const tg::Tensor& x, const std::vector<tg::Tensor>& p) {
  tg::Tensor h = tg::max_pool2d(tg::relu(tg::conv2d(x, p[0], p[1], {.padding = {2, 2}})),
                                {.kernel_size = {2, 2}});
  h = tg::max_pool2d(tg::relu(tg::conv2d(h, p[2], p[3])), {.kernel_size = {2, 2}});
  h = tg::flatten(h, 1);
  h = tg::relu(tg::linear(h, p[4], p[5]));
  h = tg::relu(tg::linear(h, p[6], p[7]));
  return tg::linear(h, p[8], p[9]);
}

tg::Tensor f64_vector(const std::vector<double>& values) {
  return tg::from_vector(values, tg::Shape{static_cast<std::int64_t>(values.size())},
                         tg::DType::f64);
}

/// The generator's fingerprint of a parameter: sum, sum of squares, first and last value.
tg::Tensor fingerprint(const tg::Tensor& p) {
  const auto v = p.to_vector<double>();
  double sum = 0.0, sum_squares = 0.0;
  for (double d : v) {
    sum += d;
    sum_squares += d * d;
  }
  return f64_vector({sum, sum_squares, v.front(), v.back()});
}

/// dP/dθ against the fixture: all of it, or (for a large matrix [R, C]) its row sums, its
/// column sums and every stride-th element.
void check_penalty_grad(const Items& items, std::size_t i, const tg::Tensor& got,
                        std::int64_t stride) {
  const std::string key = fmt::format("dP_dp{}", i);
  const std::string what = fmt::format("dP/d{} (p{})", kLenetParams[i], i);
  if (items.count(key)) {
    check_values(kLenetCase, what, got, tensor_item(items, kLenetCase, key, got.shape()));
    return;
  }
  {
    INFO(fmt::format("{}: {} {} is summarised, so it must be a matrix", kLenetCase, what,
                     got.shape()));
    REQUIRE(got.dim() == 2);
  }
  const std::int64_t rows = got.shape()[0], cols = got.shape()[1];
  const auto v = got.to_vector<double>();
  std::vector<double> row_sums(static_cast<std::size_t>(rows));
  std::vector<double> col_sums(static_cast<std::size_t>(cols));
  std::vector<double> sample;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const double d = v[static_cast<std::size_t>(r * cols + c)];
      row_sums[static_cast<std::size_t>(r)] += d;
      col_sums[static_cast<std::size_t>(c)] += d;
    }
  }
  for (std::int64_t k = 0; k < rows * cols; k += stride)
    sample.push_back(v[static_cast<std::size_t>(k)]);
  const auto want = [&](const char* part, const std::vector<double>& got_part) {
    return tensor_item(items, kLenetCase, fmt::format("{}.{}", key, part),
                       tg::Shape{static_cast<std::int64_t>(got_part.size())});
  };
  check_values(kLenetCase, what + " row sums (index = row)", f64_vector(row_sums),
               want("row_sums", row_sums));
  check_values(kLenetCase, what + " column sums (index = column)", f64_vector(col_sums),
               want("col_sums", col_sums));
  check_values(kLenetCase, fmt::format("{} sample (index [k] = flat element {}·k)", what, stride),
               f64_vector(sample), want("sample", sample));
}

}  // namespace

TEST_CASE(
    "second derivatives of element-wise reduction matmul softmax and loss ops match PyTorch 1.13 in f64",
    "[second-order]") {
  run_family(Family::basic);
}

TEST_CASE("second derivatives through avg_pool2d max_pool2d and batch_norm2d match PyTorch 1.13 in f64",
          "[second-order][pool-bn]") {
  run_family(Family::pool_bn);
}

TEST_CASE("second derivatives through conv2d match PyTorch 1.13 in f64", "[second-order][conv]") {
  run_family(Family::conv);
}

TEST_CASE("LeNet-5 gradient penalty and its parameter gradients match PyTorch 1.13 in f64",
          "[second-order][lenet-penalty]") {
  Items items;
  for (auto& [name, case_items] : read_fixture())
    if (name == kLenetCase) items = std::move(case_items);
  if (items.empty()) FAIL(fmt::format("{} has no case {}", kFixture, kLenetCase));
  const std::vector<double> config = item(items, kLenetCase, "config");
  REQUIRE(config.size() == 2);
  const auto seed = static_cast<std::uint64_t>(config[0]);
  const auto stride = static_cast<std::int64_t>(config[1]);
  REQUIRE(stride > 0);

  std::vector<tg::Shape> shapes;
  for (std::size_t i = 0; i < kLenetParams.size(); ++i)
    shapes.push_back(shape_item(items, kLenetCase, fmt::format("p{}.shape", i)));
  const std::vector<tg::Tensor> params = lenet_parameters(seed, shapes);
  for (std::size_t i = 0; i < params.size(); ++i) {  // the same parameters as PyTorch's
    check_values(kLenetCase, fmt::format("{} (p{}) fingerprint", kLenetParams[i], i),
                 fingerprint(params[i]),
                 tensor_item(items, kLenetCase, fmt::format("p{}.fingerprint", i), tg::Shape{4}));
  }

  const tg::Shape x_shape = shape_item(items, kLenetCase, "x.shape");
  tg::Tensor x = tensor_item(items, kLenetCase, "x", x_shape);
  x.set_requires_grad(true);
  const tg::Tensor target =
      tensor_item(items, kLenetCase, "target", tg::Shape{x_shape[0]}, tg::DType::i64);

  const tg::Tensor logits = lenet(x, params);
  check_values(kLenetCase, "logits", logits,
               tensor_item(items, kLenetCase, "logits", tg::Shape{x_shape[0], 10}));
  const tg::Tensor loss = tg::cross_entropy(logits, target);
  check_values(kLenetCase, "L", loss, tensor_item(items, kLenetCase, "L", tg::Shape{}));
  const std::vector<tg::Tensor> gx = tg::grad({loss}, {x}, {}, {.create_graph = true});
  REQUIRE(gx.size() == 1);
  check_values(kLenetCase, "dL/dx", gx[0], tensor_item(items, kLenetCase, "gx", x_shape));
  const tg::Tensor penalty = tg::sum(gx[0] * gx[0]);
  check_values(kLenetCase, "P", penalty, tensor_item(items, kLenetCase, "P", tg::Shape{}));

  const std::vector<tg::Tensor> dp = tg::grad({penalty}, params, {}, tg::GradOptions{});
  REQUIRE(dp.size() == params.size());
  for (std::size_t i = 0; i < dp.size(); ++i) check_penalty_grad(items, i, dp[i], stride);
}
