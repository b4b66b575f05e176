// The backward engine: accumulation, graph shapes (diamonds, reuse of a tensor), seeds,
// retain_graph, NoGradGuard, functional grad(), deep chains and graph reuse.
// Every case uses non-square shapes and a random upstream gradient, in f32 and f64.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <omp.h>

#include <catch2/catch.hpp>
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

template <class T>
tg::Tensor make(const std::vector<double>& values, const tg::Shape& shape,
                bool requires_grad = false) {
  tg::Tensor t = tg::from_vector(values, shape, tg::dtype_of<T>());
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

/// Relative tolerance that suits the dtype's rounding.
template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 2e-5 : 1e-12;
}

template <class T>
void require_close(const tg::Tensor& actual, const std::vector<double>& expected,
                   const tg::Shape& shape) {
  REQUIRE(actual.defined());
  REQUIRE(actual.shape() == shape);
  REQUIRE(actual.dtype() == tg::dtype_of<T>());
  const auto a = actual.to_vector<double>();
  REQUIRE(a.size() == expected.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    REQUIRE(a[i] == Approx(expected[i]).epsilon(tol<T>()).margin(tol<T>()));
  }
}

template <class F>
std::vector<double> zip(const std::vector<double>& a, const std::vector<double>& b, F f) {
  std::vector<double> out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = f(a[i], b[i]);
  return out;
}

}  // namespace

// zero_grad streams large gradients out on all threads, each a share of whole cache lines:
// every element zero at 1-3 threads, for lengths that do not fill the last line.
TEMPLATE_TEST_CASE("zero_grad zeroes every element of a large gradient", "[engine]", float, double) {
  const int threads = omp_get_max_threads();
  for (const std::int64_t n : {std::int64_t{65536}, std::int64_t{65536 * 3 + 5}, std::int64_t{200003}}) {
    for (const int t : {1, 2, 3}) {
      tg::Tensor x = tg::zeros({n}, tg::dtype_of<TestType>());
      x.set_requires_grad(true);
      x.set_grad(tg::full({n}, 3.5, tg::dtype_of<TestType>()));
      const std::uint64_t version = x.grad().version();
      omp_set_num_threads(t);
      x.zero_grad();
      omp_set_num_threads(threads);
      INFO(n << " elements, " << t << " threads");
      CHECK(x.grad().version() > version);
      const TestType* g = x.grad().template data<TestType>();
      std::int64_t nonzero = 0;
      for (std::int64_t i = 0; i < n; ++i) nonzero += g[i] != TestType(0);
      CHECK(nonzero == 0);
    }
  }
}

TEMPLATE_TEST_CASE("gradients accumulate across backward calls and zero_grad zeroes", "[engine]",
                   float, double) {
  const tg::Shape shape{2, 3};
  const auto xv = random_values(6, 1), wv = random_values(6, 2), gv = random_values(6, 3);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor w = make<TestType>(wv, shape);
  tg::Tensor g = make<TestType>(gv, shape);
  const auto wg = zip(wv, gv, [](double a, double b) { return a * b; });

  REQUIRE_FALSE(x.grad().defined());
  (x * w).backward(g);
  require_close<TestType>(x.grad(), wg, shape);
  REQUIRE_FALSE(w.grad().defined());

  (x * w).backward(g);
  require_close<TestType>(x.grad(), zip(wg, wg, std::plus<>()), shape);

  x.zero_grad();
  require_close<TestType>(x.grad(), std::vector<double>(6, 0.0), shape);
  (w * x).backward(g);
  require_close<TestType>(x.grad(), wg, shape);

  x.set_grad(tg::Tensor());
  REQUIRE_FALSE(x.grad().defined());

  // backward adds to whatever is there (dlib's "poisoned gradient" check).
  const auto poison = random_values(6, 4, 5.0, 9.0);
  x.set_grad(make<TestType>(poison, shape));
  (x * w).backward(g);
  require_close<TestType>(x.grad(), zip(poison, wg, std::plus<>()), shape);

  require_close<TestType>(g, gv, shape);  // the seed is untouched
}

TEMPLATE_TEST_CASE("a diamond with paths of different length", "[engine]", float, double) {
  // a = tanh(x); c = exp(a); y = c * a.  dy/dx = c (a + 1) (1 - a^2): both paths must be
  // summed into a's gradient before a's VJP runs.
  const tg::Shape shape{3, 2};
  const auto xv = random_values(6, 10, -1.5, 1.5), gv = random_values(6, 11);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor a = tg::tanh(x);
  tg::Tensor y = tg::exp(a) * a;
  y.backward(make<TestType>(gv, shape));
  std::vector<double> expected(6);
  for (std::size_t i = 0; i < 6; ++i) {
    const double av = std::tanh(xv[i]);
    expected[i] = std::exp(av) * (av + 1) * (1 - av * av) * gv[i];
  }
  require_close<TestType>(x.grad(), expected, shape);
}

TEMPLATE_TEST_CASE("a tensor used twice gets the sum of both gradients", "[engine]", float, double) {
  const tg::Shape shape{2, 4};
  const auto xv = random_values(8, 20), gv = random_values(8, 21);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor g = make<TestType>(gv, shape);

  tg::sum(x * x).backward();
  require_close<TestType>(x.grad(), zip(xv, xv, std::plus<>()), shape);

  x.set_grad(tg::Tensor());
  (x + x).backward(g);  // add's VJP hands the same grad_out to both inputs
  require_close<TestType>(x.grad(), zip(gv, gv, std::plus<>()), shape);

  x.set_grad(tg::Tensor());
  tg::Tensor h = tg::tanh(x);
  (h * h).backward(g);  // an intermediate read twice by one op: two edges to one producer
  std::vector<double> expected_h(8);
  for (std::size_t i = 0; i < 8; ++i) {
    const double t = std::tanh(xv[i]);
    expected_h[i] = 2 * t * (1 - t * t) * gv[i];
  }
  require_close<TestType>(x.grad(), expected_h, shape);

  x.set_grad(tg::Tensor());
  (x * x * x - x).backward(g);
  std::vector<double> expected(8);
  for (std::size_t i = 0; i < 8; ++i) expected[i] = (3 * xv[i] * xv[i] - 1) * gv[i];
  require_close<TestType>(x.grad(), expected, shape);
  require_close<TestType>(g, gv, shape);  // the seed is untouched
}

TEMPLATE_TEST_CASE("the seed is never aliased by a stored gradient", "[engine]", float, double) {
  const auto gv = random_values(6, 30);
  const std::vector<double> doubled = zip(gv, gv, std::plus<>());
  SECTION("backward from a leaf") {
    tg::Tensor x = make<TestType>(random_values(6, 31), {2, 3}, true);
    tg::Tensor g = make<TestType>(gv, {2, 3});
    x.backward(g);
    x.backward(g);
    require_close<TestType>(x.grad(), doubled, {2, 3});
    require_close<TestType>(g, gv, {2, 3});  // the second backward added into x.grad, not g
    REQUIRE_FALSE(x.grad().shares_storage(g));
  }
  SECTION("through reshape, whose VJP returns a view of grad_out") {
    tg::Tensor x = make<TestType>(random_values(6, 32), {2, 3}, true);
    tg::Tensor g = make<TestType>(gv, {3, 2});
    x.reshape({3, 2}).backward(g);
    x.reshape({3, 2}).backward(g);
    require_close<TestType>(x.grad(), doubled, {2, 3});
    require_close<TestType>(g, gv, {3, 2});
  }
}

TEMPLATE_TEST_CASE("y.backward(seed) matches the hand-computed VJP", "[engine]", float, double) {
  // y = x * w - 3 x + w / 2 + b, b broadcast over rows.
  // dL/dx = (w - 3) g, dL/dw = (x + 1/2) g, dL/db = column sums of g.
  const tg::Shape shape{3, 4};
  const auto xv = random_values(12, 40), wv = random_values(12, 41), bv = random_values(4, 42),
             gv = random_values(12, 43);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor w = make<TestType>(wv, shape, true);
  tg::Tensor b = make<TestType>(bv, {4}, true);
  tg::Tensor y = x * w - x * 3.0 + w / 2.0 + b;
  REQUIRE(y.shape() == shape);
  y.backward(make<TestType>(gv, shape));
  require_close<TestType>(x.grad(), zip(wv, gv, [](double w_, double g_) { return (w_ - 3) * g_; }),
                          shape);
  require_close<TestType>(w.grad(), zip(xv, gv, [](double x_, double g_) { return (x_ + 0.5) * g_; }),
                          shape);
  std::vector<double> db(4, 0.0);
  for (std::size_t i = 0; i < 12; ++i) db[i % 4] += gv[i];
  require_close<TestType>(b.grad(), db, {4});
}

TEMPLATE_TEST_CASE("retain_graph allows a second backward, its absence forbids it", "[engine]",
                   float, double) {
  const tg::Shape shape{2, 3};
  const auto xv = random_values(6, 50), wv = random_values(6, 51);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor w = make<TestType>(wv, shape);
  std::vector<double> once(6);
  for (std::size_t i = 0; i < 6; ++i) once[i] = wv[i] * (1 - std::pow(std::tanh(xv[i]), 2));

  tg::Tensor loss = tg::sum(tg::tanh(x) * w);
  loss.backward(tg::Tensor(), /*retain_graph=*/true);
  require_close<TestType>(x.grad(), once, shape);
  tg::backward(loss, tg::Tensor(), true);
  require_close<TestType>(x.grad(), zip(once, once, std::plus<>()), shape);
  loss.backward();  // frees the graph
  require_close<TestType>(x.grad(), zip(zip(once, once, std::plus<>()), once, std::plus<>()), shape);

  REQUIRE_THROWS_AS(loss.backward(), tg::GraphError);
  REQUIRE_THROWS_WITH(loss.backward(), Contains("retain_graph") && Contains("second time"));
  REQUIRE_THROWS_AS(tg::grad({loss}, {x}), tg::GraphError);
  // A new graph that reuses a freed part is refused too.
  tg::Tensor again = tg::tanh(x) * w;
  tg::Tensor loss2 = loss * 2.0;
  REQUIRE_THROWS_WITH(loss2.backward(), Contains("retain_graph"));
  tg::sum(again).backward();  // a fresh graph over the same leaves is fine
  require_close<TestType>(x.grad(), zip(zip(once, once, std::plus<>()), zip(once, once, std::plus<>()),
                                        std::plus<>()), shape);
}

TEMPLATE_TEST_CASE("bad seeds and outputs are GraphErrors", "[engine]", float, double) {
  constexpr tg::DType dt = tg::dtype_of<TestType>();
  constexpr tg::DType other = dt == tg::DType::f32 ? tg::DType::f64 : tg::DType::f32;
  tg::Tensor x = make<TestType>(random_values(6, 60), {2, 3}, true);
  tg::Tensor y = x * 2.0;

  REQUIRE_THROWS_AS(y.backward(), tg::GraphError);
  REQUIRE_THROWS_WITH(y.backward(), Contains("backward") && Contains("[2, 3]") &&
                                        Contains("grad_output"));
  REQUIRE_THROWS_AS(y.backward(tg::ones({3, 2}, dt)), tg::GraphError);
  REQUIRE_THROWS_WITH(y.backward(tg::ones({3, 2}, dt)), Contains("[3, 2]") && Contains("[2, 3]"));
  REQUIRE_THROWS_AS(y.backward(tg::ones({2, 3}, other)), tg::GraphError);
  REQUIRE_THROWS_WITH(y.backward(tg::ones({2, 3}, other)),
                      Contains(std::string(tg::dtype_name(other))) &&
                          Contains(std::string(tg::dtype_name(dt))));
  REQUIRE_THROWS_AS(y.backward(tg::ones({6}, dt)), tg::GraphError);
  REQUIRE_FALSE(x.grad().defined());  // nothing ran
  y.backward(tg::ones({2, 3}, dt));   // the failed calls did not free the graph
  require_close<TestType>(x.grad(), std::vector<double>(6, 2.0), {2, 3});

  tg::Tensor plain = make<TestType>(random_values(4, 61), {4});
  REQUIRE_THROWS_AS(plain.backward(tg::ones({4}, dt)), tg::GraphError);
  REQUIRE_THROWS_WITH(tg::sum(plain).backward(), Contains("does not require grad"));
  REQUIRE_THROWS_AS(tg::sum(x.detach()).backward(), tg::GraphError);
  tg::Tensor under_guard;
  {
    tg::NoGradGuard no_grad;
    under_guard = tg::sum(x * x);
  }
  REQUIRE_THROWS_AS(under_guard.backward(), tg::GraphError);
  REQUIRE_THROWS_AS(tg::Tensor().backward(), tg::GraphError);
}

TEST_CASE("NoGradGuard records nothing, nests and restores", "[engine]") {
  tg::Tensor x = make<double>(random_values(6, 70), {2, 3}, true);
  tg::Tensor w = make<double>(random_values(6, 71), {2, 3}, true);
  const auto before = tg::live_tape_records();
  REQUIRE(tg::is_grad_enabled());
  {
    tg::NoGradGuard outer;
    REQUIRE_FALSE(tg::is_grad_enabled());
    tg::Tensor y = tg::sum(tg::tanh(x * w) + x);
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(y.is_leaf());
    REQUIRE(y.grad_fn_name().empty());
    REQUIRE(tg::live_tape_records() == before);
    {
      tg::NoGradGuard inner;
      REQUIRE_FALSE(tg::is_grad_enabled());
    }
    REQUIRE_FALSE(tg::is_grad_enabled());  // the inner guard restores "off", not "on"
    REQUIRE_FALSE((x * w).requires_grad());
    // Values are still computed.
    const auto xv = x.to_vector<double>(), wv = w.to_vector<double>();
    double expected = 0;
    for (std::size_t i = 0; i < 6; ++i) expected += std::tanh(xv[i] * wv[i]) + xv[i];
    REQUIRE(y.item<double>() == Approx(expected));
  }
  REQUIRE(tg::is_grad_enabled());
  tg::Tensor z = x * w;
  REQUIRE(z.requires_grad());
  REQUIRE(tg::live_tape_records() == before + 1);
}

TEMPLATE_TEST_CASE("grad() returns gradients without touching .grad()", "[engine][grad]", float,
                   double) {
  // h = tanh(x) (an intermediate), y = h * w.
  const tg::Shape shape{2, 3};
  const auto xv = random_values(6, 80), wv = random_values(6, 81), gv = random_values(6, 82);
  tg::Tensor x = make<TestType>(xv, shape, true);
  tg::Tensor w = make<TestType>(wv, shape, true);
  tg::Tensor unrelated = make<TestType>(random_values(4, 83), {4, 1}, true);
  tg::Tensor h = tg::tanh(x);
  tg::Tensor y = h * w;
  std::vector<double> gx(6), gh(6), gw(6);
  for (std::size_t i = 0; i < 6; ++i) {
    const double hv = std::tanh(xv[i]);
    gh[i] = wv[i] * gv[i];
    gx[i] = gh[i] * (1 - hv * hv);
    gw[i] = hv * gv[i];
  }

  SECTION("with grad_outputs, leaves, an intermediate and an unrelated input") {
    const auto grads = tg::grad({y}, {x, h, w, unrelated}, {make<TestType>(gv, shape)});
    REQUIRE(grads.size() == 4);
    require_close<TestType>(grads[0], gx, shape);
    require_close<TestType>(grads[1], gh, shape);
    require_close<TestType>(grads[2], gw, shape);
    require_close<TestType>(grads[3], std::vector<double>(4, 0.0), {4, 1});
    REQUIRE_FALSE(x.grad().defined());
    REQUIRE_FALSE(w.grad().defined());
    REQUIRE_FALSE(unrelated.grad().defined());
  }
  SECTION("a scalar output needs no grad_outputs") {
    tg::Tensor loss = tg::sum(y * make<TestType>(gv, shape));
    const auto grads = tg::grad({loss}, {w, x});
    require_close<TestType>(grads[0], gw, shape);
    require_close<TestType>(grads[1], gx, shape);
    REQUIRE_FALSE(x.grad().defined());
  }
  SECTION("several outputs sum their contributions") {
    const auto g2 = random_values(6, 84);
    tg::Tensor y2 = x * 3.0;
    const auto grads = tg::grad({y, y2}, {x}, {make<TestType>(gv, shape), make<TestType>(g2, shape)});
    require_close<TestType>(grads[0], zip(gx, g2, [](double a, double b) { return a + 3 * b; }), shape);
  }
  SECTION("an output listed twice counts twice") {
    const auto g2 = random_values(6, 85);
    const std::vector<tg::Tensor> twice = tg::grad({y, y}, {x}, {make<TestType>(gv, shape), make<TestType>(g2, shape)},
                                /*retain_graph=*/true);
    const std::vector<tg::Tensor> once = tg::grad({y}, {x}, {make<TestType>(zip(gv, g2, std::plus<>()), shape)});
    require_close<TestType>(twice[0], once[0].to_vector<double>(), shape);
  }
  SECTION("the same input asked for twice gets its gradient twice") {
    // PyTorch's autograd.grad answers every entry; a leaf asked twice already works here.
    const auto grads = tg::grad({y}, {h, x, h, x}, {make<TestType>(gv, shape)});
    REQUIRE(grads.size() == 4);
    require_close<TestType>(grads[0], gh, shape);
    require_close<TestType>(grads[1], gx, shape);
    require_close<TestType>(grads[3], gx, shape);
    INFO("the second request for the intermediate h");
    require_close<TestType>(grads[2], gh, shape);
  }
  SECTION("the output itself as input gets the seed") {
    const auto grads = tg::grad({y}, {y}, {make<TestType>(gv, shape)});
    require_close<TestType>(grads[0], gv, shape);
  }
  SECTION("retain_graph keeps the graph for a later backward") {
    tg::Tensor loss = tg::sum(y);
    const auto grads = tg::grad({loss}, {x}, {}, /*retain_graph=*/true);
    loss.backward();
    require_close<TestType>(x.grad(), grads[0].to_vector<double>(), shape);
    REQUIRE_FALSE(x.grad().shares_storage(grads[0]));
  }
  SECTION("misuse") {
    tg::Tensor plain = make<TestType>(xv, shape);
    REQUIRE_THROWS_AS(tg::grad({y}, {x}), tg::GraphError);  // non-scalar without seed
    REQUIRE_THROWS_AS(tg::grad({tg::sum(y)}, {plain}), tg::GraphError);
    REQUIRE_THROWS_WITH(tg::grad({tg::sum(y)}, {x, plain}),
                        Contains("grad") && Contains("input 1") && Contains("does not require grad"));
    REQUIRE_THROWS_AS(tg::grad({y, y}, {x}, {make<TestType>(gv, shape)}), tg::GraphError);
  }
}

TEST_CASE("is_leaf and grad_fn_name", "[engine]") {
  tg::Tensor x = make<float>(random_values(6, 90), {3, 2}, true);
  tg::Tensor c = make<float>(random_values(6, 91), {3, 2});
  REQUIRE(x.is_leaf());
  REQUIRE(x.grad_fn_name().empty());
  REQUIRE(c.is_leaf());
  REQUIRE((c * c).is_leaf());  // nothing needed grad: not recorded
  REQUIRE_FALSE((c * c).requires_grad());
  const std::vector<std::pair<tg::Tensor, std::string>> cases{
      {x * c, "mul"},          {c + x, "add"},
      {x * 2.0, "mul_scalar"}, {tg::relu(x), "relu"},
      {tg::sum(x), "sum"},     {tg::matmul(x, c.reshape({2, 3})), "matmul"},
      {-x, "neg"},             {x.reshape({6}), "reshape"}};
  for (const auto& [t, name] : cases) {
    INFO(name);
    REQUIRE_FALSE(t.is_leaf());
    REQUIRE(t.requires_grad());
    REQUIRE(t.grad_fn_name() == name);
  }
}

TEST_CASE("a chain of 100000 ops backpropagates and dies without stack overflow",
          "[engine][deep]") {
  const auto base = tg::live_tape_records();
  tg::Tensor x = tg::scalar_tensor(0.75, tg::DType::f64).set_requires_grad(true);
  constexpr int kSteps = 100000;
  constexpr double kFactor = 1.00001;
  {
    tg::Tensor y = x;
    for (int i = 0; i < kSteps; ++i) y = y * kFactor;
    REQUIRE(tg::live_tape_records() == base + kSteps);
    y.backward();
    REQUIRE(x.grad().item<double>() == Approx(std::pow(kFactor, kSteps)).epsilon(1e-9));
    REQUIRE(y.item<double>() == Approx(0.75 * std::pow(kFactor, kSteps)).epsilon(1e-9));
  }
  REQUIRE(tg::live_tape_records() == base);
}

TEST_CASE("a chain of 100000 ops dies without backward and without stack overflow",
          "[engine][deep]") {
  const auto base = tg::live_tape_records();
  tg::Tensor x = tg::scalar_tensor(0.75, tg::DType::f64).set_requires_grad(true);
  {
    tg::Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = tg::tanh(y);
    REQUIRE(tg::live_tape_records() == base + 100000);
  }
  REQUIRE(tg::live_tape_records() == base);
}

TEST_CASE("a deep chain that also reads a leaf at every step", "[engine][deep]") {
  // y_k = c y_{k-1} + x with y_0 = x: dy_n/dx = (c^(n+1) - 1) / (c - 1).
  constexpr int kSteps = 50000;  // two records per step
  constexpr double c = 0.99995;
  const auto base = tg::live_tape_records();
  tg::Tensor x = tg::scalar_tensor(-1.25, tg::DType::f64).set_requires_grad(true);
  {
    tg::Tensor y = x;
    for (int i = 0; i < kSteps; ++i) y = y * c + x;
    REQUIRE(tg::live_tape_records() == base + 2 * kSteps);
    y.backward();
  }
  REQUIRE(tg::live_tape_records() == base);
  REQUIRE(x.grad().item<double>() == Approx((std::pow(c, kSteps + 1) - 1) / (c - 1)).epsilon(1e-9));
}

TEMPLATE_TEST_CASE("building a fresh graph every iteration gives identical gradients",
                   "[engine][reuse]", float, double) {
  const tg::Shape shape{4, 3};
  tg::Tensor x = make<TestType>(random_values(12, 100), shape, true);
  tg::Tensor w = make<TestType>(random_values(6, 101), {2, 3}, true);
  tg::Tensor b = make<TestType>(random_values(2, 102), {2}, true);
  tg::Tensor g = make<TestType>(random_values(8, 103), {4, 2});
  const auto base = tg::live_tape_records();
  std::vector<double> first_x, first_w, first_b, first_functional;
  for (int it = 0; it < 100; ++it) {
    {
      tg::NoGradGuard no_grad;
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
    }
    tg::Tensor y = tg::sigmoid(tg::linear(x, w, b)) * tg::linear(x, w);
    y.backward(g);
    const auto functional = tg::grad({tg::linear(x, w, b)}, {w}, {g})[0].to_vector<double>();
    if (it == 0) {
      first_x = x.grad().to_vector<double>();
      first_w = w.grad().to_vector<double>();
      first_b = b.grad().to_vector<double>();
      first_functional = functional;
      continue;
    }
    INFO("iteration " << it);
    REQUIRE(x.grad().to_vector<double>() == first_x);
    REQUIRE(w.grad().to_vector<double>() == first_w);
    REQUIRE(b.grad().to_vector<double>() == first_b);
    REQUIRE(functional == first_functional);
  }
  REQUIRE(tg::live_tape_records() == base);
  // The bias gradient of sigmoid(linear) * linear is not trivially zero or one.
  REQUIRE(first_b[0] != 0.0);
  REQUIRE(first_b[0] != first_b[1]);
}
