#pragma once
// Reads tests/fixtures/shape_index_reference.txt (written by make_shape_index_reference.py,
// which documents the format): one case per name, with the op it goes through, its options,
// an optional i64 index, the differentiable inputs and PyTorch's out, g, ds/dx and ds/dv.
// Self-contained (a malformed fixture fails the test with the file, line and key).
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

namespace tapegrad::testing {

/// One case of the fixture.
struct ShapeIndexCase {
  std::string name;
  std::string op;                   ///< the tapegrad function it goes through
  std::vector<double> config;       ///< the op's options (see the generator)
  Tensor index;                     ///< i64 index or ids, or undefined
  std::vector<Tensor> x, u, g, ds_dx;
  Tensor v, out, ds_dv;

  std::int64_t option(std::size_t i) const {
    if (i >= config.size())
      FAIL(fmt::format("{}: config has {} values, option {} was asked for", name, config.size(), i));
    return static_cast<std::int64_t>(config[i]);
  }
  /// Options `from` onwards, as integers.
  std::vector<std::int64_t> options_from(std::size_t from) const {
    std::vector<std::int64_t> rest;
    for (std::size_t i = from; i < config.size(); ++i) rest.push_back(option(i));
    return rest;
  }
};

/// Reads the fixture at `path`; its cases in file order.
inline std::vector<ShapeIndexCase> read_shape_index_fixture(const std::string& path) {
  using Items = std::map<std::string, std::vector<std::string>>;
  std::ifstream in(path);
  if (!in.good()) FAIL(fmt::format("cannot open {}", path));
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
      FAIL(fmt::format("{}:{}: key '{}' is not <case>.<item>", path, line_no, key));
    const std::string case_name = key.substr(0, dot);
    if (!raw.count(case_name)) order.push_back(case_name);
    Items& items = raw[case_name];
    const std::string item = key.substr(dot + 1);
    if (items.count(item)) FAIL(fmt::format("{}:{}: key {} appears twice", path, line_no, key));
    std::vector<std::string>& values = items[item];
    for (std::string token; s >> token;) values.push_back(token);
  }

  std::vector<ShapeIndexCase> cases;
  for (const std::string& name : order) {
    const Items& items = raw.at(name);
    const auto item = [&](const std::string& key) -> const std::vector<std::string>& {
      const auto it = items.find(key);
      if (it == items.end()) FAIL(fmt::format("{}: case {} has no item {}", path, name, key));
      return it->second;
    };
    const auto numbers = [&](const std::string& key) {
      std::vector<double> out;
      for (const std::string& token : item(key)) {
        char* end = nullptr;
        out.push_back(std::strtod(token.c_str(), &end));
        if (end != token.c_str() + token.size())
          FAIL(fmt::format("{}: {}.{} holds '{}', not a number", path, name, key, token));
      }
      return out;
    };
    const auto shape = [&](const std::string& key) {
      std::vector<std::int64_t> sizes;
      for (double d : numbers(key)) sizes.push_back(static_cast<std::int64_t>(d));
      return Shape(sizes);
    };
    const auto tensor = [&](const std::string& key, const Shape& s) {
      const std::vector<double> values = numbers(key);
      if (static_cast<std::int64_t>(values.size()) != s.numel())
        FAIL(fmt::format("{}: {}.{} has {} values, its shape {} needs {}", path, name, key,
                         values.size(), s, s.numel()));
      return from_vector(values, s, DType::f64);
    };

    ShapeIndexCase c;
    c.name = name;
    if (item("op").size() != 1) FAIL(fmt::format("{}: {}.op must be one word", path, name));
    c.op = item("op")[0];
    c.config = numbers("config");
    if (items.count("index.shape")) {
      const Shape s = shape("index.shape");
      std::vector<std::int64_t> ids;
      for (double d : numbers("index")) ids.push_back(static_cast<std::int64_t>(d));
      if (static_cast<std::int64_t>(ids.size()) != s.numel())
        FAIL(fmt::format("{}: {}.index has {} values for shape {}", path, name, ids.size(), s));
      c.index = from_vector(ids, s, DType::i64);
    }
    for (std::size_t i = 0; items.count(fmt::format("x{}.shape", i)); ++i) {
      const Shape s = shape(fmt::format("x{}.shape", i));
      c.x.push_back(tensor(fmt::format("x{}", i), s));
      c.u.push_back(tensor(fmt::format("u{}", i), s));
      c.g.push_back(tensor(fmt::format("g{}", i), s));
      c.ds_dx.push_back(tensor(fmt::format("ds_dx{}", i), s));
    }
    if (c.x.empty()) FAIL(fmt::format("{}: case {} has no input x0", path, name));
    const Shape out_shape = shape("v.shape");
    c.v = tensor("v", out_shape);
    c.out = tensor("out", out_shape);
    c.ds_dv = tensor("ds_dv", out_shape);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace tapegrad::testing
