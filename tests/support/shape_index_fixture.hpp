#pragma once
// Reads tests/fixtures/shape_index_reference.txt (written by make_shape_index_reference.py,
// which documents the format): one case per name, with the op it goes through, its options,
// an optional i64 index, the differentiable inputs and PyTorch's out, g, ds/dx and ds/dv.
// Built on the common reader, support/fixture.hpp.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "support/fixture.hpp"

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
  std::vector<ShapeIndexCase> cases;
  for (const FixtureCase& f : read_fixture(path)) {
    ShapeIndexCase c;
    c.name = f.name;
    c.op = f.word("op");
    c.config = f.values("config");
    if (f.has("index")) c.index = f.tensor("index", DType::i64);
    for (std::size_t i = 0; f.has(fmt::format("x{}", i)); ++i) {
      const Shape s = f.shape(fmt::format("x{}", i));
      c.x.push_back(f.tensor(fmt::format("x{}", i), s));
      c.u.push_back(f.tensor(fmt::format("u{}", i), s));
      c.g.push_back(f.tensor(fmt::format("g{}", i), s));
      c.ds_dx.push_back(f.tensor(fmt::format("ds_dx{}", i), s));
    }
    if (c.x.empty()) FAIL(fmt::format("{}: case {} has no input x0", path, f.name));
    const Shape out_shape = f.shape("v");
    c.v = f.tensor("v", out_shape);
    c.out = f.tensor("out", out_shape);
    c.ds_dv = f.tensor("ds_dv", out_shape);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace tapegrad::testing
