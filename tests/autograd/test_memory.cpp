// Memory: a training loop keeps live_tape_records() flat, a graph lives exactly as long as
// some tensor reaches it, backward without retain_graph frees the saved tensors, and the
// caching allocator merges free blocks and spares a steady loop its page faults.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "autograd/block_cache.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

using tg::testing::random_values;

/// y = 3x. Saves a residual of its own making (held by nothing but the record) and reports
/// the saved handle through `watch`, so a test can see when the record lets go of it.
struct SaveProbe {
  static constexpr std::string_view name = "save_probe";
  std::weak_ptr<tg::detail::TensorImpl>* watch = nullptr;
  tg::TensorMeta infer(std::span<const tg::Tensor> in) const { return in[0].meta(); }
  tg::Tensor forward(tg::OpContext& ctx, std::span<const tg::Tensor> in) {
    ctx.save(tg::full(in[0].shape(), 3.0, in[0].dtype()));
    if (ctx.recording()) *watch = ctx.saved(0).impl();
    return in[0] * 3.0;
  }
  std::vector<tg::Tensor> vjp(tg::OpContext& ctx, const tg::Tensor& grad_out) {
    return {grad_out * ctx.saved(0)};
  }
};

}  // namespace

TEST_CASE("10000 training steps keep live_tape_records flat", "[memory][slow]") {
  // A 3 -> 16 -> 2 MLP with relu, regressed with mse_loss on a fixed batch of 8.
  tg::Tensor x = tg::from_vector(random_values(24, 1), {8, 3});
  tg::Tensor target = tg::from_vector(random_values(16, 2), {8, 2});
  tg::Tensor w1 = tg::from_vector(random_values(48, 3, -0.5, 0.5), {16, 3}).set_requires_grad(true);
  tg::Tensor b1 = tg::from_vector(random_values(16, 4, -0.1, 0.1), {16}).set_requires_grad(true);
  tg::Tensor w2 = tg::from_vector(random_values(32, 5, -0.5, 0.5), {2, 16}).set_requires_grad(true);
  tg::Tensor b2 = tg::zeros({2}).set_requires_grad(true);
  std::vector<tg::Tensor> params{w1, b1, w2, b2};

  const auto base = tg::live_tape_records();
  std::int64_t peak = base;
  int not_flat = 0;     // iterations after which records were not back to base
  int unrecorded = 0;   // iterations whose forward recorded nothing
  double first_loss = 0, last_loss = 0;
  constexpr int kIterations = 10000;
  for (int it = 0; it < kIterations; ++it) {
    {
      tg::Tensor h = tg::relu(tg::linear(x, w1, b1));
      tg::Tensor loss = tg::mse_loss(tg::linear(h, w2, b2), target);
      const auto during = tg::live_tape_records();
      peak = std::max(peak, during);
      if (during == base) ++unrecorded;
      loss.backward();
      if (it == 0) first_loss = loss.item<double>();
      last_loss = loss.item<double>();
      tg::NoGradGuard no_grad;
      for (auto& p : params) {
        p.add_(p.grad(), -0.05);
        p.zero_grad();
      }
    }
    if (tg::live_tape_records() != base) ++not_flat;
  }
  REQUIRE(unrecorded == 0);
  REQUIRE(not_flat == 0);
  REQUIRE(peak > base);
  REQUIRE(peak <= base + 8);  // linear, relu, linear, mse_loss: a few records, not thousands
  REQUIRE(tg::live_tape_records() == base);
  REQUIRE(last_loss < 0.5 * first_loss);  // it did train
  for (const auto& p : params) {
    REQUIRE(p.grad().defined());
    REQUIRE(p.grad().is_leaf());  // a stored gradient holds no graph
    REQUIRE_FALSE(p.grad().requires_grad());
  }
}

TEST_CASE("a graph lives exactly as long as a tensor reaches it", "[memory]") {
  const auto base = tg::live_tape_records();
  tg::Tensor x = tg::from_vector(random_values(6, 10), {2, 3}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor keep_h;
  {
    tg::Tensor h = tg::tanh(x * 2.0);  // 2 records
    tg::Tensor y = tg::sum(h * h);     // 2 more
    REQUIRE(tg::live_tape_records() == base + 4);
    y.backward();
    // Backward frees saved tensors, not the records: y still reaches all of them.
    REQUIRE(tg::live_tape_records() == base + 4);
    keep_h = h;
  }
  // Only the part h reaches survives.
  REQUIRE(tg::live_tape_records() == base + 2);
  keep_h = tg::Tensor();
  REQUIRE(tg::live_tape_records() == base);

  {
    tg::Tensor unused = tg::exp(x) * x;  // never backpropagated
    REQUIRE(tg::live_tape_records() == base + 2);
  }
  REQUIRE(tg::live_tape_records() == base);
  REQUIRE(x.grad().defined());
  REQUIRE(x.grad().is_leaf());
}

TEST_CASE("backward without retain_graph frees the saved tensors", "[memory]") {
  for (tg::DType dt : {tg::DType::f32, tg::DType::f64}) {
    const auto base = tg::live_tape_records();
    std::weak_ptr<tg::detail::TensorImpl> saved;
    tg::Tensor x = tg::from_vector(random_values(6, 20), {3, 2}, dt).set_requires_grad(true);
    const auto gv = random_values(6, 21);
    tg::Tensor g = tg::from_vector(gv, {3, 2}, dt);
    {
      tg::Tensor y = tg::apply(SaveProbe{&saved}, {x});
      REQUIRE(y.grad_fn_name() == "save_probe");
      REQUIRE_FALSE(saved.expired());
      y.backward(g, /*retain_graph=*/true);
      REQUIRE_FALSE(saved.expired());  // retained
      y.backward(g);
      REQUIRE(saved.expired());        // freed by the backward that did not retain
      REQUIRE(tg::live_tape_records() == base + 1);
      REQUIRE_THROWS_AS(y.backward(g), tg::GraphError);
      REQUIRE_THROWS_WITH(y.backward(g), Contains("save_probe") && Contains("retain_graph"));
      const auto xg = x.grad().to_vector<double>();
      for (std::size_t i = 0; i < 6; ++i) REQUIRE(xg[i] == Approx(6 * gv[i]).epsilon(1e-6));
    }
    REQUIRE(tg::live_tape_records() == base);

    // Destroying the output without any backward frees them too.
    {
      tg::Tensor y = tg::apply(SaveProbe{&saved}, {x});
      REQUIRE_FALSE(saved.expired());
    }
    REQUIRE(saved.expired());
    REQUIRE(tg::live_tape_records() == base);
  }
}

TEST_CASE("an unrecorded forward saves nothing", "[memory]") {
  std::weak_ptr<tg::detail::TensorImpl> saved;
  tg::Tensor x = tg::ones({2, 2}, tg::DType::f64);  // does not require grad
  const auto base = tg::live_tape_records();
  tg::Tensor y = tg::apply(SaveProbe{&saved}, {x});
  REQUIRE(saved.expired());
  REQUIRE(y.is_leaf());
  REQUIRE(y.to_vector<double>() == std::vector<double>(4, 3.0));
  REQUIRE(tg::live_tape_records() == base);
}

// The caching allocator (autograd/block_cache.cpp). Under AddressSanitizer every block comes
// from operator new (kBlocksCached is false), so these look at the cache only in other builds.
namespace {
constexpr std::size_t kMiB = std::size_t{1} << 20;

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}
}  // namespace

TEST_CASE("block cache: a freed block merges with its free neighbours and serves a larger request", "[memory]") {
  if (!tapegrad::detail::kBlocksCached) return;
  using tapegrad::detail::block_acquire;
  using tapegrad::detail::block_release;
  // Larger than a segment: the block gets a segment of its own, which nothing else uses.
  std::size_t whole = 300 * kMiB;
  char* const base = static_cast<char*>(block_acquire(whole));
  REQUIRE(whole == 300 * kMiB);
  block_release(base, whole);
  std::size_t first = 260 * kMiB, rest = 40 * kMiB;
  char* const a = static_cast<char*>(block_acquire(first));
  char* const b = static_cast<char*>(block_acquire(rest));
  CHECK(a == base);  // the only free range that large
  CHECK(b == base + first);  // best fit: what was left of it
  a[0] = 1;
  b[rest - 1] = 2;
  block_release(a, first);
  block_release(b, rest);
  std::size_t again = whole;
  char* const c = static_cast<char*>(block_acquire(again));
  CHECK(c == base);  // the two halves merged back
  block_release(c, again);
  tg::empty_cache();  // the wholly free segment is unmapped; a new one serves the next request
  std::size_t after = whole;
  char* const d = static_cast<char*>(block_acquire(after));
  d[after - 1] = 3;
  block_release(d, after);
}

TEST_CASE("block cache: sizes round up to pages, small blocks keep their size", "[memory]") {
  if (!tapegrad::detail::kBlocksCached) return;
  std::size_t big = 100'000, small = 100;
  void* p = tapegrad::detail::block_acquire(big);
  void* q = tapegrad::detail::block_acquire(small);
  CHECK(big == 102'400);
  CHECK(small == 100);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 4096 == 0);
  tapegrad::detail::block_release(p, big);
  tapegrad::detail::block_release(q, small);
  tapegrad::detail::Scratch<float> s;
  float* grown = s.get(1 << 20);  // 4 MiB
  grown[(1 << 20) - 1] = 1.0f;
  CHECK(s.get(1000) == grown);  // a smaller request keeps the block
}

TEST_CASE("block cache: a steady training loop makes no page faults after its first step", "[memory]") {
  if (!tapegrad::detail::kBlocksCached) return;
  // 16 MiB activations and gradients, a workspace-using conv: every step frees and
  // re-allocates the same sizes, which the cache serves from memory already written.
  const tg::Tensor w = tg::randn({16, 16, 3, 3}).set_requires_grad(true);
  const tg::Tensor x = tg::randn({16, 16, 128, 128});
  const auto step = [&] {
    const tg::Tensor y = tg::relu(tg::conv2d(x, w, tg::Tensor(), {.padding = 1}));
    tg::sum(y * y).backward();
  };
  step();
  step();
  const long before = minor_faults();
  for (int i = 0; i < 3; ++i) step();
  CHECK(minor_faults() - before < 64);  // without the cache: about 2700 per step
}
