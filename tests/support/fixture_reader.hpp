#pragma once
// Reads the text fixtures the tests/fixtures/make_*_reference.py generators write: one item a
// line, `<case>.<item> <values...>`, `#` starting a comment. Values are numbers as Python's
// repr writes them (nan, inf and -inf included). A malformed file fails the running test with
// the file, line and key.
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

/// One case's items ("x0.shape", "g1", ...) and their values.
using FixtureItems = std::map<std::string, std::vector<double>>;

struct FixtureCase {
  std::string file;
  std::string name;
  FixtureItems items;

  bool has(const std::string& key) const { return items.count(key) != 0; }
  const std::vector<double>& values(const std::string& key) const {
    const auto it = items.find(key);
    if (it == items.end()) FAIL(fmt::format("{}: case {} has no item {}", file, name, key));
    return it->second;
  }
  Shape shape(const std::string& key) const {
    std::vector<std::int64_t> sizes;
    for (double d : values(key)) sizes.push_back(static_cast<std::int64_t>(d));
    return Shape(sizes);
  }
  /// The values of `key` as an f64 tensor of `shape`.
  Tensor tensor(const std::string& key, const Shape& shape) const {
    const std::vector<double>& v = values(key);
    if (static_cast<std::int64_t>(v.size()) != shape.numel()) {
      FAIL(fmt::format("{}: {}.{} has {} values, its shape {} needs {}", file, name, key, v.size(),
                       shape, shape.numel()));
    }
    return from_vector(v, shape, DType::f64);
  }
};

/// The file's cases in file order.
inline std::vector<FixtureCase> read_fixture(const std::string& file) {
  std::ifstream in(file);
  if (!in.good()) FAIL(fmt::format("cannot open {}", file));
  std::vector<FixtureCase> cases;
  std::map<std::string, std::size_t> index;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key;
    s >> key;
    const auto dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size())
      FAIL(fmt::format("{}:{}: key '{}' is not <case>.<item>", file, line_no, key));
    const std::string case_name = key.substr(0, dot);
    if (!index.count(case_name)) {
      index[case_name] = cases.size();
      cases.push_back({file, case_name, {}});
    }
    std::vector<double>& values = cases[index[case_name]].items[key.substr(dot + 1)];
    if (!values.empty()) FAIL(fmt::format("{}:{}: key {} appears twice", file, line_no, key));
    std::string token;
    while (s >> token) {
      char* end = nullptr;
      values.push_back(std::strtod(token.c_str(), &end));
      if (end != token.c_str() + token.size())
        FAIL(fmt::format("{}:{}: {} holds '{}', not a number", file, line_no, key, token));
    }
  }
  return cases;
}

}  // namespace tapegrad::testing
