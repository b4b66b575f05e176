// matmul (2-D, batched, 1-D operands, batch dims broadcast both ways) and linear (with and
// without bias, 1-D / 2-D / 3-D input). Values and derivatives of every matmul form against
// PyTorch are in test_reduce_loss_reference.cpp (matmul_nd_loss_reference.txt). And the f32
// GEMM where it splits C's columns across threads, against the f64 one.
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ops/kernels/gemm.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::DType;
using tg::Tensor;

namespace {

TensorFn matmul_fn() {
  return [](const std::vector<Tensor>& in) { return tg::matmul(in[0], in[1]); };
}

TensorFn linear_fn() {
  return [](const std::vector<Tensor>& in) {
    return in.size() > 2 ? tg::linear(in[0], in[1], in[2]) : tg::linear(in[0], in[1]);
  };
}

}  // namespace

TEST_CASE("matmul: forward", "[ops][matmul]") {
  SECTION("[2, 3]·[3, 2]") {
    const Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
    const Tensor b = f64({7, 8, 9, 10, 11, 12}, {3, 2});
    CHECK_THAT(tg::matmul(a, b), AllClose({58, 64, 139, 154}, {2, 2}));
    CHECK_THAT(tg::matmul(b, a), AllClose({39, 54, 69, 49, 68, 87, 59, 82, 105}, {3, 3}));
  }
  SECTION("[1, 3]·[3, 4] and [4, 1]·[1, 2]") {
    const Tensor row = f64({1, -1, 2}, {1, 3});
    const Tensor m = f64({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4});
    CHECK_THAT(tg::matmul(row, m), AllClose({14, 16, 18, 20}, {1, 4}));
    CHECK_THAT(tg::matmul(f64({1, 2, 3, 4}, {4, 1}), f64({10, -1}, {1, 2})),
               AllClose({10, -1, 20, -2, 30, -3, 40, -4}, {4, 2}));
  }
  SECTION("batched [2, 2, 3]·[2, 3, 1]") {
    const Tensor a = f64({1, 2, 3, 4, 5, 6, 1, 0, -1, 2, 2, 2}, {2, 2, 3});
    const Tensor b = f64({1, 1, 1, 3, 2, 1}, {2, 3, 1});
    CHECK_THAT(tg::matmul(a, b), AllClose({6, 15, 2, 12}, {2, 2, 1}));
  }
  SECTION("[2, 2, 3]·[3, 2]: the 2-D operand is shared by the batch") {
    const Tensor a = f64({1, 2, 3, 4, 5, 6, 1, 0, -1, 2, 2, 2}, {2, 2, 3});
    const Tensor b = f64({1, 0, 0, 1, 1, 1}, {3, 2});
    CHECK_THAT(tg::matmul(a, b), AllClose({4, 5, 10, 11, 0, -1, 4, 4}, {2, 2, 2}));
  }
  SECTION("1-D operands: dot, matrix·vector, vector·batch") {
    const Tensor v = f64({1, -1, 2}, {3});
    const Tensor m = f64({1, 2, 3, 4, 5, 6}, {2, 3});
    const Tensor r = tg::matmul(v, f64({2, 0, 1}, {3}));
    CHECK(r.shape() == tg::Shape{});
    CHECK_THAT(r, AllClose({4}, {}));
    CHECK_THAT(tg::matmul(m, v), AllClose({5, 11}, {2}));
    CHECK_THAT(tg::matmul(f64({1, -1}, {2}), m), AllClose({-3, -3, -3}, {3}));
    // [3]·[2, 3, 1]: the vector times each matrix of the batch, the 1 of the vector dropped.
    CHECK_THAT(tg::matmul(v, f64({1, 0, 0, 0, 1, 1}, {2, 3, 1})), AllClose({1, 1}, {2, 1}));
  }
  SECTION("batch dims broadcast: [2, 1, 1, 2]·[3, 2, 1] -> [2, 3, 1, 1]") {
    const Tensor a = f64({1, 2, 3, 4}, {2, 1, 1, 2});
    const Tensor b = f64({1, 0, 0, 1, 1, 1}, {3, 2, 1});
    CHECK_THAT(tg::matmul(a, b), AllClose({1, 2, 3, 3, 4, 7}, {2, 3, 1, 1}));
  }
  SECTION("empty inner dim gives zeros") {
    const Tensor r = tg::matmul(tg::zeros({2, 0}, DType::f64), tg::zeros({0, 3}, DType::f64));
    CHECK_THAT(r, AllClose({0, 0, 0, 0, 0, 0}, {2, 3}));
  }
}

TEST_CASE("matmul: exact gradient of a shared right operand sums over the batch",
          "[ops][matmul][vjp]") {
  const Tensor a = f64({1, 2, 3, 4, 5, 6, 1, 0, -1, 2, 2, 2}, {2, 2, 3});
  const Tensor b = f64({1, 0, 0, 1, 1, 1}, {3, 2}).set_requires_grad(true);
  const Tensor c = f64({1, 0, 0, 1, 2, 0, 0, -1}, {2, 2, 2});
  // grad_B = Σ_b A[b]ᵀ·C[b] = [[1, 4], [2, 5], [3, 6]] + [[2, -2], [0, -2], [-2, -2]].
  CHECK_THAT(tg::grad({tg::matmul(a, b)}, {b}, {c})[0], AllClose({3, 2, 2, 3, 1, 4}, {3, 2}));
}

TEST_CASE("matmul: a broadcast operand's gradient sums over the batch entries it served",
          "[ops][matmul][vjp]") {
  // a [2, 1, 1, 2] serves the 3 matrices of b [3, 2, 1]: grad_a[i] = Σ_j c[i, j]·b[j]ᵀ.
  const Tensor a = f64({1, 2, 3, 4}, {2, 1, 1, 2}).set_requires_grad(true);
  const Tensor b = f64({1, 0, 0, 1, 1, 1}, {3, 2, 1}).set_requires_grad(true);
  const Tensor c = f64({1, 2, 3, -1, 0, 2}, {2, 3, 1, 1});
  const auto g = tg::grad({tg::matmul(a, b)}, {a, b}, {c});
  CHECK_THAT(g[0], AllClose({4, 5, 1, 2}, {2, 1, 1, 2}));
  // grad_b[j] = Σ_i a[i]ᵀ·c[i, j]
  CHECK_THAT(g[1], AllClose({-2, -2, 2, 4, 9, 14}, {3, 2, 1}));
}

TEST_CASE("matmul: VJP matches finite differences", "[ops][matmul][vjp]") {
  struct Case {
    tg::Shape a, b;
  };
  std::uint64_t seed = 5000;
  for (const Case& c :
       {Case{{3, 4}, {4, 5}}, Case{{1, 4}, {4, 1}}, Case{{5, 1}, {1, 3}},
        Case{{2, 3, 4}, {2, 4, 2}}, Case{{3, 2, 5}, {5, 4}}, Case{{1, 3, 2}, {2, 3}},
        Case{{4}, {4}}, Case{{3}, {2, 3, 2}}, Case{{2, 2, 3}, {3}}, Case{{2, 3}, {2, 3, 2}},
        Case{{2, 1, 2, 3}, {3, 3, 2}}, Case{{3, 1, 2, 3}, {1, 2, 3, 2}}}) {
    INFO(tg::to_string(c.a) << "·" << tg::to_string(c.b));
    const Tensor a = leaf(c.a, ++seed);
    const Tensor b = leaf(c.b, ++seed);
    check_vjp(matmul_fn(), {a, b}, ++seed);
    // One operand at a time: each saves only what the other's gradient needs.
    check_vjp(matmul_fn(), {a, b.detach()}, ++seed);
    check_vjp(matmul_fn(), {a.detach(), b}, ++seed);
  }
}

TEST_CASE("matmul: f32 (the f32 GEMM) agrees with f64, forward and gradients",
          "[ops][matmul][f32]") {
  struct Case {
    tg::Shape a, b;
  };
  std::uint64_t seed = 5500;
  for (const Case& c :
       {Case{{3, 5}, {5, 4}}, Case{{7, 1}, {1, 6}}, Case{{1, 9}, {9, 1}}, Case{{17, 33}, {33, 9}},
        Case{{3, 4, 6}, {3, 6, 5}}, Case{{4, 3, 6}, {6, 2}}, Case{{6}, {6}}, Case{{5}, {3, 5, 4}},
        Case{{2, 3, 4, 5}, {2, 3, 5, 4}}, Case{{2, 1, 3, 4}, {5, 4, 6}}, Case{{7, 5}, {2, 5, 3}}}) {
    INFO(tg::to_string(c.a) << "·" << tg::to_string(c.b));
    const std::vector<Tensor> in = {leaf(c.a, ++seed), leaf(c.b, ++seed)};
    check_f32_matches_f64(matmul_fn(), in);
    check_f32_grads_match_f64(matmul_fn(), in, ++seed);
  }
}

TEST_CASE("matmul: errors", "[ops][matmul][errors]") {
  const Tensor a = tg::zeros({2, 3}, DType::f64);
  SECTION("inner sizes differ, the dims named") {
    const Tensor b = tg::zeros({4, 5}, DType::f64);
    REQUIRE_THROWS_MATCHES(tg::matmul(a, b), tg::ShapeError, Catch::Matchers::Message(
        "matmul: inner sizes differ: [2, 3]·[4, 5] (dim 1 of the first is 3, dim 0 of the second is 4)"));
    REQUIRE_THROWS_MATCHES(tg::matmul(tg::zeros({5}, DType::f64), tg::zeros({2, 4, 3}, DType::f64)),
                           tg::ShapeError, Catch::Matchers::Message(
        "matmul: inner sizes differ: [5]·[2, 4, 3] (dim 0 of the first is 5, dim 1 of the second is 4)"));
    REQUIRE_THROWS_AS(tg::matmul(tg::zeros({3}, DType::f64), tg::zeros({2}, DType::f64)), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::matmul(a, b), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::matmul(a, b), Catch::Contains("matmul") && Catch::Contains("[2, 3]") &&
                                              Catch::Contains("[4, 5]"));
    REQUIRE_THROWS_AS(
        tg::matmul(tg::zeros({2, 2, 3}, DType::f64), tg::zeros({2, 2, 3}, DType::f64)),
        tg::ShapeError);
    REQUIRE_THROWS_AS(tg::matmul(tg::zeros({2, 2, 3}, DType::f64), b), tg::ShapeError);
  }
  SECTION("batch dims that do not broadcast") {
    REQUIRE_THROWS_MATCHES(
        tg::matmul(tg::zeros({2, 1, 3, 4}, DType::f64), tg::zeros({3, 5, 4, 2}, DType::f64)),
        tg::ShapeError, Catch::Matchers::Message(
            "matmul: batch dims of [2, 1, 3, 4] and [3, 5, 4, 2] do not broadcast: dim 0 of the first "
            "is 2, dim 0 of the second is 3 (each pair must be equal or 1)"));
    // Aligned from the right: dim 1 of a rank-4 operand against dim 0 of a rank-3 one.
    REQUIRE_THROWS_WITH(
        tg::matmul(tg::zeros({1, 2, 3, 4}, DType::f64), tg::zeros({3, 4, 2}, DType::f64)),
        Catch::Contains("dim 1 of the first is 2, dim 0 of the second is 3"));
    REQUIRE_THROWS_AS(
        tg::matmul(tg::zeros({2, 2, 3}, DType::f64), tg::zeros({3, 3, 1}, DType::f64)),
        tg::ShapeError);
    REQUIRE_THROWS_WITH(
        tg::matmul(tg::zeros({2, 2, 3}, DType::f64), tg::zeros({3, 3, 1}, DType::f64)),
        Catch::Contains("[2, 2, 3]") && Catch::Contains("[3, 3, 1]"));
  }
  SECTION("0-dim operands (PyTorch: an error too)") {
    const Tensor scalar = tg::zeros({}, DType::f64);
    REQUIRE_THROWS_MATCHES(tg::matmul(scalar, tg::zeros({3}, DType::f64)), tg::ShapeError,
                           Catch::Matchers::Message("matmul: both operands need at least 1 dim, got [] "
                                                    "and [3] (scale by a 0-dim tensor with *)"));
    REQUIRE_THROWS_AS(tg::matmul(a, scalar), tg::ShapeError);
    REQUIRE_THROWS_AS(tg::matmul(scalar, scalar), tg::ShapeError);
  }
  SECTION("dtypes") {
    REQUIRE_THROWS_AS(tg::matmul(a, tg::zeros({3, 2}, DType::f32)), tg::DTypeError);
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4}, {2, 2});
    REQUIRE_THROWS_AS(tg::matmul(n, n), tg::DTypeError);
  }
}

// ---- linear ------------------------------------------------------------------------------------

TEST_CASE("linear: forward is x·Wᵀ + b", "[ops][linear]") {
  const Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = f64({1, 0, -1, 2, 1, 0}, {2, 3});
  const Tensor b = f64({10, 20}, {2});
  CHECK_THAT(tg::linear(x, w, b), AllClose({8, 24, 8, 33}, {2, 2}));
  CHECK_THAT(tg::linear(x, w), AllClose({-2, 4, -2, 13}, {2, 2}));
  CHECK_THAT(tg::linear(x, w, Tensor()), AllClose({-2, 4, -2, 13}, {2, 2}));
  SECTION("out != in features") {
    const Tensor w3 = f64({1, 1, 1, 0, 0, 1, 1, 0, 0, 2, 2, 2}, {4, 3});
    CHECK_THAT(tg::linear(x, w3, f64({0, 0, 0, 1}, {4})),
               AllClose({6, 3, 1, 13, 15, 6, 4, 31}, {2, 4}));
  }
  SECTION("3-D input applies to the last dim") {
    const Tensor x3 = f64({1, 2, 3, 4, 5, 6, -1, -2, -3, 0, 1, 0}, {2, 2, 3});
    const Tensor y = tg::linear(x3, w, b);
    CHECK(y.shape() == tg::Shape{2, 2, 2});
    CHECK_THAT(y, AllClose({8, 24, 8, 33, 12, 16, 10, 21}, {2, 2, 2}));
  }
  SECTION("1-D input") {
    CHECK_THAT(tg::linear(f64({1, 2, 3}, {3}), w, b), AllClose({8, 24}, {2}));
  }
}

TEST_CASE("linear: VJP matches finite differences", "[ops][linear][vjp]") {
  struct Case {
    tg::Shape x;
    std::int64_t out;
    bool bias;
  };
  std::uint64_t seed = 6000;
  for (const Case& c : {Case{{4, 3}, 5, true}, Case{{4, 3}, 5, false}, Case{{2, 3, 4}, 2, true},
                        Case{{2, 3, 4}, 2, false}, Case{{3}, 4, true}, Case{{1, 6}, 1, true}}) {
    INFO("x " << tg::to_string(c.x) << ", out " << c.out << (c.bias ? ", bias" : ", no bias"));
    const tg::Shape ws{c.out, c.x.back()};
    std::vector<Tensor> in = {leaf(c.x, ++seed), leaf(ws, ++seed)};
    if (c.bias) in.push_back(leaf({c.out}, ++seed));
    check_vjp(linear_fn(), in, ++seed);
    check_f32_matches_f64(linear_fn(), in);
    check_f32_grads_match_f64(linear_fn(), in, ++seed);
    // Each input alone.
    for (std::size_t k = 0; k < in.size(); ++k) {
      INFO("only input " << k << " requires grad");
      std::vector<Tensor> one;
      for (std::size_t j = 0; j < in.size(); ++j) one.push_back(j == k ? in[j] : in[j].detach());
      check_vjp(linear_fn(), one, ++seed);
    }
  }
}

TEST_CASE("linear: errors", "[ops][linear][errors]") {
  const Tensor x = tg::zeros({2, 3}, DType::f64);
  SECTION("feature mismatch names both shapes") {
    const Tensor w = tg::zeros({4, 5}, DType::f64);
    REQUIRE_THROWS_AS(tg::linear(x, w), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::linear(x, w), Catch::Contains("linear") && Catch::Contains("[2, 3]") &&
                                              Catch::Contains("[4, 5]"));
  }
  SECTION("weight that is not 2-D") {
    REQUIRE_THROWS_AS(tg::linear(x, tg::zeros({3}, DType::f64)), tg::ShapeError);
  }
  SECTION("bias of the wrong size or rank") {
    const Tensor w = tg::zeros({4, 3}, DType::f64);
    REQUIRE_THROWS_AS(tg::linear(x, w, tg::zeros({3}, DType::f64)), tg::ShapeError);
    REQUIRE_THROWS_WITH(tg::linear(x, w, tg::zeros({3}, DType::f64)),
                        Catch::Contains("bias") && Catch::Contains("[3]"));
    REQUIRE_THROWS_AS(tg::linear(x, w, tg::zeros({1, 4}, DType::f64)), tg::ShapeError);
  }
  SECTION("dtypes") {
    REQUIRE_THROWS_AS(tg::linear(x, tg::zeros({4, 3}, DType::f32)), tg::DTypeError);
    REQUIRE_THROWS_AS(tg::linear(x, tg::zeros({4, 3}, DType::f64), tg::zeros({4}, DType::f32)),
                      tg::DTypeError);
    const Tensor n = tg::from_vector(std::vector<std::int64_t>{1, 2, 3}, {1, 3});
    REQUIRE_THROWS_AS(tg::linear(n, tg::zeros({4, 3}, DType::f64)), tg::DTypeError);
  }
}

// An empty batch must not write anything: a write into the empty output is a heap overflow
// that only a build with TAPEGRAD_SANITIZE=address reports.
TEST_CASE("matmul: an empty batch gives an empty result", "[ops][matmul][empty]") {
  SECTION("shared right operand; its gradient is zero") {
    const Tensor a = tg::zeros({0, 2, 3}, DType::f64).set_requires_grad(true);
    const Tensor b = leaf({3, 4}, 1);
    const Tensor y = tg::matmul(a, b);
    CHECK(y.shape() == tg::Shape{0, 2, 4});
    const auto g = tg::grad({y}, {a, b}, {tg::zeros({0, 2, 4}, DType::f64)});
    CHECK(g[0].shape() == tg::Shape{0, 2, 3});
    CHECK_THAT(g[1], AllClose(tg::zeros({3, 4}, DType::f64), 0, 0));
  }
  SECTION("batched right operand") {
    const Tensor y = tg::matmul(tg::zeros({0, 2, 3}, DType::f32), tg::zeros({0, 3, 4}, DType::f32));
    CHECK(y.shape() == tg::Shape{0, 2, 4});
  }
}

TEST_CASE("linear: zero input features give the bias", "[ops][linear][empty]") {
  // Something else first occupies (and leaves NaN in) memory the output may reuse.
  { const Tensor poison = tg::full({2, 3}, std::nan(""), DType::f64); }
  const Tensor x = tg::zeros({2, 0}, DType::f64).set_requires_grad(true);
  const Tensor w = tg::zeros({3, 0}, DType::f64).set_requires_grad(true);
  const Tensor b = f64({1, 2, 3}, {3}).set_requires_grad(true);
  CHECK_THAT(tg::linear(x, w, b), AllClose({1, 2, 3, 1, 2, 3}, {2, 3}));
  { const Tensor poison = tg::full({2, 3}, std::nan(""), DType::f64); }
  CHECK_THAT(tg::linear(x, w), AllClose(tg::zeros({2, 3}, DType::f64), 0, 0));
  // grad_b sums the upstream gradient over the 2 rows.
  const Tensor c = f64({0.5, -1, 2, 1.5, 3, -0.25}, {2, 3});
  const auto g = tg::grad({tg::linear(x, w, b)}, {x, w, b}, {c});
  CHECK(g[0].shape() == tg::Shape{2, 0});
  CHECK(g[1].shape() == tg::Shape{3, 0});
  CHECK_THAT(g[2], AllClose({2, 2, 1.75}, {3}));
}

TEST_CASE("gemm: f32 products split by columns across threads match f64", "[ops][matmul]") {
  // 256+ columns take the column split at two threads with few rows, or many rows and a sum
  // of 256+ terms (300 × 700 × 300; × 50 stays with oneDNN's threads); n = 1000 is not a
  // multiple of 16; 17 columns stay on one thread. Row strides wider than the rows.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const bool trans_a : {false, true}) {
    for (const bool trans_b : {false, true}) {
      for (const auto& [m, n, k] : {std::array<std::int64_t, 3>{37, 1000, 50}, {128, 300, 50}, {1, 512, 50},
                                    {64, 17, 50}, {300, 700, 300}, {300, 700, 50}}) {
        const std::int64_t lda = (trans_a ? m : k) + 3, ldb = (trans_b ? k : n) + 5, ldc = n + 7;
        std::vector<float> a((trans_a ? k : m) * lda), b((trans_b ? n : k) * ldb), c(m * ldc);
        for (float& v : a) v = u(rng);
        for (float& v : b) v = u(rng);
        for (float& v : c) v = u(rng);
        std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end()), cd(c.begin(), c.end());
        tg::detail::gemm(trans_a, trans_b, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 1.0f, c.data(), ldc);
        tg::detail::gemm(trans_a, trans_b, m, n, k, 0.5, ad.data(), lda, bd.data(), ldb, 1.0, cd.data(), ldc);
        double worst = 0;
        for (std::size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::fabs(double(c[i]) - cd[i]));
        INFO("trans_a " << trans_a << " trans_b " << trans_b << " m " << m << " n " << n << " k " << k);
        CHECK(worst < 2e-7 * double(k));  // (1e-5 at k = 50)
      }
    }
  }
}
