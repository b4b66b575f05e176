// scaled_dot_product_attention beyond the fixture: shapes that take several query and key
// blocks (the online softmax's rescaling, causal blocks skipped) against the composite built
// from public ops, f32 against f64, the dropout path, and every argument error.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;

namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

tg::Tensor composite(const tg::Tensor& q, const tg::Tensor& k, const tg::Tensor& v, const tg::Tensor& mask,
                     bool causal) {
  tg::Tensor s = tg::matmul(q, tg::transpose(k, -2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.shape().back())));
  const double minus_inf = -std::numeric_limits<double>::infinity();
  if (mask.defined()) s = mask.dtype() == tg::DType::boolean ? tg::masked_fill(s, tg::logical_not(mask), minus_inf) : s + mask;
  if (causal) {
    const std::int64_t L = q.shape()[q.dim() - 2], S = k.shape()[k.dim() - 2];
    const tg::Tensor allowed = tg::gt(tg::tril(tg::ones({L, S}, tg::DType::f64)), 0.5);
    s = tg::masked_fill(s, tg::logical_not(allowed), minus_inf);
  }
  return tg::matmul(tg::softmax(s, -1), v);
}

tg::Tensor leaf(const tg::Shape& shape, tg::DType dtype, double scale = 1.0) {
  return (tg::randn(shape, tg::DType::f64) * scale).to(dtype).set_requires_grad(true);
}

}  // namespace

TEST_CASE("scaled_dot_product_attention over several query and key blocks equals the composite, with its gradients",
          "[ops][attention]") {
  tg::manual_seed(15);
  // L = 150 and S = 600: three query blocks of 64 and three key blocks of 256 (the last ones
  // partial); scores scaled up so that later key blocks raise the running maximum.
  for (const int variant : {0, 1, 2}) {
    const bool causal = variant == 1;
    const tg::Tensor q = leaf({2, 150, 8}, tg::DType::f64, 3.0), k = leaf({2, 600, 8}, tg::DType::f64),
                     v = leaf({2, 600, 5}, tg::DType::f64);
    const tg::Tensor mask = variant == 2 ? leaf({150, 600}, tg::DType::f64) : tg::Tensor();
    const tg::Tensor g = tg::randn({2, 150, 5}, tg::DType::f64);
    const tg::Tensor out = tg::scaled_dot_product_attention(q, k, v, mask, 0.0, causal);
    const tg::Tensor want = composite(q, k, v, mask, causal);
    INFO("variant " << variant);
    tg::testing::check_reference("blocks", "out", out, want, 1e-12, 1e-10);
    std::vector<tg::Tensor> wrt = {q, k, v};
    if (mask.defined()) wrt.push_back(mask);
    const auto got = tg::grad({out}, wrt, {g});
    const auto ref = tg::grad({want}, wrt, {g});
    for (std::size_t i = 0; i < wrt.size(); ++i) {
      tg::testing::check_reference("blocks", fmt::format("grad {}", i), got[i], ref[i], 1e-12, 1e-9);
    }
  }
}

TEST_CASE("scaled_dot_product_attention's backward from kept probabilities equals the composite's",
          "[ops][attention]") {
  // Short rows keep P from the forward (detail::attention_keeps_probs: one block of keys, P no
  // larger than q, k and v); E = 4 at L = S = 64 makes P the larger and recomputes it. Masks
  // with -inf entries and a fully masked row (NaN, as the composite), causal. The reference
  // tests differentiate the recorded VJP; this one the kernels' backward.
  tg::manual_seed(17);
  struct Case {
    std::int64_t L, S, E;
    bool causal;
    int mask;  // 0 none, 1 float [L, S] with -inf entries, 2 bool [L, S] with a fully masked row
  };
  // L = 100: two query blocks, each reading its rows of the kept P.
  for (const Case& c : std::vector<Case>{{64, 64, 32, false, 0}, {64, 64, 32, true, 0}, {48, 64, 32, false, 1},
                                         {64, 40, 16, false, 2}, {100, 40, 32, true, 0}, {100, 40, 32, false, 2},
                                         {64, 64, 4, false, 1}}) {
    INFO("L " << c.L << " S " << c.S << " E " << c.E << " causal " << c.causal << " mask " << c.mask);
    const tg::Tensor q = leaf({2, c.L, c.E}, tg::DType::f64, 2.0), k = leaf({2, c.S, c.E}, tg::DType::f64),
                     v = leaf({2, c.S, c.E}, tg::DType::f64);
    tg::Tensor mask;
    if (c.mask != 0) {
      const tg::Tensor drop = tg::lt(tg::rand({c.L, c.S}, tg::DType::f64), 0.2);
      mask = c.mask == 1 ? tg::masked_fill(tg::randn({c.L, c.S}, tg::DType::f64), drop, -std::numeric_limits<double>::infinity())
                         : tg::logical_not(drop);
      if (c.mask == 2) std::fill_n(mask.data<bool>() + c.S, c.S, false);  // row 1 attends to no key
    }
    const tg::Tensor out = tg::scaled_dot_product_attention(q, k, v, mask, 0.0, c.causal);
    const tg::Tensor want = composite(q, k, v, mask, c.causal);
    tg::testing::check_reference("kept", "out", out, want, 1e-12, 1e-10);
    const tg::Tensor g = tg::randn(out.shape(), tg::DType::f64);
    const auto got = tg::grad({out}, {q, k, v}, {g});
    const auto ref = tg::grad({want}, {q, k, v}, {g});
    for (std::size_t i = 0; i < got.size(); ++i) {
      tg::testing::check_reference("kept", fmt::format("grad {}", i), got[i], ref[i], 1e-12, 1e-9);
    }
  }
}

TEST_CASE("scaled_dot_product_attention_heads equals splitting the heads, the plain op and merging them",
          "[ops][attention]") {
  // The heads read in place (strided rows) against copies made by permute, f64, forward and
  // gradients; sequence first and batch first, masks broadcast over [N, H, L, S], causal, and
  // L = 150 / S = 300 for several query and key blocks. The short cases keep the probabilities
  // for the backward (detail::attention_keeps_probs); L = S = 64 with E = 8 and the long ones
  // recompute them.
  tg::manual_seed(16);
  struct Case {
    std::int64_t L, S, N, H, E, Ev;
    bool batch_first, causal;
    int mask;  // 0 none, 1 float [L, S], 2 bool padding [N, 1, 1, S], 3 float [N, H, L, S]
  };
  const std::vector<Case> cases = {{5, 7, 3, 2, 4, 3, false, false, 0}, {5, 7, 3, 2, 4, 3, true, false, 1},
                                   {6, 4, 2, 3, 2, 2, false, false, 2}, {6, 4, 2, 3, 2, 5, true, true, 0},
                                   {64, 64, 2, 2, 8, 8, false, true, 0}, {64, 64, 2, 2, 32, 32, true, false, 2},
                                   {150, 300, 2, 2, 4, 4, false, false, 3}, {150, 300, 2, 2, 4, 4, true, true, 0}};
  for (const Case& c : cases) {
    INFO("L " << c.L << " S " << c.S << " N " << c.N << " H " << c.H << " batch_first " << c.batch_first
              << " causal " << c.causal << " mask " << c.mask);
    const auto packed = [&](std::int64_t len, std::int64_t e) {
      return leaf(c.batch_first ? tg::Shape{c.N, len, c.H * e} : tg::Shape{len, c.N, c.H * e}, tg::DType::f64);
    };
    const tg::Tensor q = packed(c.L, c.E), k = packed(c.S, c.E), v = packed(c.S, c.Ev);
    tg::Tensor mask;
    if (c.mask == 1) mask = leaf({c.L, c.S}, tg::DType::f64);
    if (c.mask == 2) mask = tg::gt(tg::rand({c.N, 1, 1, c.S}, tg::DType::f64), 0.3);
    if (c.mask == 3) mask = leaf({c.N, c.H, c.L, c.S}, tg::DType::f64);
    const auto split = [&](const tg::Tensor& t) {
      const tg::Tensor r = tg::reshape(t, {t.shape()[0], t.shape()[1], c.H, t.shape()[2] / c.H});
      return c.batch_first ? tg::permute(r, {0, 2, 1, 3}) : tg::permute(r, {1, 2, 0, 3});
    };
    const tg::Tensor attended = tg::scaled_dot_product_attention(split(q), split(k), split(v), mask, 0.0, c.causal);
    const tg::Tensor want = c.batch_first ? tg::reshape(tg::permute(attended, {0, 2, 1, 3}), {c.N, c.L, c.H * c.Ev})
                                          : tg::reshape(tg::permute(attended, {2, 0, 1, 3}), {c.L, c.N, c.H * c.Ev});
    const tg::Tensor out = tg::scaled_dot_product_attention_heads(q, k, v, c.H, c.batch_first, mask, c.causal);
    tg::testing::check_reference("heads", "out", out, want, 1e-12, 1e-12);
    std::vector<tg::Tensor> wrt = {q, k, v};
    if (mask.defined() && mask.dtype() != tg::DType::boolean) wrt.push_back(mask);
    const tg::Tensor g = tg::randn(out.shape(), tg::DType::f64);
    const auto got = tg::grad({out}, wrt, {g});
    const auto ref = tg::grad({want}, wrt, {g});
    for (std::size_t i = 0; i < wrt.size(); ++i) {
      tg::testing::check_reference("heads", fmt::format("grad {}", i), got[i], ref[i], 1e-12, 1e-12);
    }
  }
}

TEST_CASE("scaled_dot_product_attention in f32 agrees with f64 over several blocks", "[ops][attention]") {
  tg::manual_seed(16);
  const tg::Tensor raw_q = tg::randn({3, 100, 16}, tg::DType::f64), raw_k = tg::randn({3, 300, 16}, tg::DType::f64),
                   raw_v = tg::randn({3, 300, 16}, tg::DType::f64);
  const auto as_leaf = [](const tg::Tensor& raw, tg::DType dtype) { return raw.to(dtype).set_requires_grad(true); };
  const tg::Tensor q = as_leaf(raw_q * 1.0, tg::DType::f64), k = as_leaf(raw_k * 1.0, tg::DType::f64),
                   v = as_leaf(raw_v * 1.0, tg::DType::f64);
  const tg::Tensor q32 = as_leaf(raw_q, tg::DType::f32), k32 = as_leaf(raw_k, tg::DType::f32),
                   v32 = as_leaf(raw_v, tg::DType::f32);
  const tg::Tensor out = tg::scaled_dot_product_attention(q, k, v, {}, 0.0, true);
  const tg::Tensor out32 = tg::scaled_dot_product_attention(q32, k32, v32, {}, 0.0, true);
  tg::testing::check_reference("f32", "out", out32.to(tg::DType::f64), out, 1e-5, 1e-4);
  const tg::Tensor g = tg::randn({3, 100, 16}, tg::DType::f64);
  out.backward(g);
  out32.backward(g.to(tg::DType::f32));
  tg::testing::check_reference("f32", "grad q", q32.grad().to(tg::DType::f64), q.grad(), 1e-4, 1e-3);
  tg::testing::check_reference("f32", "grad k", k32.grad().to(tg::DType::f64), k.grad(), 1e-4, 1e-3);
  tg::testing::check_reference("f32", "grad v", v32.grad().to(tg::DType::f64), v.grad(), 1e-4, 1e-3);
}

TEST_CASE("scaled_dot_product_attention with dropout_p > 0 drops probabilities from the global generator",
          "[ops][attention]") {
  const tg::Tensor q = leaf({2, 4, 3}, tg::DType::f64), k = leaf({2, 5, 3}, tg::DType::f64),
                   v = leaf({2, 5, 2}, tg::DType::f64);
  const tg::Tensor plain = tg::scaled_dot_product_attention(q, k, v);
  tg::manual_seed(3);
  const tg::Tensor a = tg::scaled_dot_product_attention(q, k, v, {}, 0.5);
  tg::manual_seed(3);
  const tg::Tensor b = tg::scaled_dot_product_attention(q, k, v, {}, 0.5);
  CHECK(tg::amax(tg::abs(a - b)).item<double>() == 0.0);
  CHECK(tg::amax(tg::abs(a - plain)).item<double>() > 1e-6);
  const tg::Tensor none = tg::scaled_dot_product_attention(q, k, v, {}, 1.0);
  CHECK(tg::amax(tg::abs(none)).item<double>() == 0.0);
  tg::sum(a).backward();
  CHECK(q.grad().defined());
}

TEST_CASE("scaled_dot_product_attention errors name the op, the argument and the shapes", "[ops][attention][errors]") {
  const tg::Tensor q = tg::zeros({2, 3, 4}), k = tg::zeros({2, 5, 4}), v = tg::zeros({2, 5, 6});
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, tg::zeros({2, 5, 3}), v), tg::ShapeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, tg::zeros({2, 5, 3}), v),
                    Contains(kOp) && Contains("[2, 3, 4]") && Contains("[2, 5, 3]") && Contains("embedding"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, tg::zeros({2, 4, 6})), tg::ShapeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, k, tg::zeros({2, 4, 6})),
                    Contains(kOp) && Contains("[2, 5, 4]") && Contains("[2, 4, 6]"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, tg::zeros({3, 5, 4}), tg::zeros({3, 5, 6})), tg::ShapeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, tg::zeros({3, 5, 4}), tg::zeros({3, 5, 6})),
                    Contains(kOp) && Contains("batch dims") && Contains("[3, 5, 4]"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(tg::zeros({4}), k, v), tg::ShapeError);
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 4}, tg::DType::boolean)), tg::ShapeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 4}, tg::DType::boolean)),
                    Contains(kOp) && Contains("attn_mask [3, 4]") && Contains("[2, 3, 5]"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 2, 3, 5})), tg::ShapeError);
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 5}, tg::DType::i64)), tg::DTypeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 5}, tg::DType::i64)),
                    Contains(kOp) && Contains("attn_mask") && Contains("i64"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, tg::zeros({3, 5}, tg::DType::f64)), tg::DTypeError);
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k.to(tg::DType::f64), v), tg::DTypeError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, k.to(tg::DType::f64), v), Contains(kOp) && Contains("f64"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q.to(tg::DType::i64), k, v), tg::DTypeError);
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, tg::ones({3, 5}, tg::DType::boolean), 0.0, true),
                  tg::ValueError);
  CHECK_THROWS_WITH(tg::scaled_dot_product_attention(q, k, v, tg::ones({3, 5}, tg::DType::boolean), 0.0, true),
                    Contains(kOp) && Contains("is_causal"));
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(q, k, v, {}, 1.5), tg::ValueError);
  CHECK_THROWS_AS(tg::scaled_dot_product_attention(tg::Tensor(), k, v), tg::ValueError);
}
