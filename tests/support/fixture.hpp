#pragma once
// Reading the PyTorch reference fixtures in tests/fixtures/: text files of lines
// `<case>.<item> <values...>` (numbers in full precision, nan/inf allowed; an item may instead
// hold words, such as the name of an op) that a Python generator beside each file writes. A tensor T of a case is two items, `T.shape <sizes>`
// (empty for 0-dim) and `T <values>`. Header-only; every error FAILs the running test with the
// file, line or case and item named.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tapegrad::testing {

/// One case of a fixture: its items (item key -> values).
struct FixtureCase {
  std::string file, name;
  std::map<std::string, std::vector<double>> items;
  std::map<std::string, std::vector<std::string>> raw;  ///< every item as written (words too)

  bool has(const std::string& key) const { return raw.count(key) != 0; }
  /// Item `key` as written: its tokens.
  const std::vector<std::string>& tokens(const std::string& key) const {
    const auto it = raw.find(key);
    if (it == raw.end()) FAIL(fmt::format("{}: case {} has no item {}", file, name, key));
    return it->second;
  }
  /// Item `key` as numbers (FAILs when it holds a word).
  const std::vector<double>& values(const std::string& key) const {
    const auto it = items.find(key);
    if (it == items.end()) FAIL(fmt::format("{}: {}.{} is missing or not all numbers", file, name, key));
    return it->second;
  }
  Shape shape(const std::string& key) const {
    std::vector<std::int64_t> sizes;
    for (double d : values(key + ".shape")) sizes.push_back(static_cast<std::int64_t>(d));
    return Shape(sizes);
  }
  /// Item `key` as a tensor of `shape` (f64, or i64 / bool from integer values).
  Tensor tensor(const std::string& key, const Shape& shape, DType dtype = DType::f64) const {
    const std::vector<double>& v = values(key);
    if (static_cast<std::int64_t>(v.size()) != shape.numel()) {
      FAIL(fmt::format("{}: {}.{} has {} values, its shape {} needs {}", file, name, key, v.size(), shape,
                       shape.numel()));
    }
    if (dtype == DType::f64 || dtype == DType::f32) return from_vector(v, shape, dtype);
    std::vector<std::int64_t> ints(v.begin(), v.end());
    return from_vector(ints, shape, DType::i64).to(dtype);
  }
  /// The one word of item `key` (an op name, say).
  const std::string& word(const std::string& key) const {
    const std::vector<std::string>& t = tokens(key);
    if (t.size() != 1) FAIL(fmt::format("{}: {}.{} holds {} words, not one", file, name, key, t.size()));
    return t[0];
  }
  /// Item `key` with the shape of item `key.shape`.
  Tensor tensor(const std::string& key, DType dtype = DType::f64) const { return tensor(key, shape(key), dtype); }
};

/// Every element of `got` within atol + rtol·|want| (nan and inf exactly), `got` defined with
/// want's shape and dtype; on failure, lists the case, the tensor and up to 16 differing
/// elements with their index and both values.
inline void check_reference(const std::string& case_name, const std::string& what, const Tensor& got,
                            const Tensor& want, double atol, double rtol) {
  INFO(fmt::format("{}: {} is {}, PyTorch's is {} {}", case_name, what,
                   got.defined() ? fmt::format("{} {}", got.shape(), got.dtype()) : "undefined", want.shape(),
                   want.dtype()));
  REQUIRE(got.defined());
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.dtype() == want.dtype());
  const auto a = got.to_vector<double>();
  const auto e = want.to_vector<double>();
  std::size_t bad = 0;
  std::string details;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (close(a[i], e[i], atol, rtol)) continue;
    if (++bad <= 16) {
      details += fmt::format("\n  at {}: tapegrad {:.17g}, PyTorch {:.17g}, |diff| {:.3g}",
                             index_string(want.shape(), static_cast<std::int64_t>(i)), a[i], e[i],
                             std::abs(a[i] - e[i]));
    }
  }
  INFO(fmt::format("{} {}: {} of {} elements differ{}", case_name, what, bad, a.size(), details));
  CHECK(bad == 0);
}

/// A case written by the generators' record(): out = f(x0, ..., xk-1) for a random upstream v
/// that itself requires grad and random u_i, g_i = d<out, v>/dx_i (create_graph),
/// s = Σ_i <g_i, u_i>, ds/dx_j and ds/dv. Reads x<i>, v, u<i> from the case, runs f and checks
/// out, every g_i, ds/dx_j and ds/dv against the case's items (within atol + rtol·|want|); an
/// input s does not depend on (undefined with allow_unused) stands for zeros, as PyTorch's None.
inline void check_case_derivatives(const FixtureCase& c, const TensorFn& f, double atol, double rtol) {
  std::vector<Tensor> xs;
  for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
    xs.push_back(c.tensor(fmt::format("x{}", i)).set_requires_grad(true));
  }
  REQUIRE_FALSE(xs.empty());
  const Tensor v = c.tensor("v", c.shape("out")).set_requires_grad(true);
  const Tensor out = f(xs);
  check_reference(c.name, "out", out, c.tensor("out"), atol, rtol);
  const std::vector<Tensor> g = grad({out}, xs, {v}, {.create_graph = true});
  REQUIRE(g.size() == xs.size());
  Tensor s;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const Shape shape = xs[i].shape();
    check_reference(c.name, fmt::format("g{}", i), g[i], c.tensor(fmt::format("g{}", i), shape), atol, rtol);
    const Tensor term = sum(g[i] * c.tensor(fmt::format("u{}", i), shape));
    s = s.defined() ? s + term : term;
  }
  std::vector<Tensor> wrt = xs;
  wrt.push_back(v);
  // s carries no graph where every g_i is a constant.
  const std::vector<Tensor> h =
      s.requires_grad() ? grad({s}, wrt, {}, {.allow_unused = true}) : std::vector<Tensor>(wrt.size());
  REQUIRE(h.size() == wrt.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    const std::string key = i == xs.size() ? std::string("ds_dv") : fmt::format("ds_dx{}", i);
    const Tensor got = h[i].defined() ? h[i] : zeros_like(wrt[i]);
    check_reference(c.name, key, got, c.tensor(key, wrt[i].shape()), atol, rtol);
  }
}

/// The cases of a fixture file, in file order.
inline std::vector<FixtureCase> read_fixture(const std::string& path) {
  std::ifstream in(path);
  if (!in.good()) FAIL(fmt::format("cannot open {}", path));
  std::vector<FixtureCase> cases;
  std::map<std::string, std::size_t> index;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key;
    s >> key;
    const auto dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size()) {
      FAIL(fmt::format("{}:{}: key '{}' is not <case>.<item>", path, line_no, key));
    }
    const std::string name = key.substr(0, dot);
    auto [at, added] = index.emplace(name, cases.size());
    if (added) cases.push_back({path, name, {}, {}});
    FixtureCase& c = cases[at->second];
    const std::string item = key.substr(dot + 1);
    if (c.raw.count(item)) FAIL(fmt::format("{}:{}: key {} appears twice", path, line_no, key));
    std::vector<std::string> tokens;
    for (std::string token; s >> token;) tokens.push_back(token);
    std::vector<double> numbers;
    for (const std::string& token : tokens) {
      char* end = nullptr;
      const double v = std::strtod(token.c_str(), &end);
      if (end != token.c_str() + token.size()) break;  // a word: the item holds words
      numbers.push_back(v);
    }
    if (numbers.size() == tokens.size()) c.items.emplace(item, std::move(numbers));
    c.raw.emplace(item, std::move(tokens));
  }
  return cases;
}

}  // namespace tapegrad::testing
