// Tensor basics: factories, the seeded generator, element access and conversions, copies
// and views, dtype conversion (and its gradient), and in-place updates.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size()));
}

}  // namespace

TEST_CASE("from_vector keeps row-major order and converts each input type", "[tensor][factory]") {
  const std::vector<double> values{1.5, -2.25, 3.0, 4.75, -5.5, 6.125};

  SECTION("double input, f64 and f32") {
    tg::Tensor t = tg::from_vector(values, {2, 3}, tg::DType::f64);
    REQUIRE(t.dtype() == tg::DType::f64);
    REQUIRE(t.shape() == tg::Shape{2, 3});
    REQUIRE(t.to_vector<double>() == values);
    REQUIRE(t.at({1, 0}) == 4.75);  // row-major: element [1, 0] is the 4th value
    REQUIRE(t.at({0, 2}) == 3.0);

    tg::Tensor f = tg::from_vector(values, {3, 2});  // f32 is the default
    REQUIRE(f.dtype() == tg::DType::f32);
    REQUIRE(f.shape() == tg::Shape{3, 2});
    REQUIRE(f.at({1, 0}) == 3.0);
    REQUIRE(f.at({2, 1}) == 6.125);
  }

  SECTION("float input keeps float rounding") {
    const std::vector<float> fv{0.1f, -0.2f, 0.3f, 1e-3f};
    tg::Tensor t = tg::from_vector(fv, {4, 1});
    REQUIRE(t.dtype() == tg::DType::f32);
    REQUIRE(t.to_vector<float>() == fv);
    tg::Tensor d = tg::from_vector(fv, {2, 2}, tg::DType::f64);
    REQUIRE(d.dtype() == tg::DType::f64);
    REQUIRE(d.to_vector<double>()[0] == static_cast<double>(0.1f));  // not 0.1
  }

  SECTION("int64 input defaults to i64, converts to floating on request") {
    const std::vector<std::int64_t> iv{-3, 0, 7, 9007199254740993LL};  // 2^53 + 1
    tg::Tensor t = tg::from_vector(iv, {2, 2});
    REQUIRE(t.dtype() == tg::DType::i64);
    REQUIRE(t.to_vector<std::int64_t>() == iv);  // exact, not via double
    REQUIRE(t.at({1, 1}) == 9007199254740992.0);  // at() reads as double
    tg::Tensor f = tg::from_vector(iv, {4}, tg::DType::f32);
    REQUIRE(f.dtype() == tg::DType::f32);
    REQUIRE(f.to_vector<double>()[2] == 7.0);
  }
}

TEST_CASE("zeros, ones, full, scalar_tensor and *_like", "[tensor][factory]") {
  tg::Tensor z = tg::zeros({2, 3, 4}, tg::DType::f64);
  REQUIRE(z.shape() == tg::Shape{2, 3, 4});
  REQUIRE(z.numel() == 24);
  REQUIRE(z.to_vector<double>() == std::vector<double>(24, 0.0));

  tg::Tensor o = tg::ones({3, 2}, tg::DType::i64);
  REQUIRE(o.dtype() == tg::DType::i64);
  REQUIRE(o.to_vector<std::int64_t>() == std::vector<std::int64_t>(6, 1));

  tg::Tensor f = tg::full({4, 1}, -2.5);
  REQUIRE(f.dtype() == tg::DType::f32);
  REQUIRE(f.to_vector<float>() == std::vector<float>(4, -2.5f));

  tg::Tensor s = tg::scalar_tensor(3.25, tg::DType::f64);
  REQUIRE(s.dim() == 0);
  REQUIRE(s.numel() == 1);
  REQUIRE(s.item<double>() == 3.25);

  tg::Tensor zl = tg::zeros_like(f);
  REQUIRE(zl.meta() == f.meta());
  REQUIRE(zl.to_vector<float>() == std::vector<float>(4, 0.0f));
  REQUIRE_FALSE(zl.shares_storage(f));
  tg::Tensor ol = tg::ones_like(z);
  REQUIRE(ol.meta() == z.meta());
  REQUIRE(ol.to_vector<double>() == std::vector<double>(24, 1.0));

  tg::Tensor e = tg::zeros({3, 0, 2});
  REQUIRE(e.numel() == 0);
  REQUIRE(e.to_vector<float>().empty());
}

TEST_CASE("arange: integer, fractional and negative steps, empty ranges", "[tensor][factory]") {
  REQUIRE(tg::arange(5.0, tg::DType::i64).to_vector<std::int64_t>() ==
          std::vector<std::int64_t>{0, 1, 2, 3, 4});
  REQUIRE(tg::arange(2.0, 7.0, 2.0, tg::DType::f64).to_vector<double>() ==
          std::vector<double>{2, 4, 6});

  SECTION("fractional step") {
    tg::Tensor a = tg::arange(1.0, 2.5, 0.5, tg::DType::f64);
    REQUIRE(a.to_vector<double>() == std::vector<double>{1.0, 1.5, 2.0});
    // PyTorch: arange(0, 1, 0.1) has 10 elements, arange(0, 0.3, 0.1) has 3.
    REQUIRE(tg::arange(0.0, 1.0, 0.1, tg::DType::f64).numel() == 10);
    REQUIRE(tg::arange(0.0, 0.3, 0.1, tg::DType::f64).numel() == 3);
    tg::Tensor b = tg::arange(-1.0, 1.0, 0.3, tg::DType::f64);
    REQUIRE(b.numel() == 7);
    REQUIRE(b.at({-1}) == Approx(0.8));
  }

  SECTION("negative step") {
    REQUIRE(tg::arange(5.0, 0.0, -1.5, tg::DType::f64).to_vector<double>() ==
            std::vector<double>{5.0, 3.5, 2.0, 0.5});
  }

  SECTION("empty ranges") {
    for (tg::Tensor t : {tg::arange(3.0, 3.0, 1.0), tg::arange(5.0, 0.0, 1.0),
                         tg::arange(0.0, 5.0, -1.0), tg::arange(0.0, tg::DType::f64)}) {
      REQUIRE(t.shape() == tg::Shape{0});
      REQUIRE(t.numel() == 0);
    }
  }

  REQUIRE_THROWS_AS(tg::arange(0.0, 1.0, 0.0), tg::ValueError);
  REQUIRE_THROWS_WITH(tg::arange(0.0, 1.0, 0.0), Contains("arange"));
}

TEST_CASE("rand and uniform stay in range and fill it", "[tensor][random]") {
  tg::manual_seed(7);
  for (tg::DType dt : {tg::DType::f32, tg::DType::f64}) {
    const auto v = tg::rand({200, 300}, dt).to_vector<double>();
    REQUIRE(v.size() == 60000);
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    REQUIRE(*lo >= 0.0);
    REQUIRE(*hi < 1.0);
    REQUIRE(*lo < 0.001);
    REQUIRE(*hi > 0.999);
    REQUIRE(mean_of(v) == Approx(0.5).margin(0.01));
  }

  const auto u = tg::uniform({100, 1000}, -3.0, 5.0, tg::DType::f64).to_vector<double>();
  const auto [lo, hi] = std::minmax_element(u.begin(), u.end());
  REQUIRE(*lo >= -3.0);
  REQUIRE(*hi < 5.0);
  REQUIRE(*lo < -2.99);
  REQUIRE(*hi > 4.99);
  REQUIRE(mean_of(u) == Approx(1.0).margin(0.05));
  REQUIRE(std_of(u) == Approx(8.0 / std::sqrt(12.0)).margin(0.02));
}

TEST_CASE("rand in f32 never rounds up to 1", "[tensor][random]") {
  // With seed 102 the generator's 275722nd double in [0, 1) is 0.99999997..., which is
  // nearer to 1.0f than to the largest float below 1: converting it naively gives 1.
  tg::manual_seed(102);
  const auto v = tg::rand({300000}).to_vector<float>();
  REQUIRE(*std::max_element(v.begin(), v.end()) < 1.0f);
  REQUIRE(*std::min_element(v.begin(), v.end()) >= 0.0f);
}

TEST_CASE("randn has mean 0 and std 1 over 10^5 samples", "[tensor][random]") {
  tg::manual_seed(11);
  for (tg::DType dt : {tg::DType::f32, tg::DType::f64}) {
    // An odd count exercises the unpaired last Box-Muller draw.
    tg::Tensor t = tg::randn({3, 33333}, dt);
    REQUIRE(t.dtype() == dt);
    const auto v = t.to_vector<double>();
    REQUIRE(std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); }));
    REQUIRE(mean_of(v) == Approx(0.0).margin(0.015));  // standard error ~0.003
    REQUIRE(std_of(v) == Approx(1.0).margin(0.015));
    const auto within_one =
        std::count_if(v.begin(), v.end(), [](double x) { return std::abs(x) < 1.0; });
    REQUIRE(static_cast<double>(within_one) / static_cast<double>(v.size()) ==
            Approx(0.6827).margin(0.01));
    REQUIRE(v.back() != 0.0);
  }
}

TEST_CASE("randint draws every value from low to high - 1 and nothing else", "[tensor][random]") {
  tg::manual_seed(3);
  tg::Tensor t = tg::randint(-2, 5, {700, 10});
  REQUIRE(t.dtype() == tg::DType::i64);
  REQUIRE(t.shape() == tg::Shape{700, 10});
  const auto v = t.to_vector<std::int64_t>();
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  REQUIRE(*lo == -2);
  REQUIRE(*hi == 4);
  std::vector<int> counts(7, 0);
  for (std::int64_t x : v) ++counts[static_cast<std::size_t>(x + 2)];
  for (int c : counts) REQUIRE(c == Approx(1000).margin(150));
  REQUIRE_THROWS_AS(tg::randint(3, 3, {2}), tg::ValueError);
}

TEST_CASE("manual_seed makes every generator reproducible", "[tensor][random]") {
  auto draw = [] {
    std::vector<double> all = tg::randn({5, 7}, tg::DType::f64).to_vector<double>();
    for (double v : tg::rand({9}, tg::DType::f64).to_vector<double>()) all.push_back(v);
    for (double v : tg::randint(0, 1000, {6}).to_vector<double>()) all.push_back(v);
    for (double v : tg::uniform({4}, -2.0, 3.0, tg::DType::f32).to_vector<double>()) all.push_back(v);
    return all;
  };
  tg::manual_seed(1234);
  const auto a = draw();
  tg::manual_seed(1234);
  const auto b = draw();
  tg::manual_seed(1235);
  const auto c = draw();
  REQUIRE(a == b);
  REQUIRE(a != c);
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i) same += a[i] == c[i] ? 1 : 0;
  REQUIRE(same < 5);  // a different seed gives a different stream, not a shifted copy
  // Without reseeding, the stream continues instead of restarting.
  REQUIRE(draw() != c);
}

TEST_CASE("to_vector and item convert from every dtype", "[tensor][access]") {
  tg::Tensor d = tg::from_vector(std::vector<double>{1.75, -2.5, 3.25}, {3}, tg::DType::f64);
  REQUIRE(d.to_vector<float>() == std::vector<float>{1.75f, -2.5f, 3.25f});
  REQUIRE(d.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, -2, 3});  // truncation
  REQUIRE(d.to_vector<int>() == std::vector<int>{1, -2, 3});

  tg::Tensor i = tg::from_vector(std::vector<std::int64_t>{4, -9}, {2, 1});
  REQUIRE(i.to_vector<double>() == std::vector<double>{4.0, -9.0});
  REQUIRE(i.to_vector<float>() == std::vector<float>{4.0f, -9.0f});

  REQUIRE(tg::scalar_tensor(-6.5, tg::DType::f64).item<double>() == -6.5);
  REQUIRE(tg::scalar_tensor(-6.5, tg::DType::f64).item<float>() == -6.5f);
  REQUIRE(tg::scalar_tensor(-6.5, tg::DType::f64).item<std::int64_t>() == -6);
  REQUIRE(tg::full({1, 1, 1}, 2.0, tg::DType::i64).item<int>() == 2);
  REQUIRE_THROWS_AS(d.item<double>(), tg::ShapeError);
  REQUIRE_THROWS_WITH(d.item<double>(), Contains("item") && Contains("[3]"));
}

TEST_CASE("at() takes one index per dim, negative from the end", "[tensor][access]") {
  std::vector<double> v(24);
  std::iota(v.begin(), v.end(), 0.0);
  tg::Tensor t = tg::from_vector(v, {2, 3, 4}, tg::DType::f64);
  REQUIRE(t.at({1, 2, 3}) == 23);
  REQUIRE(t.at({-1, -1, -1}) == 23);
  REQUIRE(t.at({0, -3, -4}) == 0);
  REQUIRE(t.at({1, 0, 2}) == 14);
  REQUIRE(t.at({-2, 1, -1}) == 7);
  REQUIRE_THROWS_AS(t.at({2, 0, 0}), tg::ValueError);
  REQUIRE_THROWS_AS(t.at({0, -4, 0}), tg::ValueError);
  REQUIRE_THROWS_WITH(t.at({0, 0, 4}), Contains("at") && Contains("[2, 3, 4]"));
  REQUIRE_THROWS_AS(t.at({0, 0}), tg::ShapeError);
}

TEST_CASE("data<T>() checks the dtype and writes through", "[tensor][access]") {
  tg::Tensor t = tg::zeros({2, 3}, tg::DType::f64);
  REQUIRE_THROWS_AS(t.data<float>(), tg::DTypeError);
  REQUIRE_THROWS_WITH(t.data<float>(), Contains("f32") && Contains("f64"));
  REQUIRE_THROWS_AS(t.data<std::int64_t>(), tg::DTypeError);
  const tg::Tensor& ct = t;
  REQUIRE_THROWS_AS(ct.data<float>(), tg::DTypeError);
  t.data<double>()[4] = 8.5;
  REQUIRE(t.at({1, 1}) == 8.5);
  REQUIRE(ct.data<double>()[4] == 8.5);
}

TEST_CASE("shape, size, numel and dim", "[tensor][access]") {
  tg::Tensor t = tg::zeros({2, 3, 5, 7});
  REQUIRE(t.dim() == 4);
  REQUIRE(t.shape().size() == 4);
  REQUIRE(t.shape()[2] == 5);
  REQUIRE(t.numel() == 210);
  REQUIRE(t.size(0) == 2);
  REQUIRE(t.size(-1) == 7);
  REQUIRE(t.size(-4) == 2);
  REQUIRE(t.size(3) == 7);
  REQUIRE_THROWS_AS(t.size(4), tg::ValueError);
  REQUIRE_THROWS_AS(t.size(-5), tg::ValueError);
  REQUIRE(tg::scalar_tensor(1.0).dim() == 0);
  REQUIRE(tg::scalar_tensor(1.0).numel() == 1);
  REQUIRE_FALSE(tg::Tensor().defined());
}

TEST_CASE("clone copies the data and passes the gradient through", "[tensor][copy]") {
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, tg::DType::f64);
  tg::Tensor c = x.clone();
  REQUIRE_FALSE(c.shares_storage(x));
  REQUIRE(c.to_vector<double>() == x.to_vector<double>());
  c.data<double>()[0] = 100;
  REQUIRE(x.at({0, 0}) == 1);
  REQUIRE(c.is_leaf());  // nothing required grad: not recorded

  x.set_requires_grad(true);
  tg::Tensor y = x.clone();
  REQUIRE(y.grad_fn_name() == "clone");
  REQUIRE_FALSE(y.shares_storage(x));
  const std::vector<double> g{0.5, -1.5, 2.0, 0.25, -3.0, 1.25};
  y.backward(tg::from_vector(g, {2, 3}, tg::DType::f64));
  REQUIRE(x.grad().to_vector<double>() == g);
}

TEST_CASE("detach shares storage and never requires grad", "[tensor][copy]") {
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, tg::DType::f64);
  x.set_requires_grad(true);
  tg::Tensor y = x * 2.0;
  for (const tg::Tensor& src : {x, y}) {
    tg::Tensor d = src.detach();
    REQUIRE(d.shares_storage(src));
    REQUIRE_FALSE(d.requires_grad());
    REQUIRE(d.is_leaf());
    REQUIRE(d.grad_fn_name().empty());
    REQUIRE(d.shape() == src.shape());
  }
  tg::Tensor d = x.detach();
  const auto v0 = x.version();
  d.mul_(3.0);  // allowed in grad mode: d does not require grad
  REQUIRE(x.at({1, 0}) == 9.0);
  REQUIRE(x.version() == v0 + 1);  // the version belongs to the shared storage
  REQUIRE_FALSE((d * 2.0).requires_grad());
}

TEST_CASE("reshape, view and flatten share storage and infer -1", "[tensor][view]") {
  std::vector<double> v(24);
  std::iota(v.begin(), v.end(), 1.0);
  tg::Tensor x = tg::from_vector(v, {2, 3, 4}, tg::DType::f64);

  struct Case {
    tg::Tensor t;
    tg::Shape shape;
  };
  const std::vector<Case> cases{
      {x.reshape({4, -1}), {4, 6}},     {x.reshape({-1}), {24}},
      {x.reshape({2, -1, 3}), {2, 4, 3}}, {x.view({3, 8}), {3, 8}},
      {x.flatten(), {24}},              {x.flatten(1), {2, 12}},
      {x.flatten(0, 1), {6, 4}},        {x.flatten(-2, -1), {2, 12}},
      {tg::reshape(x, {1, 24, 1}), {1, 24, 1}}, {tg::flatten(x, 0, -2), {6, 4}},
  };
  for (const auto& c : cases) {
    INFO("shape " << tg::to_string(c.shape));
    REQUIRE(c.t.shape() == c.shape);
    REQUIRE(c.t.shares_storage(x));
    REQUIRE(c.t.to_vector<double>() == v);
  }
  tg::Tensor r = x.reshape({6, 4});
  r.data<double>()[5] = -1.0;
  REQUIRE(x.at({0, 1, 1}) == -1.0);
  REQUIRE(tg::scalar_tensor(2.0).flatten().shape() == tg::Shape{1});
}

TEST_CASE("reshape is recorded and reshapes the gradient back", "[tensor][view]") {
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, tg::DType::f64);
  x.set_requires_grad(true);
  tg::Tensor y = x.reshape({3, -1});
  REQUIRE(y.grad_fn_name() == "reshape");
  REQUIRE(y.shape() == tg::Shape{3, 2});
  const std::vector<double> g{0.5, -1.0, 2.5, 3.0, -0.75, 1.5};
  y.backward(tg::from_vector(g, {3, 2}, tg::DType::f64));
  REQUIRE(x.grad().shape() == tg::Shape{2, 3});
  REQUIRE(x.grad().to_vector<double>() == g);
}

TEST_CASE("to(dtype) converts values", "[tensor][convert]") {
  tg::Tensor f = tg::from_vector(std::vector<double>{1.5, -2.25, 0.1, 7.9}, {2, 2}, tg::DType::f32);
  tg::Tensor d = f.to(tg::DType::f64);
  REQUIRE(d.dtype() == tg::DType::f64);
  REQUIRE(d.shape() == tg::Shape{2, 2});
  REQUIRE_FALSE(d.shares_storage(f));
  REQUIRE(d.to_vector<double>()[2] == static_cast<double>(0.1f));
  REQUIRE(d.at({0, 1}) == -2.25);

  tg::Tensor i = d.to(tg::DType::i64);
  REQUIRE(i.dtype() == tg::DType::i64);
  REQUIRE(i.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, -2, 0, 7});
  tg::Tensor back = i.to(tg::DType::f32);
  REQUIRE(back.to_vector<float>() == std::vector<float>{1, -2, 0, 7});

  tg::Tensor same = f.to(tg::DType::f32);
  REQUIRE(same.shares_storage(f));
}

TEST_CASE("to(dtype) is differentiable between f32 and f64", "[tensor][convert]") {
  const std::vector<double> xv{0.5, -1.25, 2.0, 3.5, -0.75, 1.0};
  const std::vector<double> gv{1.5, 0.25, -2.0, 0.5, 3.0, -1.0};
  for (auto [from, to] : {std::pair{tg::DType::f32, tg::DType::f64},
                          std::pair{tg::DType::f64, tg::DType::f32}}) {
    tg::Tensor x = tg::from_vector(xv, {3, 2}, from);
    x.set_requires_grad(true);
    tg::Tensor y = x.to(to);
    REQUIRE(y.dtype() == to);
    REQUIRE(y.grad_fn_name() == "to");
    tg::Tensor z = y * y;  // computed in the target dtype
    z.backward(tg::from_vector(gv, {3, 2}, to));
    REQUIRE(x.grad().dtype() == from);
    REQUIRE(x.grad().shape() == tg::Shape{3, 2});
    const auto g = x.grad().to_vector<double>();
    for (std::size_t k = 0; k < xv.size(); ++k) REQUIRE(g[k] == Approx(2 * xv[k] * gv[k]));
  }

  tg::Tensor x = tg::ones({2}, tg::DType::f32).set_requires_grad(true);
  tg::Tensor i = x.to(tg::DType::i64);
  REQUIRE_FALSE(i.requires_grad());  // integer results carry no gradient
}

TEST_CASE("in-place updates change the data and bump version()", "[tensor][inplace]") {
  tg::Tensor t = tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, tg::DType::f64);
  tg::Tensor alias = t.reshape({3, 2});
  const tg::Tensor other =
      tg::from_vector(std::vector<double>{10, 20, 30, 40, 50, 60}, {2, 3}, tg::DType::f64);
  std::uint64_t v = t.version();

  t.add_(other, 0.5);
  REQUIRE(t.to_vector<double>() == std::vector<double>{6, 12, 18, 24, 30, 36});
  REQUIRE(t.version() == ++v);

  t.add_(tg::scalar_tensor(-1.0, tg::DType::f64), 2.0);  // a one-element operand broadcasts
  REQUIRE(t.to_vector<double>() == std::vector<double>{4, 10, 16, 22, 28, 34});
  REQUIRE(t.version() == ++v);

  t.mul_(0.5);
  REQUIRE(t.to_vector<double>() == std::vector<double>{2, 5, 8, 11, 14, 17});
  REQUIRE(t.version() == ++v);

  t.mul_(other);
  REQUIRE(t.to_vector<double>() == std::vector<double>{20, 100, 240, 440, 700, 1020});
  REQUIRE(t.version() == ++v);

  t.copy_(other);
  REQUIRE(t.to_vector<double>() == other.to_vector<double>());
  REQUIRE_FALSE(t.shares_storage(other));
  REQUIRE(t.version() == ++v);

  t.fill_(-2.5);
  REQUIRE(t.to_vector<double>() == std::vector<double>(6, -2.5));
  REQUIRE(t.version() == ++v);

  t.zero_();
  REQUIRE(t.to_vector<double>() == std::vector<double>(6, 0.0));
  REQUIRE(t.version() == ++v);

  REQUIRE(alias.version() == v);  // a view sees the same storage version
  REQUIRE(other.version() == 0);

  REQUIRE_THROWS_AS(t.add_(tg::zeros({2, 3}, tg::DType::f32)), tg::DTypeError);
  REQUIRE_THROWS_AS(t.add_(tg::zeros({3, 2}, tg::DType::f64)), tg::ShapeError);
  REQUIRE_THROWS_WITH(t.copy_(tg::zeros({3, 2}, tg::DType::f64)),
                      Contains("copy_") && Contains("[3, 2]") && Contains("[2, 3]"));
}

TEST_CASE("in-place updates of i64 tensors never silently truncate the factor", "[tensor][inplace]") {
  tg::Tensor i = tg::from_vector(std::vector<std::int64_t>{3, -4, 10}, {3});
  const tg::Tensor ones = tg::ones({3}, tg::DType::i64);
  i.mul_(2.0);  // an integral factor is exact
  REQUIRE(i.to_vector<std::int64_t>() == std::vector<std::int64_t>{6, -8, 20});
  i.add_(ones, 3.0);
  REQUIRE(i.to_vector<std::int64_t>() == std::vector<std::int64_t>{9, -5, 23});
  // PyTorch refuses a fractional factor on an integer tensor; truncating it to 0 would
  // silently zero the tensor (mul_) or drop the update (add_).
  REQUIRE_THROWS_AS(i.mul_(0.5), tg::Error);
  REQUIRE_THROWS_AS(i.add_(ones, 0.5), tg::Error);
  REQUIRE(i.to_vector<std::int64_t>() == std::vector<std::int64_t>{9, -5, 23});
}

TEST_CASE("in-place on a tensor that requires grad needs a NoGradGuard", "[tensor][inplace]") {
  tg::Tensor w = tg::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, tg::DType::f64);
  w.set_requires_grad(true);
  const tg::Tensor step = tg::full({2, 2}, 0.5, tg::DType::f64);
  const auto v0 = w.version();

  REQUIRE_THROWS_AS(w.add_(step), tg::GraphError);
  REQUIRE_THROWS_WITH(w.add_(step), Contains("add_") && Contains("NoGradGuard"));
  REQUIRE_THROWS_AS(w.mul_(2.0), tg::GraphError);
  REQUIRE_THROWS_AS(w.mul_(step), tg::GraphError);
  REQUIRE_THROWS_AS(w.fill_(0.0), tg::GraphError);
  REQUIRE_THROWS_AS(w.zero_(), tg::GraphError);
  REQUIRE_THROWS_AS(w.copy_(step), tg::GraphError);
  REQUIRE(w.version() == v0);  // nothing was changed
  REQUIRE(w.to_vector<double>() == std::vector<double>{1, 2, 3, 4});

  {
    tg::NoGradGuard no_grad;
    w.add_(step, -2.0);
    w.mul_(3.0);
  }
  REQUIRE(w.to_vector<double>() == std::vector<double>{0, 3, 6, 9});
  REQUIRE(w.version() == v0 + 2);
  REQUIRE(w.requires_grad());
  REQUIRE(w.is_leaf());
}
