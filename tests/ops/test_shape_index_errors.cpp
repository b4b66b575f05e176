// The join, slice, index and shape ops: hand-checked forward values for PyTorch's edge rules
// (clamped slices, chunk counts, legacy empty cat, each pad mode, padding_idx), gradients that
// accumulate over repeated indices, every bad argument's error (type, op name, the shapes),
// f32 against f64, and twice-differentiability of the VJP ops. The values and derivatives
// against PyTorch are in test_shape_index_reference.cpp.
#include <functional>
#include <string>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

Tensor iota(const tg::Shape& shape) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  return f64(v, shape);
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

}  // namespace

TEST_CASE("slice, narrow, select: PyTorch's bounds", "[ops][shape-index][slice]") {
  const Tensor x = iota({6});
  CHECK(values(tg::slice(x, 0, -100, 100, 2)) == std::vector<double>{0, 2, 4});
  CHECK(values(tg::slice(x, 0, {}, -2)) == std::vector<double>{0, 1, 2, 3});
  CHECK(values(tg::slice(x, -1, -2)) == std::vector<double>{4, 5});
  CHECK(tg::slice(x, 0, 4, 2).shape() == tg::Shape{0});
  CHECK(tg::slice(x, 0, 7, 9).shape() == tg::Shape{0});
  const Tensor m = iota({3, 4});
  CHECK(values(tg::slice(m, 1, 1, {}, 2)) == std::vector<double>{1, 3, 5, 7, 9, 11});
  CHECK(values(tg::narrow(m, -1, -2, 2)) == std::vector<double>{2, 3, 6, 7, 10, 11});
  CHECK(tg::narrow(m, 0, 3, 0).shape() == tg::Shape{0, 4});
  CHECK(values(tg::select(m, 1, -1)) == std::vector<double>{3, 7, 11});
  CHECK(tg::select(m, 0, 2).shape() == tg::Shape{4});
  const Tensor ints = i64({5, 6, 7}, {3});
  CHECK(tg::slice(ints, 0, 1).to_vector<std::int64_t>() == std::vector<std::int64_t>{6, 7});
}

TEST_CASE("split, chunk, unbind: part counts and sizes as PyTorch", "[ops][shape-index][split]") {
  const Tensor x = iota({5, 2});
  const auto sizes = [](const std::vector<Tensor>& parts, std::size_t dim) {
    std::vector<std::int64_t> s;
    for (const Tensor& p : parts) s.push_back(p.shape()[dim]);
    return s;
  };
  CHECK(sizes(tg::split(x, 2), 0) == std::vector<std::int64_t>{2, 2, 1});
  CHECK(sizes(tg::split(x, std::vector<std::int64_t>{1, 0, 4}), 0) == std::vector<std::int64_t>{1, 0, 4});
  CHECK(sizes(tg::chunk(x, 3), 0) == std::vector<std::int64_t>{2, 2, 1});
  CHECK(sizes(tg::chunk(x, 4), 0) == std::vector<std::int64_t>{2, 2, 1});  // fewer than asked
  CHECK(sizes(tg::chunk(x, 9), 0) == std::vector<std::int64_t>{1, 1, 1, 1, 1});
  CHECK(sizes(tg::chunk(tg::zeros({0, 2}), 3), 0) == std::vector<std::int64_t>{0, 0, 0});
  CHECK(sizes(tg::split(tg::zeros({0, 2}), 0), 0) == std::vector<std::int64_t>{0});
  const auto rows = tg::unbind(x, -1);
  REQUIRE(rows.size() == 2);
  CHECK(values(rows[1]) == std::vector<double>{1, 3, 5, 7, 9});
  CHECK(tg::unbind(tg::zeros({2, 0}), 1).empty());
}

TEST_CASE("cat and stack", "[ops][shape-index][cat]") {
  const Tensor a = iota({2, 1}), b = iota({2, 2}) + 10.0;
  CHECK(values(tg::cat({a, b}, -1)) == std::vector<double>{0, 10, 11, 1, 12, 13});
  CHECK(values(tg::cat({a, b.reshape({4, 1})}, 0)) == std::vector<double>{0, 1, 10, 11, 12, 13});
  // PyTorch 1.13 skips a 1-D empty tensor among higher-rank ones.
  CHECK(tg::cat({b, tg::zeros({0}, DType::f64)}, 1).shape() == tg::Shape{2, 2});
  CHECK(tg::cat({tg::zeros({0}, DType::f64), tg::zeros({0}, DType::f64)}).shape() == tg::Shape{0});
  const Tensor s = tg::stack({a.reshape({2}), a.reshape({2}) + 5.0}, -1);
  CHECK(s.shape() == tg::Shape{2, 2});
  CHECK(values(s) == std::vector<double>{0, 5, 1, 6});
  CHECK(tg::cat({i64({1}, {1}), i64({2, 3}, {2})}).to_vector<std::int64_t>() ==
        std::vector<std::int64_t>{1, 2, 3});
}

TEST_CASE("pad: each mode, in F.pad's last-dim-first order", "[ops][shape-index][pad]") {
  const Tensor x = f64({1, 2, 3, 4}, {1, 4});
  CHECK(values(tg::pad(x, {2, 1}, tg::PadMode::reflect)) == std::vector<double>{3, 2, 1, 2, 3, 4, 3});
  CHECK(values(tg::pad(x, {2, 1}, tg::PadMode::replicate)) == std::vector<double>{1, 1, 1, 2, 3, 4, 4});
  CHECK(values(tg::pad(x, {2, 1}, tg::PadMode::circular)) == std::vector<double>{3, 4, 1, 2, 3, 4, 1});
  CHECK(values(tg::pad(x, {1, -2}, tg::PadMode::constant, 9)) == std::vector<double>{9, 1, 2});
  // Two pairs: (left, right) of the last dim, then (top, bottom) of the one before.
  const Tensor p = tg::pad(x, {0, 1, 1, 0}, tg::PadMode::constant, -1);
  CHECK(p.shape() == tg::Shape{2, 5});
  CHECK(values(p) == std::vector<double>{-1, -1, -1, -1, -1, 1, 2, 3, 4, -1});
  CHECK(tg::pad(tg::zeros({2, 0}), {1, 1}).shape() == tg::Shape{2, 2});
  // replicate: the edge element collects the gradient of every copy of it.
  const Tensor leaf_x = tg::testing::copy_values(x).set_requires_grad(true);
  tg::sum(tg::pad(leaf_x, {2, 1}, tg::PadMode::replicate)).backward();
  CHECK(values(leaf_x.grad()) == std::vector<double>{3, 1, 1, 2});
}

TEST_CASE("index ops: values, and repeated indices accumulate", "[ops][shape-index][index]") {
  const Tensor x = iota({3, 2}).set_requires_grad(true);
  const Tensor idx = i64({2, 0, 2}, {3});
  const Tensor sel = tg::index_select(x, 0, idx);
  CHECK(values(sel) == std::vector<double>{4, 5, 0, 1, 4, 5});
  tg::sum(sel).backward();
  CHECK(values(x.grad()) == std::vector<double>{1, 1, 0, 0, 2, 2});
  CHECK(tg::index_select(x, 1, i64({}, {0})).shape() == tg::Shape{3, 0});
  CHECK(tg::index_select(x, 0, i64({1}, {})).shape() == tg::Shape{1, 2});

  const Tensor g = tg::gather(iota({2, 3}), 1, i64({2, 2, 0, 1}, {2, 2}));
  CHECK(values(g) == std::vector<double>{2, 2, 3, 4});
  const Tensor sa = tg::scatter_add(tg::zeros({2, 3}, DType::f64), 1, i64({2, 2, 0, 1}, {2, 2}),
                                    f64({1, 2, 3, 4}, {2, 2}));
  CHECK(values(sa) == std::vector<double>{0, 0, 3, 3, 4, 0});
}

TEST_CASE("embedding: rows by id, the padding row gets no gradient", "[ops][shape-index][embedding]") {
  const Tensor weight = iota({4, 2}).set_requires_grad(true);
  const Tensor ids = i64({1, 3, 1, 0, 3, 3}, {2, 3});
  const Tensor out = tg::embedding(ids, weight, -1);  // padding row 3
  CHECK(out.shape() == tg::Shape{2, 3, 2});
  // The forward still reads the padding row (PyTorch's forward does not mask it).
  CHECK(values(out) == std::vector<double>{2, 3, 6, 7, 2, 3, 0, 1, 6, 7, 6, 7});
  tg::sum(out * 2.0).backward();
  CHECK(values(weight.grad()) == std::vector<double>{2, 2, 4, 4, 0, 0, 0, 0});
  const Tensor w2 = tg::testing::copy_values(iota({4, 2})).set_requires_grad(true);
  tg::sum(tg::embedding(ids, w2)).backward();
  CHECK(values(w2.grad()) == std::vector<double>{1, 1, 2, 2, 0, 0, 3, 3});
}

TEST_CASE("unsqueeze, squeeze, expand, repeat, flip, roll, tril, triu", "[ops][shape-index][rearrange]") {
  const Tensor x = iota({2, 3});
  CHECK(tg::unsqueeze(x, -1).shape() == tg::Shape{2, 3, 1});
  CHECK(tg::unsqueeze(x, 0).shape() == tg::Shape{1, 2, 3});
  CHECK(tg::squeeze(tg::zeros({1, 2, 1})).shape() == tg::Shape{2});
  CHECK(tg::squeeze(x, 0).shape() == tg::Shape{2, 3});
  CHECK(tg::squeeze(tg::scalar_tensor(1), 0).shape() == tg::Shape{});
  const Tensor col = f64({1, 2}, {2, 1});
  CHECK(values(tg::expand(col, {2, -1, 3})) == std::vector<double>{1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2});
  CHECK(tg::broadcast_to(col, {2, 0}).shape() == tg::Shape{2, 0});
  CHECK(values(tg::repeat(f64({1, 2}, {2}), {2, 2})) == std::vector<double>{1, 2, 1, 2, 1, 2, 1, 2});
  CHECK(tg::repeat(x, {0, 2}).shape() == tg::Shape{0, 6});
  CHECK(values(tg::flip(x, {0, -1})) == std::vector<double>{5, 4, 3, 2, 1, 0});
  CHECK(values(tg::flip(x, {})) == values(x));
  CHECK(values(tg::roll(x, {1})) == std::vector<double>{5, 0, 1, 2, 3, 4});
  CHECK(values(tg::roll(x, {-1, 4}, {1, 0})) == std::vector<double>{1, 2, 0, 4, 5, 3});
  CHECK(values(tg::tril(x)) == std::vector<double>{0, 0, 0, 3, 4, 0});
  CHECK(values(tg::triu(x, 1)) == std::vector<double>{0, 1, 2, 0, 0, 5});
  CHECK(values(tg::tril(x, -5)) == std::vector<double>(6, 0.0));
}

namespace {

/// fn throws an exception of type E whose message starts with `op` and contains every `parts`.
template <class E>
void check_error(const std::function<void()>& fn, const std::string& op,
                 const std::vector<std::string>& parts) {
  try {
    fn();
    FAIL_CHECK("expected " << op << " to throw");
  } catch (const E& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.rfind(op + ":", 0) == 0);
    for (const std::string& p : parts) {
      INFO("looking for '" << p << "'");
      CHECK(msg.find(p) != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("shape and index ops: every bad argument throws a tapegrad::Error naming the op",
          "[ops][shape-index][errors]") {
  const Tensor x = iota({3, 4});
  const Tensor s = tg::scalar_tensor(1, DType::f64);
  using tg::ShapeError, tg::ValueError, tg::DTypeError;
  // dims
  check_error<ValueError>([&] { tg::slice(x, 2); }, "slice", {"dim 2", "rank 2"});
  check_error<ValueError>([&] { tg::narrow(x, -3, 0, 1); }, "narrow", {"dim -3"});
  check_error<ValueError>([&] { tg::unsqueeze(x, 3); }, "unsqueeze", {"dim 3"});
  check_error<ValueError>([&] { tg::flip(x, {0, -2}); }, "flip", {"repeats"});
  check_error<ValueError>([&] { tg::cat({x, x}, 2); }, "cat", {"dim 2"});
  check_error<ValueError>([&] { tg::stack({x, x}, -4); }, "stack", {"dim -4"});
  // bounds
  check_error<ValueError>([&] { tg::slice(x, 0, 0, 2, 0); }, "slice", {"step", "0"});
  check_error<ValueError>([&] { tg::narrow(x, 1, -5, 1); }, "narrow", {"-5", "[3, 4]"});
  check_error<ValueError>([&] { tg::narrow(x, 1, 2, 3); }, "narrow", {"length 3", "[3, 4]"});
  check_error<ValueError>([&] { tg::select(x, 1, -5); }, "select", {"-5", "[3, 4]"});
  check_error<ShapeError>([&] { tg::select(s, 0, 0); }, "select", {"0-dim"});
  check_error<ValueError>([&] { tg::split(x, 0); }, "split", {"split_size", "0"});
  check_error<ValueError>([&] { tg::split(x, std::vector<std::int64_t>{1, 1}); }, "split", {"[1, 1]", "3"});
  check_error<ValueError>([&] { tg::chunk(x, 0); }, "chunk", {"chunks"});
  // shapes and dtypes of lists
  check_error<ShapeError>([&] { tg::cat({x, iota({2, 3})}); }, "cat", {"[2, 3]", "[3, 4]"});
  check_error<DTypeError>([&] { tg::cat({x, x.to(DType::f32)}); }, "cat", {"f32", "f64"});
  check_error<ShapeError>([&] { tg::cat({s, s}); }, "cat", {"0-dim"});
  check_error<ValueError>([&] { tg::cat({}); }, "cat", {"non-empty"});
  check_error<ValueError>([&] { tg::cat({x, Tensor()}); }, "cat", {"tensor 1", "undefined"});
  check_error<ShapeError>([&] { tg::stack({x, x.reshape({4, 3})}); }, "stack", {"[4, 3]", "[3, 4]"});
  check_error<DTypeError>([&] { tg::stack({x, x.to(DType::f32)}); }, "stack", {"f32", "f64"});
  // indices: validated before any element is read
  check_error<ValueError>([&] { tg::index_select(x, 1, i64({0, 4}, {2})); }, "index_select", {"index 4", "size 4"});
  check_error<ValueError>([&] { tg::index_select(x, 0, i64({-1}, {1})); }, "index_select", {"index -1"});
  check_error<DTypeError>([&] { tg::index_select(x, 0, f64({0}, {1})); }, "index_select", {"i64", "f64"});
  check_error<ShapeError>([&] { tg::index_select(x, 0, i64({0}, {1, 1})); }, "index_select", {"1-D", "[1, 1]"});
  check_error<ValueError>([&] { tg::gather(x, 1, i64({0, 9}, {1, 2})); }, "gather", {"index 9", "[3, 4]"});
  check_error<ShapeError>([&] { tg::gather(x, 1, i64({0}, {1})); }, "gather", {"rank", "[3, 4]"});
  check_error<ShapeError>([&] { tg::gather(x, 1, i64({0, 0, 0, 0}, {4, 1})); }, "gather", {"[4, 1]", "[3, 4]"});
  check_error<ValueError>([&] { tg::scatter_add(x, 0, i64({3}, {1, 1}), f64({1}, {1, 1})); }, "scatter_add", {"index 3"});
  check_error<ShapeError>([&] { tg::scatter_add(x, 0, i64({0, 0}, {1, 2}), f64({1}, {1, 1})); }, "scatter_add",
                          {"[1, 2]", "src", "[1, 1]"});
  check_error<DTypeError>([&] { tg::scatter_add(x, 0, i64({0}, {1, 1}), tg::ones({1, 1})); }, "scatter_add",
                          {"f32", "f64"});
  check_error<ValueError>([&] { tg::embedding(i64({4}, {1}), x); }, "embedding", {"index 4", "3 embeddings"});
  check_error<ValueError>([&] { tg::embedding(i64({0}, {1}), x, -4); }, "embedding", {"padding_idx -4"});
  check_error<DTypeError>([&] { tg::embedding(f64({0}, {1}), x); }, "embedding", {"ids", "i64"});
  check_error<DTypeError>([&] { tg::embedding(i64({0}, {1}), i64({0, 1}, {1, 2})); }, "embedding", {"weight"});
  check_error<ShapeError>([&] { tg::embedding(i64({0}, {1}), iota({2, 2, 2})); }, "embedding", {"[2, 2, 2]"});
  // expand, repeat, roll, tril
  check_error<ShapeError>([&] { tg::expand(x, {3, 5}); }, "expand", {"[3, 4]", "[3, 5]"});
  check_error<ShapeError>([&] { tg::broadcast_to(x, {2, 3, 1}); }, "broadcast_to", {"[3, 4]", "[2, 3, 1]"});
  check_error<ShapeError>([&] { tg::expand(x, {4}); }, "expand", {"[4]", "[3, 4]"});
  check_error<ValueError>([&] { tg::expand(x, {-1, 3, 4}); }, "expand", {"leading"});
  check_error<ShapeError>([&] { tg::repeat(x, {2}); }, "repeat", {"[2]", "[3, 4]"});
  check_error<ValueError>([&] { tg::repeat(x, {1, -1}); }, "repeat", {"-1"});
  check_error<ValueError>([&] { tg::roll(x, {1, 2}, {0}); }, "roll", {"2 shifts", "1 dims"});
  check_error<ValueError>([&] { tg::roll(x, {1, 2}); }, "roll", {"one shift"});
  check_error<ShapeError>([&] { tg::tril(f64({1, 2}, {2})); }, "tril", {"[2]"});
  check_error<ShapeError>([&] { tg::triu(s); }, "triu", {"[]"});
  // pad
  check_error<ValueError>([&] { tg::pad(x, {1}); }, "pad", {"even", "[1]"});
  check_error<ShapeError>([&] { tg::pad(x, {1, 1, 1, 1, 1, 1}); }, "pad", {"3 dims", "[3, 4]"});
  check_error<ShapeError>([&] { tg::pad(x, {-3, -2}); }, "pad", {"size -1"});
  check_error<ShapeError>([&] { tg::pad(f64({1, 2}, {2}), {1, 1}, tg::PadMode::reflect); }, "pad",
                          {"reflect", "rank 2 or 3", "[2]"});
  check_error<ValueError>([&] { tg::pad(x, {4, 0}, tg::PadMode::reflect); }, "pad", {"at most 3"});
  check_error<ValueError>([&] { tg::pad(x, {5, 0}, tg::PadMode::circular); }, "pad", {"at most 4"});
  check_error<ShapeError>([&] { tg::pad(tg::zeros({2, 0}), {1, 1}, tg::PadMode::replicate); }, "pad", {"empty"});
  check_error<ValueError>([&] { tg::pad(x, {1, 1}, tg::PadMode::replicate, 1.0); }, "pad", {"value"});
  // undefined inputs
  check_error<ValueError>([&] { tg::flip(Tensor(), {0}); }, "flip", {"undefined"});
  check_error<ValueError>([&] { tg::gather(Tensor(), 0, i64({0}, {1})); }, "gather", {"undefined"});
}

TEST_CASE("shape and index ops: f32 matches f64, forward and gradients", "[ops][shape-index][f32]") {
  const Tensor x = leaf({3, 4}, 7);
  const Tensor y = leaf({3, 4}, 8);
  const Tensor idx = i64({2, 0, 2, 1}, {2, 2});
  const std::vector<std::pair<std::string, TensorFn>> fns = {
      {"cat", [](const auto& in) { return tg::cat({in[0], in[1]}, -1); }},
      {"slice", [](const auto& in) { return tg::slice(in[0], 1, 1, {}, 2) * tg::slice(in[1], 1, 0, 3, 2); }},
      {"split", [](const auto& in) { return tg::split(in[0], 2, 1)[1] + tg::chunk(in[1], 2, 1)[0]; }},
      {"index_select", [](const auto& in) { return tg::index_select(in[0], 1, i64({3, 3, 0}, {3})); }},
      {"gather", [idx](const auto& in) { return tg::gather(in[0], 1, idx); }},
      {"scatter_add", [idx](const auto& in) { return tg::scatter_add(in[0], 1, idx, tg::slice(in[1], 0, 0, 2)); }},
      {"embedding", [](const auto& in) { return tg::embedding(i64({2, 1, 2}, {3}), in[0], 1); }},
      {"expand/repeat", [](const auto& in) { return tg::expand(tg::unsqueeze(in[0], 0), {2, 3, 4}) * tg::repeat(in[1], {2, 1, 1}); }},
      {"flip/roll", [](const auto& in) { return tg::flip(in[0], {0}) + tg::roll(in[1], {1}, {1}); }},
      {"pad", [](const auto& in) { return tg::pad(tg::unsqueeze(in[0], 0), {1, 2, 2, 1}, tg::PadMode::reflect); }},
      {"tril/triu", [](const auto& in) { return tg::tril(in[0], 1) + tg::triu(in[1], -1); }},
  };
  std::uint64_t seed = 40;
  for (const auto& [label, fn] : fns) {
    INFO(label);
    check_f32_matches_f64(fn, {x, y});
    check_f32_grads_match_f64(fn, {x, y}, ++seed);
  }
}

TEST_CASE("shape and index ops: gradients are differentiable again (gradgrad by finite differences)",
          "[ops][shape-index][second-order]") {
  // d/dx of <dL/dx, u> for L = sum(tanh(op(x)) * w): each op's VJP must be recorded as ops.
  const Tensor idx = i64({2, 0, 2, 1}, {2, 2});
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> ops = {
      {"narrow", [](const Tensor& t) { return tg::narrow(t, 1, 1, 2); }},
      {"cat", [](const Tensor& t) { return tg::cat({t, t * 2.0}, 0); }},
      {"gather", [idx](const Tensor& t) { return tg::gather(t, 1, idx); }},
      {"scatter_add", [idx](const Tensor& t) { return tg::scatter_add(t, 1, idx, tg::slice(t, 0, 1)); }},
      {"pad", [](const Tensor& t) { return tg::pad(t, {2, 1}, tg::PadMode::reflect); }},
      {"embedding", [](const Tensor& t) { return tg::embedding(i64({1, 1, 2}, {3}), t, 2); }},
  };
  for (const auto& [label, op] : ops) {
    INFO(label);
    const Tensor x = leaf({3, 4}, 11);
    const Tensor u = random_tensor({3, 4}, 12);
    const TensorFn hvp = [&, op = op](const std::vector<Tensor>& in) {
      // check_vjp's finite differences run without grad, on copies that need none.
      const tg::EnableGradGuard grad_mode;
      const Tensor x0 = in[0].requires_grad() ? in[0] : copy_values(in[0]).set_requires_grad(true);
      const Tensor out = tg::tanh(op(x0));
      const Tensor w = random_tensor(out.shape(), 13);
      const auto g = tg::grad({tg::sum(out * w)}, {x0}, {}, {.create_graph = true});
      return tg::sum(g[0] * u);
    };
    check_vjp(hvp, {x}, 99);
  }
}

TEST_CASE("shape and index ops: registered with checker samples, their VJP ops too",
          "[ops][shape-index][registry]") {
  for (const char* name :
       {"cat", "slice", "slice_backward", "expand", "expand_backward", "repeat", "repeat_backward",
        "flip", "flip_backward", "roll", "roll_backward", "tril", "triu", "pad", "pad_backward",
        "index_select", "index_select_backward", "embedding", "embedding_backward", "gather",
        "scatter_add"}) {
    INFO(name);
    const tg::OpInfo info = tg::find_op(name);
    REQUIRE(info.samples);
    CHECK_FALSE(info.samples().empty());
    CHECK(info.differentiable_vjp);
  }
}
