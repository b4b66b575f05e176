// User-defined ops through the public op API (op.hpp): registration and lookup, the
// engine's checks of an op's contract, and detection of in-place changes to saved tensors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

/// tg::testing::random_values with this file's default range [-2.0, 2.0).
std::vector<double> random_values(std::size_t n, std::uint64_t seed, double low = -2.0,
                                  double high = 2.0) {
  return tg::testing::random_values(n, seed, low, high);
}

tg::Tensor cube(const tg::Tensor& x);

/// y = x^3, dL/dx = 3 x^2 grad_out.
struct Cube {
  static constexpr std::string_view name = "cube";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const {
    if (in.size() != 1 || !in[0].defined()) throw tg::ValueError("cube: expects one tensor");
    if (!tg::is_floating(in[0].dtype())) {
      throw tg::DTypeError(fmt::format("cube: expects f32 or f64, got {}", in[0].dtype()));
    }
    return in[0].meta();
  }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    return in[0] * in[0] * in[0];
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& grad_out) {
    const tg::Tensor& x = ctx.saved(0);
    return {grad_out * x * x * 3.0};
  }
  static std::vector<tg::Sample> samples() {
    tg::Tensor x = tg::from_vector(std::vector<double>{0.5, -1.5, 2.0, 1.25, -0.25, 0.75}, {2, 3},
                                   tg::DType::f64);
    x.set_requires_grad(true);
    return {{"[2, 3]", {x}, [](const std::vector<tg::Tensor>& in) { return cube(in[0]); }}};
  }
};

tg::Tensor cube(const tg::Tensor& x) { return tg::apply(Cube{}, {x}); }

/// Claims the name of a built-in.
struct FakeRelu {
  static constexpr std::string_view name = "relu";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0].clone(); }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) { return {g}; }
};

/// An op that breaks one rule of the contract on purpose. Inputs a, b of one shape.
enum class Break {
  nothing,
  vjp_count,
  vjp_shape,
  vjp_dtype,
  vjp_undefined,
  vjp_missing_saved,
  forward_shape,
  forward_dtype,
  forward_undefined
};

struct Broken {
  static constexpr std::string_view name = "broken_op";
  Break mode = Break::nothing;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) {
    const tg::Tensor& a = in[0];
    const tg::DType other = a.dtype() == tg::DType::f32 ? tg::DType::f64 : tg::DType::f32;
    switch (mode) {
      case Break::forward_shape: return tg::zeros({a.size(1), a.size(0)}, a.dtype());
      case Break::forward_dtype: return a.to(other);
      case Break::forward_undefined: return tg::Tensor();
      default: return a + in[1];
    }
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    const tg::DType other = g.dtype() == tg::DType::f32 ? tg::DType::f64 : tg::DType::f32;
    switch (mode) {
      case Break::vjp_count: return {g, g, g};
      case Break::vjp_shape: return {g.reshape({g.size(1), g.size(0)}), g};
      case Break::vjp_dtype: return {g, g.to(other)};
      case Break::vjp_undefined: return {g, tg::Tensor()};
      case Break::vjp_missing_saved: return {g * ctx.saved(5), g};
      default: return {g, ctx.needs_input_grad(1) ? g : tg::Tensor()};
    }
  }
};

tg::Tensor broken(Break mode, const tg::Tensor& a, const tg::Tensor& b) {
  return tg::apply(Broken{mode}, {a, b});
}

/// What an op's VJP saw of its context.
struct ContextView {
  std::size_t num_inputs = 0;
  bool needs0 = false, needs1 = false, recording_in_forward = false;
  tg::TensorMeta input1;
};

/// y = alpha a + b, reporting what its context tells it.
struct Axpy {
  static constexpr std::string_view name = "axpy";
  double alpha = 1.0;
  ContextView* seen = nullptr;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    seen->recording_in_forward = ctx.recording();
    return in[0] * alpha + in[1];
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    seen->num_inputs = ctx.num_inputs();
    seen->needs0 = ctx.needs_input_grad(0);
    seen->needs1 = ctx.needs_input_grad(1);
    seen->input1 = ctx.input(1);
    return {ctx.needs_input_grad(0) ? g * alpha : tg::Tensor(),
            ctx.needs_input_grad(1) ? g : tg::Tensor()};
  }
};

/// y = x, handing back the input tensor itself.
struct Identity {
  static constexpr std::string_view name = "identity";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0]; }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) { return {g}; }
};

/// y = 2x plus a non-differentiable extra output: the i64 index of each element.
struct DoubleWithIndex {
  static constexpr std::string_view name = "double_with_index";
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.add_extra_output(
        tg::arange(static_cast<double>(in[0].numel()), tg::DType::i64).reshape(in[0].shape()));
    return in[0] * 2.0;
  }
  std::vector<tg::Tensor> vjp(tg::OpContext&, const tg::Tensor& g) { return {g * 2.0}; }
};

std::vector<std::string> registered_names() {
  std::vector<std::string> names;
  for (const auto& op : tg::registered_ops()) names.push_back(op.name);
  return names;
}

}  // namespace

TEST_CASE("a user op registers once and is found by name", "[custom_op][registry]") {
  tg::register_op<Cube>();
  tg::register_op<Cube>();  // registering the same op again does nothing
  const auto names = registered_names();
  REQUIRE(std::count(names.begin(), names.end(), "cube") == 1);
  // Built-ins come first.
  const auto relu_at = std::find(names.begin(), names.end(), "relu");
  const auto cube_at = std::find(names.begin(), names.end(), "cube");
  REQUIRE(relu_at != names.end());
  REQUIRE(relu_at < cube_at);
  REQUIRE(std::find(names.begin(), names.end(), "matmul") < cube_at);

  const tg::OpInfo info = tg::find_op("cube");
  REQUIRE(info.name == "cube");
  REQUIRE(info.key == tg::op_info<Cube>().key);
  REQUIRE(info.key != tg::find_op("relu").key);
  REQUIRE(static_cast<bool>(info.samples));
  const auto samples = info.samples();
  REQUIRE(samples.size() == 1);
  const tg::Tensor y = samples[0].fn(samples[0].inputs);
  REQUIRE(y.at({0, 1}) == Approx(-3.375));
  REQUIRE(y.grad_fn_name() == "cube");
  REQUIRE(static_cast<bool>(tg::find_op("add").samples));  // built-ins have samples too
}

TEST_CASE("a name that is taken, and a name that is unknown", "[custom_op][registry]") {
  REQUIRE_THROWS_AS(tg::register_op<FakeRelu>(), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::register_op<FakeRelu>(), Contains("register_op") && Contains("'relu'"));
  REQUIRE(tg::find_op("relu").key != tg::op_info<FakeRelu>().key);  // the built-in stays

  REQUIRE_THROWS_AS(tg::find_op("no_such_op"), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::find_op("no_such_op"), Contains("find_op") && Contains("no_such_op") &&
                                                     Contains("relu") && Contains("matmul") &&
                                                     Contains("mse_loss"));
}

TEMPLATE_TEST_CASE("the cube op computes x^3 and its gradient 3 x^2 g", "[custom_op]", float,
                   double) {
  const auto xv = random_values(12, 1), gv = random_values(12, 2);
  tg::Tensor x = tg::from_vector(xv, {3, 4}, tg::dtype_of<TestType>()).set_requires_grad(true);
  tg::Tensor y = cube(x);
  REQUIRE(y.grad_fn_name() == "cube");
  REQUIRE(y.meta() == x.meta());
  y.backward(tg::from_vector(gv, {3, 4}, tg::dtype_of<TestType>()));
  const auto yv = y.to_vector<double>(), g = x.grad().to_vector<double>();
  REQUIRE(x.grad().dtype() == tg::dtype_of<TestType>());
  const double eps = sizeof(TestType) == 4 ? 1e-5 : 1e-12;
  for (std::size_t i = 0; i < 12; ++i) {
    REQUIRE(yv[i] == Approx(xv[i] * xv[i] * xv[i]).epsilon(eps).margin(eps));
    REQUIRE(g[i] == Approx(3 * xv[i] * xv[i] * gv[i]).epsilon(eps).margin(eps));
  }

  // Composes with built-ins on both sides.
  x.set_grad(tg::Tensor());
  tg::sum(cube(tg::tanh(x)) * 2.0).backward();
  const auto g2 = x.grad().to_vector<double>();
  for (std::size_t i = 0; i < 12; ++i) {
    const double t = std::tanh(xv[i]);
    REQUIRE(g2[i] == Approx(6 * t * t * (1 - t * t)).epsilon(eps * 10).margin(eps));
  }

  // Not recorded when nothing needs grad, but still computed.
  tg::Tensor plain = cube(x.detach());
  REQUIRE(plain.is_leaf());
  REQUIRE(plain.to_vector<double>() == yv);
  REQUIRE_THROWS_AS(cube(tg::zeros({2}, tg::DType::i64)), tg::DTypeError);
}

TEST_CASE("OpContext tells the VJP what its inputs were", "[custom_op]") {
  ContextView seen;
  tg::Tensor a = tg::from_vector(random_values(6, 3), {3, 2}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor b = tg::from_vector(random_values(6, 4), {3, 2}, tg::DType::f64);
  tg::Tensor y = tg::apply(Axpy{-2.5, &seen}, {a, b});
  REQUIRE(seen.recording_in_forward);
  const auto gv = random_values(6, 5);
  y.backward(tg::from_vector(gv, {3, 2}, tg::DType::f64));
  REQUIRE(seen.num_inputs == 2);
  REQUIRE(seen.needs0);
  REQUIRE_FALSE(seen.needs1);
  REQUIRE(seen.input1 == b.meta());
  const auto g = a.grad().to_vector<double>();
  for (std::size_t i = 0; i < 6; ++i) REQUIRE(g[i] == Approx(-2.5 * gv[i]));

  ContextView unrecorded;
  tg::apply(Axpy{1.0, &unrecorded}, {b, b});
  REQUIRE_FALSE(unrecorded.recording_in_forward);
}

TEST_CASE("a forward that returns its input does not rewire the input", "[custom_op]") {
  tg::Tensor x = tg::from_vector(random_values(6, 21), {3, 2}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor y = tg::apply(Identity{}, {x});
  REQUIRE(x.is_leaf());
  REQUIRE(x.grad_fn_name().empty());
  REQUIRE(y.grad_fn_name() == "identity");
  REQUIRE(y.shares_storage(x));
  const auto gv = random_values(6, 22);
  (y * 2.0).backward(tg::from_vector(gv, {3, 2}, tg::DType::f64));
  const auto g = x.grad().to_vector<double>();
  for (std::size_t i = 0; i < 6; ++i) REQUIRE(g[i] == 2 * gv[i]);
}

TEST_CASE("apply_with_extras returns the extra outputs, which carry no gradient", "[custom_op]") {
  tg::Tensor x = tg::from_vector(random_values(6, 6), {2, 3}, tg::DType::f64).set_requires_grad(true);
  const auto outs = tg::apply_with_extras(DoubleWithIndex{}, {x});
  REQUIRE(outs.size() == 2);
  REQUIRE(outs[0].grad_fn_name() == "double_with_index");
  REQUIRE(outs[1].dtype() == tg::DType::i64);
  REQUIRE(outs[1].shape() == tg::Shape{2, 3});
  REQUIRE(outs[1].to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
  REQUIRE_FALSE(outs[1].requires_grad());
  tg::sum(outs[0]).backward();
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>(6, 2.0));

  tg::NoGradGuard no_grad;
  const auto plain = tg::apply_with_extras(DoubleWithIndex{}, {x});
  REQUIRE(plain.size() == 2);
  REQUIRE(plain[1].to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
}

TEST_CASE("a VJP that breaks the contract makes backward throw, naming the op", "[custom_op][contract]") {
  const tg::Shape shape{2, 3};
  tg::Tensor a = tg::from_vector(random_values(6, 7), shape, tg::DType::f64).set_requires_grad(true);
  tg::Tensor b = tg::from_vector(random_values(6, 8), shape, tg::DType::f64).set_requires_grad(true);
  tg::Tensor g = tg::from_vector(random_values(6, 9), shape, tg::DType::f64);

  struct Case {
    Break mode;
    std::string detail;
  };
  for (const auto& [mode, detail] : {Case{Break::vjp_count, "3 gradients for 2 inputs"},
                                     Case{Break::vjp_shape, "[3, 2]"},
                                     Case{Break::vjp_dtype, "f32"},
                                     Case{Break::vjp_undefined, "no gradient for input 1"},
                                     Case{Break::vjp_missing_saved, "saved tensor 5"}}) {
    INFO("expecting " << detail);
    tg::Tensor y = broken(mode, a, b);
    REQUIRE_THROWS_AS(y.backward(g, true), tg::GraphError);
    REQUIRE_THROWS_WITH(y.backward(g, true), Contains("broken_op") && Contains(detail));
    REQUIRE_FALSE(a.grad().defined());  // nothing was delivered
    REQUIRE_FALSE(b.grad().defined());
    REQUIRE_THROWS_AS(tg::grad({y}, {a, b}, {g}), tg::GraphError);
  }
  // grad() of `a` alone does not want b's gradient: the VJP may leave it undefined...
  CHECK(tg::grad({broken(Break::vjp_undefined, a, b)}, {a}, {g})[0].defined());
  // ...but a gradient it returns must still fit.
  CHECK_THROWS_WITH(tg::grad({broken(Break::vjp_dtype, a, b)}, {a}, {g}), Contains("f32"));
  REQUIRE(tg::is_grad_enabled());  // the engine's guard was undone by the exception
  REQUIRE_THROWS_WITH(broken(Break::vjp_shape, a, b).backward(g),
                      Contains("[2, 3]") && Contains("input 0"));
  REQUIRE_THROWS_WITH(broken(Break::vjp_dtype, a, b).backward(g),
                      Contains("f64") && Contains("input 1"));

  // Breaking a rule where it does not matter is fine: b needs no gradient here.
  tg::Tensor c = b.detach();
  broken(Break::vjp_undefined, a, c).backward(g);
  REQUIRE(a.grad().to_vector<double>() == g.to_vector<double>());
  // And the well-behaved op works end to end.
  a.set_grad(tg::Tensor());
  broken(Break::nothing, a, b).backward(g);
  REQUIRE(a.grad().to_vector<double>() == g.to_vector<double>());
  REQUIRE(b.grad().to_vector<double>() == g.to_vector<double>());
}

TEST_CASE("a forward that breaks its own shape rule throws GraphError", "[custom_op][contract]") {
  for (bool requires_grad : {true, false}) {
    INFO("recorded: " << requires_grad);
    tg::Tensor a = tg::from_vector(random_values(6, 10), {2, 3}, tg::DType::f32);
    tg::Tensor b = tg::from_vector(random_values(6, 11), {2, 3}, tg::DType::f32);
    if (requires_grad) a.set_requires_grad(true);
    const auto base = tg::live_tape_records();
    REQUIRE_THROWS_AS(broken(Break::forward_shape, a, b), tg::GraphError);
    REQUIRE_THROWS_WITH(broken(Break::forward_shape, a, b),
                        Contains("broken_op") && Contains("[3, 2]") && Contains("[2, 3]"));
    REQUIRE_THROWS_WITH(broken(Break::forward_dtype, a, b),
                        Contains("broken_op") && Contains("f64") && Contains("f32"));
    REQUIRE_THROWS_WITH(broken(Break::forward_undefined, a, b),
                        Contains("broken_op") && Contains("undefined"));
    REQUIRE(tg::live_tape_records() == base);  // the failed records were not kept
    REQUIRE(tg::is_grad_enabled());
  }
}

TEST_CASE("changing a saved tensor in place before backward is detected", "[custom_op][inplace]") {
  const tg::Shape shape{2, 3};
  const auto gv = random_values(6, 12);
  auto make = [&](std::uint64_t seed) {
    return tg::from_vector(random_values(6, seed), shape, tg::DType::f64).set_requires_grad(true);
  };
  tg::Tensor g = tg::from_vector(gv, shape, tg::DType::f64);

  SECTION("the built-in mul, changed under a NoGradGuard") {
    tg::Tensor x = make(13), w = make(14);
    tg::Tensor y = x * w;
    {
      tg::NoGradGuard no_grad;
      w.mul_(2.0);
    }
    REQUIRE_THROWS_AS(y.backward(g), tg::GraphError);
    REQUIRE_THROWS_WITH(y.backward(g), Contains("mul") && Contains("in-place") &&
                                           Contains("[2, 3]"));
    REQUIRE_FALSE(x.grad().defined());
  }
  SECTION("changed through a view or a detached handle") {
    tg::Tensor x = make(15), w = make(16);
    tg::Tensor y = x * w;
    {
      tg::NoGradGuard no_grad;
      w.reshape({3, 2}).add_(tg::ones({3, 2}, tg::DType::f64));
    }
    REQUIRE_THROWS_WITH(y.backward(g), Contains("in-place"));
    tg::Tensor z = cube(x);
    x.detach().fill_(1.0);  // a detached handle needs no guard, but shares the storage
    REQUIRE_THROWS_AS(z.backward(g), tg::GraphError);
    REQUIRE_THROWS_WITH(z.backward(g), Contains("cube") && Contains("in-place"));
  }
  SECTION("tensors that were not saved may change") {
    tg::Tensor x = make(17), w = make(18);
    tg::Tensor y = x + w;  // add saves nothing
    {
      tg::NoGradGuard no_grad;
      w.mul_(2.0);
      x.mul_(3.0);
    }
    y.backward(g);
    REQUIRE(x.grad().to_vector<double>() == gv);
    REQUIRE(w.grad().to_vector<double>() == gv);
  }
  SECTION("changes before the op are fine, and the VJP uses the new values") {
    tg::Tensor x = make(19), w = make(20);
    {
      tg::NoGradGuard no_grad;
      w.mul_(-2.0);
    }
    tg::Tensor y = x * w;
    y.backward(g);
    const auto wv = w.to_vector<double>(), xg = x.grad().to_vector<double>();
    for (std::size_t i = 0; i < 6; ++i) REQUIRE(xg[i] == Approx(wv[i] * gv[i]));
  }
}

namespace {

/// x·w (element-wise), recording what its VJP was asked for.
struct AskedProbe {
  static constexpr std::string_view name = "asked_probe";
  std::vector<std::vector<bool>>* asked;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(in[0]);
    ctx.save(in[1]);
    return in[0] * in[1];
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& g) {
    asked->push_back({ctx.needs_input_grad(0), ctx.needs_input_grad(1)});
    return {ctx.needs_input_grad(0) ? g * ctx.saved(1) : tg::Tensor(),
            ctx.needs_input_grad(1) ? g * ctx.saved(0) : tg::Tensor()};
  }
};

}  // namespace

TEST_CASE("grad() computes only the gradients that lead to its inputs", "[custom_op][engine]") {
  std::vector<std::vector<bool>> asked;
  const tg::Tensor x = tg::from_vector(random_values(4, 11), {4}, tg::DType::f64).set_requires_grad(true);
  const tg::Tensor w = tg::from_vector(random_values(4, 12), {4}, tg::DType::f64).set_requires_grad(true);
  const tg::Tensor v = tg::from_vector(random_values(4, 13), {4}, tg::DType::f64).set_requires_grad(true);
  // y = probe(x, w); the second probe reads only weights: nothing of it leads to x.
  const tg::Tensor y = tg::apply(AskedProbe{&asked}, {x, w}) + tg::apply(AskedProbe{&asked}, {w, v});
  const auto gx = tg::grad({tg::sum(y)}, {x}, {}, tg::GradOptions{.retain_graph = true});
  REQUIRE(asked.size() == 1);  // the (w, v) probe was skipped
  CHECK(asked[0] == std::vector<bool>{true, false});
  CHECK(gx[0].to_vector<double>() == w.to_vector<double>());
  asked.clear();
  tg::sum(y).backward();  // backward() wants every leaf
  REQUIRE(asked.size() == 2);
  CHECK(asked[0] == std::vector<bool>{true, true});
  CHECK(asked[1] == std::vector<bool>{true, true});
}

namespace {

/// y = 2x, whose VJP adds 2·grad_out into ctx.grad_sum(0) when there is one, and records
/// whether there was.
struct Doubler {
  static constexpr std::string_view name = "doubler_with_grad_sum";
  inline static std::vector<bool> offered;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext&, std::span<const tg::Tensor> in) { return in[0] * 2.0; }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& grad_out) {
    tg::Tensor sum = ctx.grad_sum(0);
    offered.push_back(sum.defined());
    if (!sum.defined() || tg::is_grad_enabled()) return {grad_out * 2.0};
    sum.add_(grad_out, 2.0);
    return {sum};
  }
};

tg::Tensor doubler(const tg::Tensor& x) { return tg::apply(Doubler{}, {x}); }

}  // namespace

TEST_CASE("custom op: a VJP may add into the gradient being summed (OpContext::grad_sum)",
          "[custom_op][grad_sum]") {
  using tg::testing::AllClose;
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3}, {3}, tg::DType::f64);
  x.set_requires_grad(true);
  const tg::Tensor seed = tg::from_vector(std::vector<double>{1, -1, 0.5}, {3}, tg::DType::f64);
  Doubler::offered.clear();

  SECTION("into the leaf's grad() from the second backward on, once per backward") {
    doubler(x).backward(seed);
    doubler(x).backward(seed);
    doubler(x).backward(seed);
    CHECK(Doubler::offered == std::vector<bool>{false, true, true});
    CHECK_THAT(x.grad(), AllClose({6, -6, 3}, {3}));
    const std::uint64_t before = x.grad().version();
    doubler(x).backward(seed);
    CHECK(x.grad().version() > before);  // changed in place, like any accumulation
  }
  SECTION("into a non-leaf's sum, once another consumer's gradient is there") {
    const tg::Tensor h = x * 1.0;
    const tg::Tensor w = tg::sum(doubler(h) * seed);
    (w + tg::sum(h * w)).backward();  // h·w's VJP runs first (it consumes doubler's output)
    CHECK(Doubler::offered == std::vector<bool>{true});
    // dw/dx = 2·seed; d(w + Σh·w)/dx = (1 + Σh)·2·seed + w.
    const double total_h = 6, w_value = 2 * (1 - 2 + 1.5);
    CHECK_THAT(x.grad(), AllClose({(1 + total_h) * 2 + w_value, -(1 + total_h) * 2 + w_value,
                                   (1 + total_h) * 1 + w_value}, {3}));
  }
  SECTION("never under create_graph or anomaly mode, nor when it is grad_out itself") {
    doubler(x).backward(seed);
    tg::GradOptions create_graph;
    create_graph.create_graph = true;
    (void)tg::grad({doubler(x)}, {x}, {seed}, create_graph);
    {
      tg::AnomalyGuard anomaly;
      doubler(x).backward(seed);
    }
    // The seed is the leaf's own grad(): adding into it would change grad_out mid-VJP.
    doubler(x).backward(x.grad());
    CHECK(Doubler::offered == std::vector<bool>{false, false, false, false});
    CHECK_THAT(x.grad(), AllClose({12, -12, 6}, {3}));  // 2·seed twice, then 3× that
  }
}
