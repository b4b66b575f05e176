// The join, slice, index and shape ops against values PyTorch 1.13 computed (CPU, float64),
// read from tests/fixtures/shape_index_reference.txt (make_shape_index_reference.py writes it
// and documents the format). Each case is out = tanh(op(x...)); with a random upstream v that
// itself requires grad and random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = sum_i <g_i, u_i>,  ds/dx_j and ds/dv,
// all within 1e-9 relative (1e-12 absolute near 0) of PyTorch's. ds/dv runs through each op's
// VJP recorded as an op (slice_backward, pad_backward, scatter_add, ...), ds/dx through the
// VJP of that VJP, so a VJP that is not recorded under create_graph fails here.
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/fixture.hpp"
#include "support/numeric.hpp"
#include "support/shape_index_fixture.hpp"

namespace tg = tapegrad;
using tg::testing::ShapeIndexCase;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/shape_index_reference.txt";

using Inputs = std::vector<tg::Tensor>;
using OpFn = std::function<tg::Tensor(const ShapeIndexCase&, const Inputs&)>;

/// cat([(i + 1) * part_i], dim): the generator's way of joining several outputs into one.
tg::Tensor joined(const std::vector<tg::Tensor>& parts, std::int64_t dim) {
  std::vector<tg::Tensor> weighted;
  for (std::size_t i = 0; i < parts.size(); ++i) weighted.push_back(parts[i] * static_cast<double>(i + 1));
  return tg::cat(weighted, dim);
}

std::optional<std::int64_t> optional_option(const ShapeIndexCase& c, std::size_t flag) {
  return c.option(flag) != 0 ? std::optional<std::int64_t>(c.option(flag + 1)) : std::nullopt;
}

/// One function per op name of the fixture, reading its options as the generator wrote them.
const std::map<std::string, OpFn>& op_functions() {
  static const std::map<std::string, OpFn> table = {
      {"cat", [](const auto& c, const Inputs& x) { return tg::cat(x, c.option(0)); }},
      {"stack", [](const auto& c, const Inputs& x) { return tg::stack(x, c.option(0)); }},
      {"slice", [](const auto& c, const Inputs& x) {
         return tg::slice(x[0], c.option(0), optional_option(c, 1), optional_option(c, 3), c.option(5));
       }},
      {"narrow", [](const auto& c, const Inputs& x) { return tg::narrow(x[0], c.option(0), c.option(1), c.option(2)); }},
      {"select", [](const auto& c, const Inputs& x) { return tg::select(x[0], c.option(0), c.option(1)); }},
      {"split", [](const auto& c, const Inputs& x) {
         return joined(tg::split(x[0], c.option(1), c.option(0)), c.option(0));
       }},
      {"split_sizes", [](const auto& c, const Inputs& x) {
         return joined(tg::split(x[0], c.options_from(1), c.option(0)), c.option(0));
       }},
      {"chunk", [](const auto& c, const Inputs& x) {
         return joined(tg::chunk(x[0], c.option(1), c.option(0)), c.option(0));
       }},
      {"unbind", [](const auto& c, const Inputs& x) { return joined(tg::unbind(x[0], c.option(0)), 0); }},
      {"index_select", [](const auto& c, const Inputs& x) { return tg::index_select(x[0], c.option(0), c.index); }},
      {"gather", [](const auto& c, const Inputs& x) { return tg::gather(x[0], c.option(0), c.index); }},
      {"scatter_add", [](const auto& c, const Inputs& x) {
         return tg::scatter_add(x[0], c.option(0), c.index, x[1]);
       }},
      {"embedding", [](const auto& c, const Inputs& x) { return tg::embedding(c.index, x[0], optional_option(c, 0)); }},
      {"unsqueeze", [](const auto& c, const Inputs& x) { return tg::unsqueeze(x[0], c.option(0)); }},
      {"squeeze", [](const auto& c, const Inputs& x) {
         return c.config.empty() ? tg::squeeze(x[0]) : tg::squeeze(x[0], c.option(0));
       }},
      {"expand", [](const auto& c, const Inputs& x) { return tg::expand(x[0], tg::Shape(c.options_from(0))); }},
      {"broadcast_to", [](const auto& c, const Inputs& x) {
         return tg::broadcast_to(x[0], tg::Shape(c.options_from(0)));
       }},
      {"repeat", [](const auto& c, const Inputs& x) { return tg::repeat(x[0], c.options_from(0)); }},
      {"flip", [](const auto& c, const Inputs& x) { return tg::flip(x[0], c.options_from(0)); }},
      {"roll", [](const auto& c, const Inputs& x) {
         const auto n = static_cast<std::size_t>(c.option(0));
         const std::vector<std::int64_t> rest = c.options_from(1);
         return tg::roll(x[0], {rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(n)},
                         {rest.begin() + static_cast<std::ptrdiff_t>(n), rest.end()});
       }},
      {"pad", [](const auto& c, const Inputs& x) {
         const std::int64_t mode = c.option(0);
         if (mode < 0 || mode > 3) FAIL(fmt::format("{}: pad mode code {} is not 0 to 3", c.name, mode));
         return tg::pad(x[0], c.options_from(2), static_cast<tg::PadMode>(mode), c.config.at(1));
       }},
      {"tril", [](const auto& c, const Inputs& x) { return tg::tril(x[0], c.option(0)); }},
      {"triu", [](const auto& c, const Inputs& x) { return tg::triu(x[0], c.option(0)); }},
  };
  return table;
}

void check_values(const std::string& case_name, const std::string& what, const tg::Tensor& got,
                  const tg::Tensor& want) {
  tg::testing::check_reference(case_name, what, got, want, kAtol, kRtol);
}

void run_case(const ShapeIndexCase& c, const OpFn& f) {
  std::vector<tg::Tensor> xs;
  for (const tg::Tensor& x : c.x) xs.push_back(tg::testing::copy_values(x).set_requires_grad(true));
  const tg::Tensor v = tg::testing::copy_values(c.v).set_requires_grad(true);

  const tg::Tensor out = tg::tanh(f(c, xs));
  check_values(c.name, "out", out, c.out);
  const std::vector<tg::Tensor> g = tg::grad({out}, xs, {v}, {.create_graph = true, .allow_unused = true});
  REQUIRE(g.size() == xs.size());
  tg::Tensor s = tg::zeros({}, tg::DType::f64);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const tg::Tensor gi = g[i].defined() ? g[i] : tg::zeros_like(xs[i]);
    check_values(c.name, fmt::format("g{}", i), gi, c.g[i]);
    s = s + tg::sum(gi * c.u[i]);
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

}  // namespace

TEST_CASE("shape and index ops: forward, gradients and second derivatives match PyTorch 1.13",
          "[ops][shape-index][reference]") {
  const std::vector<ShapeIndexCase> cases = tg::testing::read_shape_index_fixture(kFixture);
  REQUIRE(cases.size() >= 40);
  std::set<std::string> covered;
  for (const ShapeIndexCase& c : cases) covered.insert(c.op);
  for (const auto& [op, f] : op_functions()) {
    INFO(fmt::format("{} has no case for op {}", kFixture, op));
    CHECK(covered.count(op) == 1);
  }
  for (const ShapeIndexCase& c : cases) {
    const auto it = op_functions().find(c.op);
    if (it == op_functions().end()) FAIL(fmt::format("{}: case {} has unknown op {}", kFixture, c.name, c.op));
    SECTION(c.name) { run_case(c, it->second); }
  }
}
