// The reductions (prod, cumsum, var, std, logsumexp, amax, amin, norm, argmax, argmin) and the
// losses (l1, smooth_l1, huber, binary_cross_entropy_with_logits, kl_div, nll_loss and
// cross_entropy with weight, ignore_index and label smoothing) against PyTorch 1.13 (CPU,
// float64), read from tests/fixtures/reduce_loss_reference.txt (make_reduce_loss_reference.py
// writes it and documents the format). For each case out = f(x_0, ..., x_k-1), a random
// upstream v that itself requires grad and random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = sum_i <g_i, u_i>,  ds/dx_j and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0; nan and ±inf exactly where
// PyTorch has them). argmax and argmin cases check the i64 forward only.
// The second test case reads tests/fixtures/matmul_nd_loss_reference.txt
// (make_matmul_nd_loss_reference.py, same format) the same way: matmul with 1-D operands and
// broadcast batch dims, and nll_loss / cross_entropy over [N, C, d1, ...] and [C].
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
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
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/reduce_loss_reference.txt";
constexpr const char* kNdFixture = TAPEGRAD_FIXTURE_DIR "/matmul_nd_loss_reference.txt";

/// One case, read on demand with the case named in every failure; config may hold the word
/// none (an absent dim) among its numbers.
struct Case : tg::testing::FixtureCase {
  std::string op() const { return word("op"); }
  /// Option i of config; nullopt for the word none.
  std::optional<double> option(std::size_t i) const {
    const auto& config = tokens("config");
    if (i >= config.size())
      FAIL(fmt::format("{}: config has {} values, option {} was asked for", name, config.size(), i));
    if (config[i] == "none") return std::nullopt;
    return std::strtod(config[i].c_str(), nullptr);
  }
  std::int64_t integer(std::size_t i) const {
    const auto v = option(i);
    if (!v) FAIL(fmt::format("{}: option {} is none, a number was expected", name, i));
    return static_cast<std::int64_t>(std::llround(*v));
  }
  bool flag(std::size_t i) const { return integer(i) != 0; }
  /// Options i, i+1, ... as dims (an empty list: every dim).
  std::vector<std::int64_t> dims_from(std::size_t i) const {
    std::vector<std::int64_t> dims;
    for (; i < tokens("config").size(); ++i) dims.push_back(integer(i));
    return dims;
  }
  tg::Reduction reduction() const {
    const std::int64_t code = integer(0);
    if (code < 0 || code > 2) FAIL(fmt::format("{}: reduction code {} is not 0, 1 or 2", name, code));
    return code == 0 ? tg::Reduction::none : code == 1 ? tg::Reduction::mean : tg::Reduction::sum;
  }
  /// Item `key` in the shape of item `shape_key`.
  tg::Tensor tensor(const std::string& key, const std::string& shape_key, tg::DType dtype = tg::DType::f64) const {
    return FixtureCase::tensor(key, shape(shape_key), dtype);
  }
  tg::Tensor constant(std::size_t i) const {
    const std::string key = fmt::format("c{}", i);
    return has(key + ".shape") ? tensor(key, key) : tg::Tensor();
  }
  tg::Tensor target() const { return tensor("target", "target", tg::DType::i64); }
};

/// A fixture's cases in file order.
std::vector<Case> read_fixture(const char* file) {
  std::vector<Case> cases;
  for (tg::testing::FixtureCase& c : tg::testing::read_fixture(file)) cases.push_back({std::move(c)});
  return cases;
}

// ---- the functions, one per op name (the generator's f, options from config) ---------------------

tg::KlDivReduction kl_reduction(const Case& c) {
  switch (c.integer(0)) {
    case 0: return tg::KlDivReduction::none;
    case 1: return tg::KlDivReduction::mean;
    case 2: return tg::KlDivReduction::sum;
    case 3: return tg::KlDivReduction::batchmean;
    default: FAIL(fmt::format("{}: kl_div reduction code {} is not 0 to 3", c.name, c.integer(0)));
  }
  return tg::KlDivReduction::none;
}

using Inputs = std::vector<tg::Tensor>;
using OpFn = std::function<tg::Tensor(const Case&, const Inputs&)>;

const std::map<std::string, OpFn>& ops() {
  static const std::map<std::string, OpFn> table = {
      {"matmul", [](const Case&, const Inputs& x) { return tg::matmul(x[0], x[1]); }},
      {"prod",  // has_dim, dim, keepdim
       [](const Case& c, const Inputs& x) {
         return c.flag(0) ? tg::prod(x[0], c.integer(1), c.flag(2)) : tg::prod(x[0]);
       }},
      {"cumsum", [](const Case& c, const Inputs& x) { return tg::cumsum(x[0] * x[0], c.integer(0)); }},
      {"var",  // correction, keepdim, dims...
       [](const Case& c, const Inputs& x) { return tg::var(x[0], c.dims_from(2), c.integer(0), c.flag(1)); }},
      {"std",
       [](const Case& c, const Inputs& x) { return tg::std(x[0], c.dims_from(2), c.integer(0), c.flag(1)); }},
      {"logsumexp",  // keepdim, dims...
       [](const Case& c, const Inputs& x) { return tg::logsumexp(x[0], c.dims_from(1), c.flag(0)); }},
      {"amax", [](const Case& c, const Inputs& x) { return tg::amax(x[0], c.dims_from(1), c.flag(0)); }},
      {"amin", [](const Case& c, const Inputs& x) { return tg::amin(x[0], c.dims_from(1), c.flag(0)); }},
      {"norm",  // p, keepdim, dims...
       [](const Case& c, const Inputs& x) { return tg::norm(x[0], *c.option(0), c.dims_from(2), c.flag(1)); }},
      {"argmax",  // dim (or none), keepdim
       [](const Case& c, const Inputs& x) {
         const auto dim = c.option(0);
         return tg::argmax(x[0], dim ? std::optional<std::int64_t>(std::llround(*dim)) : std::nullopt, c.flag(1));
       }},
      {"argmin",
       [](const Case& c, const Inputs& x) {
         const auto dim = c.option(0);
         return tg::argmin(x[0], dim ? std::optional<std::int64_t>(std::llround(*dim)) : std::nullopt, c.flag(1));
       }},
      {"l1_loss",  // reduction, beta
       [](const Case& c, const Inputs& x) { return tg::l1_loss(x[0], x[1], c.reduction()); }},
      {"smooth_l1_loss",
       [](const Case& c, const Inputs& x) { return tg::smooth_l1_loss(x[0], x[1], c.reduction(), *c.option(1)); }},
      {"huber_loss",
       [](const Case& c, const Inputs& x) { return tg::huber_loss(x[0], x[1], c.reduction(), *c.option(1)); }},
      {"binary_cross_entropy_with_logits",  // reduction, has_weight, has_pos_weight
       [](const Case& c, const Inputs& x) {
         const tg::Tensor weight = c.flag(1) ? c.constant(0) : tg::Tensor();
         const tg::Tensor pos_weight = c.flag(2) ? c.constant(c.flag(1) ? 1 : 0) : tg::Tensor();
         return tg::binary_cross_entropy_with_logits(x[0], x[1], weight, pos_weight, c.reduction());
       }},
      {"kl_div",  // reduction (3: batchmean), log_target
       [](const Case& c, const Inputs& x) { return tg::kl_div(x[0], x[1], kl_reduction(c), c.flag(1)); }},
      {"kl_div_const_target",
       [](const Case& c, const Inputs& x) { return tg::kl_div(x[0], c.constant(0), kl_reduction(c), c.flag(1)); }},
      {"nll_loss",  // reduction, ignore_index, has_weight, label_smoothing
       [](const Case& c, const Inputs& x) {
         return tg::nll_loss(x[0], c.target(), {.weight = c.flag(2) ? c.constant(0) : tg::Tensor(),
                                                .ignore_index = c.integer(1),
                                                .reduction = c.reduction()});
       }},
      {"cross_entropy",
       [](const Case& c, const Inputs& x) {
         return tg::cross_entropy(x[0], c.target(), {.weight = c.flag(2) ? c.constant(0) : tg::Tensor(),
                                                     .ignore_index = c.integer(1),
                                                     .reduction = c.reduction(),
                                                     .label_smoothing = *c.option(3)});
       }},
  };
  return table;
}

// ---- running and comparing -------------------------------------------------------------------

void check_values(const std::string& case_name, const std::string& what, const tg::Tensor& got,
                  const tg::Tensor& want) {
  tg::testing::check_reference(case_name, what, got, want, kAtol, kRtol);
}

void run_case(const Case& c, const OpFn& f) {
  if (!c.has("v")) {  // forward only (argmax, argmin)
    check_values(c.name, "out", f(c, {c.tensor("x0", "x0")}), c.tensor("out", "out", tg::DType::i64));
    return;
  }
  tg::testing::check_case_derivatives(c, [&](const Inputs& xs) { return f(c, xs); }, kAtol, kRtol);
}

/// Runs each case of `file` in a section of its own, after checking that the file holds at
/// least `min_cases` cases and a case of each op of `expected_ops`.
void run_fixture(const char* file, std::size_t min_cases, const std::set<std::string>& expected_ops) {
  const std::vector<Case> cases = read_fixture(file);
  std::set<std::string> ops_seen;
  for (const Case& c : cases) ops_seen.insert(c.op());
  for (const std::string& op : expected_ops) {
    INFO(fmt::format("{} has no case of op {}", file, op));
    CHECK(ops_seen.count(op) == 1);
  }
  CHECK(cases.size() >= min_cases);
  for (const Case& c : cases) {
    const auto it = ops().find(c.op());
    if (it == ops().end()) FAIL(fmt::format("{}: case {} has op {}, which the test does not know", file, c.name, c.op()));
    SECTION(c.name) { run_case(c, it->second); }
  }
}

}  // namespace

TEST_CASE("reduce/loss reference: forward, gradients and second derivatives match PyTorch 1.13",
          "[ops][reduce-loss-reference]") {
  std::set<std::string> expected;
  for (const auto& [op, f] : ops()) {
    if (op != "matmul") expected.insert(op);
  }
  run_fixture(kFixture, 70, expected);
}

// matmul with 1-D operands and broadcast batch dims; nll_loss and cross_entropy over
// [N, C, d1, ...] and [C].
TEST_CASE("matmul / N-d loss reference: forward and derivatives to 2nd order match PyTorch 1.13",
          "[ops][reduce-loss-reference][matmul][loss]") {
  run_fixture(kNdFixture, 45, {"matmul", "nll_loss", "cross_entropy"});
}
