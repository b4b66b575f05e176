// scaled_dot_product_attention beyond the fixture: shapes that take several query and key
// blocks (the online softmax's rescaling, causal blocks skipped) against the composite built
// from public ops, f32 against f64, the dropout path, and every argument error.
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
