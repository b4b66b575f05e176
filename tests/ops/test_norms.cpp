// layer_norm, group_norm and batch_norm: the fused ops against the same normalisation written
// with element-wise ops and reductions, on tensors large enough for the parallel paths (and
// the per-thread weight/bias sums of layer_norm), in f32 against f64 (also on large inputs, at
// one thread and two), and their argument errors, each naming the op, the argument and the
// shapes.
#include <omp.h>

#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "ops/detail/norm.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;

namespace {

/// (x - mean)/sqrt(var + eps) over `dims` with ops, the reference for the fused ops.
tg::Tensor composite_normalize(const tg::Tensor& x, const std::vector<std::int64_t>& dims, double eps) {
  const tg::Tensor centered = x - tg::mean(x, dims, true);
  return centered / tg::sqrt(tg::mean(centered * centered, dims, true) + eps);
}

/// fused(inputs) and composite(inputs) agree in value and in the gradient of every input for
/// a random upstream gradient.
void check_matches_composite(const TensorFn& fused, const TensorFn& composite,
                             const std::vector<tg::Tensor>& inputs, std::uint64_t seed) {
  const tg::Tensor got = fused(inputs), want = composite(inputs);
  CHECK_THAT(got, AllClose(want, 1e-10, 1e-10));
  const tg::Tensor c = random_cotangent(got.shape(), tg::DType::f64, seed);
  const auto g_got = tg::grad({got}, inputs, {c});
  const auto g_want = tg::grad({want}, inputs, {c});
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("gradient of input " << i);
    CHECK_THAT(g_got[i], AllClose(g_want[i], 1e-9, 1e-9));
  }
}

}  // namespace

TEST_CASE("layer_norm matches its composite on a large input (parallel rows)", "[ops][norms]") {
  // 96·4·200 = 76,800 elements: above the threshold where rows are split across threads.
  const tg::Tensor x = leaf({96, 4, 200}, 1, -3, 5);
  const tg::Tensor w = leaf({4, 200}, 2, 0.5, 1.5);
  const tg::Tensor b = leaf({4, 200}, 3);
  check_matches_composite(
      [](const auto& in) { return tg::layer_norm(in[0], {4, 200}, in[1], in[2]); },
      [](const auto& in) { return composite_normalize(in[0], {1, 2}, 1e-5) * in[1] + in[2]; },
      {x, w, b}, 4);
  check_matches_composite([](const auto& in) { return tg::layer_norm(in[0], {200}, {}, {}, 0.5); },
                          [](const auto& in) { return composite_normalize(in[0], {2}, 0.5); }, {x}, 5);
}

TEST_CASE("group_norm matches its composite on a large input (parallel groups)", "[ops][norms]") {
  const tg::Tensor x = leaf({8, 6, 40, 40}, 6, -2, 3);
  const tg::Tensor w = leaf({6}, 7, 0.5, 1.5);
  const tg::Tensor b = leaf({6}, 8);
  check_matches_composite(
      [](const auto& in) { return tg::group_norm(in[0], 3, in[1], in[2]); },
      [](const auto& in) {
        const tg::Tensor y = tg::reshape(composite_normalize(tg::reshape(in[0], {8, 3, 3200}), {2}, 1e-5),
                                         {8, 6, 40, 40});
        return y * tg::reshape(in[1], {6, 1, 1}) + tg::reshape(in[2], {6, 1, 1});
      },
      {x, w, b}, 9);
}

TEST_CASE("layer_norm and group_norm: rows whose mean is large against their spread", "[ops][norms]") {
  // mean 1e6, spread 1e-3: E[x²] - E[x]² from 0 would lose all of double's digits (1e12 - 1e12
  // for a variance of 1e-6); from a row's own first value the statistics keep them. The
  // composite's own mean is a sum of 512 values of 1e6: its rounding, up to ~5e-8, is up to
  // 5e-5 of the spread (clang's order of the sum gave 6e-7).
  const tg::Tensor x = tg::randn({6, 512}, tg::DType::f64) * 1e-3 + 1e6;
  const tg::Tensor want = composite_normalize(x, {1}, 1e-12);
  CHECK_THAT(tg::layer_norm(x, {512}, {}, {}, 1e-12), AllClose(want, 1e-4, 1e-4));
  const tg::Tensor grouped = tg::reshape(x, {3, 4, 16, 16});  // 3 images, 2 groups of 2 channels
  const tg::Tensor want_grouped = tg::reshape(composite_normalize(tg::reshape(grouped, {3, 2, 512}), {2}, 1e-12),
                                              {3, 4, 16, 16});
  CHECK_THAT(tg::group_norm(grouped, 2, {}, {}, 1e-12), AllClose(want_grouped, 1e-4, 1e-4));
}

TEST_CASE("batch_norm matches its composite on large [N, C] and [N, C, L] inputs", "[ops][norms]") {
  const tg::Tensor w = leaf({12}, 10, 0.5, 1.5);
  const tg::Tensor b = leaf({12}, 11);
  for (const tg::Shape& shape : {tg::Shape{6000, 12}, tg::Shape{50, 12, 120}}) {
    INFO("input " << tg::to_string(shape));
    const tg::Tensor x = leaf(shape, 12, -2, 4);
    const bool ncl = shape.size() == 3;
    const tg::Shape per_channel = ncl ? tg::Shape{12, 1} : tg::Shape{12};
    const std::vector<std::int64_t> dims = ncl ? std::vector<std::int64_t>{0, 2} : std::vector<std::int64_t>{0};
    check_matches_composite(
        [](const auto& in) { return tg::batch_norm(in[0], {}, {}, in[1], in[2], true); },
        [&](const auto& in) {
          return composite_normalize(in[0], dims, 1e-5) * tg::reshape(in[1], per_channel) +
                 tg::reshape(in[2], per_channel);
        },
        {x, w, b}, 13);
  }
}

TEST_CASE("norms: f32 agrees with f64, forward and gradients", "[ops][norms]") {
  const tg::Tensor x = leaf({3, 4, 5}, 20, -2, 3);
  const tg::Tensor w4 = leaf({4}, 21, 0.5, 1.5), b4 = leaf({4}, 22);
  const tg::Tensor w45 = leaf({4, 5}, 23, 0.5, 1.5), b45 = leaf({4, 5}, 24);
  check_f32_grads_match_f64([](const auto& in) { return tg::layer_norm(in[0], {4, 5}, in[1], in[2]); },
                            {x, w45, b45}, 25, 1e-4, 1e-3);
  check_f32_grads_match_f64([](const auto& in) { return tg::group_norm(in[0], 2, in[1], in[2]); },
                            {x, w4, b4}, 26, 1e-4, 1e-3);
  check_f32_grads_match_f64([](const auto& in) { return tg::batch_norm(in[0], {}, {}, in[1], in[2], true); },
                            {x, w4, b4}, 27, 1e-4, 1e-3);
}

TEST_CASE("norms: f32 kernels on large inputs agree with f64 and across thread counts", "[ops][norms]") {
  // Above the parallel threshold, with runs that are no multiple of the 16 partial sums (the
  // tails), and a mean far from 0: the f32 paths that the small fixtures never reach.
  const tg::Tensor x = leaf({64, 3, 391}, 30, 2, 6);
  const tg::Tensor w391 = leaf({391}, 31, 0.5, 1.5), b391 = leaf({391}, 32);
  const tg::Tensor w3 = leaf({3}, 33, 0.5, 1.5), b3 = leaf({3}, 34);
  const tg::Tensor x4 = leaf({15, 6, 37, 29}, 35, -3, 1);  // (2 threads: 7.5 images each)
  const tg::Tensor w6 = leaf({6}, 36, 0.5, 1.5), b6 = leaf({6}, 37);
  const std::vector<std::pair<TensorFn, std::vector<tg::Tensor>>> cases = {
      {[](const auto& in) { return tg::layer_norm(in[0], {391}, in[1], in[2]); }, {x, w391, b391}},
      {[](const auto& in) { return tg::layer_norm(in[0], {3, 391}); }, {x}},
      {[](const auto& in) { return tg::group_norm(in[0], 3, in[1], in[2]); }, {x4, w6, b6}},
      {[](const auto& in) { return tg::group_norm(in[0], 1); }, {x}},
      {[](const auto& in) { return tg::batch_norm(in[0], {}, {}, in[1], in[2], true); }, {x, w3, b3}},
      {[](const auto& in) { return tg::batch_norm2d(in[0], {}, {}, in[1], in[2], true); }, {x4, w6, b6}},
      {[](const auto& in) {
         const tg::Tensor running_mean = tg::full({6}, 0.5, in[0].dtype()), running_var = tg::full({6}, 2.0, in[0].dtype());
         return tg::batch_norm2d(in[0], running_mean, running_var, in[1], in[2], false);
       },
       {x4, w6, b6}},
  };
  const int threads = omp_get_max_threads();
  for (std::size_t k = 0; k < cases.size(); ++k) {
    INFO("case " << k);
    const auto& [fn, inputs] = cases[k];
    check_f32_grads_match_f64(fn, inputs, 40 + k, 1e-4, 1e-4);
    // One thread and two: the per-thread partial sums change only the order of additions.
    const std::vector<tg::Tensor> in32 = converted_leaves(inputs, tg::DType::f32);
    const tg::Tensor y = fn(in32);
    const tg::Tensor c = random_cotangent(y.shape(), tg::DType::f32, 50 + k);
    omp_set_num_threads(1);
    const tg::Tensor y1 = fn(in32);
    const auto g1 = tg::grad({y1}, in32, {c});
    omp_set_num_threads(2);
    const tg::Tensor y2 = fn(in32);
    const auto g2 = tg::grad({y2}, in32, {c});
    omp_set_num_threads(threads);
    CHECK_THAT(y2.to(tg::DType::f64), AllClose(y1.to(tg::DType::f64), 1e-6, 1e-6));
    for (std::size_t i = 0; i < g1.size(); ++i) {
      INFO("gradient of input " << i);
      CHECK_THAT(g2[i].to(tg::DType::f64), AllClose(g1[i].to(tg::DType::f64), 1e-5, 1e-5));
    }
  }
}

TEST_CASE("norms: outputs written with streaming stores equal those written plainly", "[ops][norms]") {
  // layer_norm's rows, group_norm's samples and batch_norm2d's with running statistics are
  // independent: an output of at least kStreamBytes (streamed) equals its halves computed
  // apart (each below it, stored plainly), forward and grad_x, bit for bit.
  const auto even_above = [](std::int64_t row_size) { return (tg::detail::kStreamBytes / 4 / row_size + 2) / 2 * 2; };
  using Op = std::function<tg::Tensor(const tg::Tensor&)>;
  const auto run = [](const tg::Tensor& x, const tg::Tensor& c, const Op& f) {
    tg::Tensor leaf = x.detach();
    leaf.set_requires_grad(true);
    const tg::Tensor y = f(leaf);
    return std::pair{y, tg::grad({y}, {leaf}, {c})[0]};
  };
  const auto check = [&](const tg::Tensor& x, const Op& f) {
    const tg::Tensor c = random_cotangent(x.shape(), tg::DType::f32, 61);
    const std::int64_t half = x.shape()[0] / 2;
    const auto [y, grad_x] = run(x, c, f);
    const auto [y0, grad_x0] = run(tg::narrow(x, 0, 0, half), tg::narrow(c, 0, 0, half), f);
    const auto [y1, grad_x1] = run(tg::narrow(x, 0, half, half), tg::narrow(c, 0, half, half), f);
    CHECK(y.to_vector<float>() == tg::cat({y0, y1}, 0).to_vector<float>());
    CHECK(grad_x.to_vector<float>() == tg::cat({grad_x0, grad_x1}, 0).to_vector<float>());
  };
  const tg::Tensor w = tg::randn({1000}), b = tg::randn({1000});
  check(tg::randn({even_above(1000), 1000}) * 3 + 1,
        [&](const tg::Tensor& x) { return tg::layer_norm(x, {1000}, w, b); });
  check(tg::randn({even_above(400), 4, 10, 10}) * 3 + 1, [](const tg::Tensor& x) { return tg::group_norm(x, 2); });
  // batch_norm2d in evaluation mode: the running statistics make the samples independent.
  const tg::Tensor mean = tg::randn({4}), var = tg::rand({4}) + 0.5, w4 = tg::randn({4}), b4 = tg::randn({4});
  check(tg::randn({even_above(400), 4, 10, 10}) * 3 + 1,
        [&](const tg::Tensor& x) { return tg::batch_norm2d(x, mean, var, w4, b4, false); });
}

TEST_CASE("layer_norm: argument errors name the op the argument and the shapes", "[ops][norms][errors]") {
  const tg::Tensor x = random_tensor({2, 3, 5}, 1);
  CHECK_THROWS_AS(tg::layer_norm(x, {3, 4}), tg::ShapeError);
  CHECK_THROWS_WITH(tg::layer_norm(x, {3, 4}), Catch::Contains("layer_norm") &&
                                                   Catch::Contains("normalized_shape [3, 4]") &&
                                                   Catch::Contains("[2, 3, 5]") && Catch::Contains("[3, 5]"));
  CHECK_THROWS_WITH(tg::layer_norm(x, {1, 2, 3, 5}), Catch::Contains("layer_norm") &&
                                                         Catch::Contains("fewer dims") &&
                                                         Catch::Contains("[1, 2, 3, 5]"));
  CHECK_THROWS_AS(tg::layer_norm(x, tg::Shape{}), tg::ValueError);
  CHECK_THROWS_AS(tg::layer_norm(x, {5}, random_tensor({3}, 2)), tg::ShapeError);
  CHECK_THROWS_WITH(tg::layer_norm(x, {5}, random_tensor({3}, 2)),
                    Catch::Contains("layer_norm: weight must be [5]") && Catch::Contains("got [3]") &&
                        Catch::Contains("[2, 3, 5]"));
  CHECK_THROWS_WITH(tg::layer_norm(x, {3, 5}, {}, random_tensor({5}, 2)),
                    Catch::Contains("layer_norm: bias must be [3, 5]") && Catch::Contains("got [5]"));
  CHECK_THROWS_AS(tg::layer_norm(x, {5}, random_tensor({5}, 2, -1, 1, tg::DType::f32)), tg::DTypeError);
  CHECK_THROWS_WITH(tg::layer_norm(x, {5}, random_tensor({5}, 2, -1, 1, tg::DType::f32)),
                    Catch::Contains("layer_norm: weight is f32 [5] but input is f64 [2, 3, 5]"));
  CHECK_THROWS_AS(tg::layer_norm(x, {5}, {}, {}, -1.0), tg::ValueError);
  CHECK_THROWS_AS(tg::layer_norm(tg::ones({2, 5}, tg::DType::i64), {5}), tg::DTypeError);
}

TEST_CASE("group_norm: argument errors name the op the argument and the shapes", "[ops][norms][errors]") {
  const tg::Tensor x = random_tensor({2, 6, 3}, 1);
  CHECK_THROWS_AS(tg::group_norm(x, 4), tg::ShapeError);
  CHECK_THROWS_WITH(tg::group_norm(x, 4), Catch::Contains("group_norm") && Catch::Contains("C=6") &&
                                              Catch::Contains("num_groups=4") && Catch::Contains("[2, 6, 3]"));
  CHECK_THROWS_WITH(tg::group_norm(random_tensor({6}, 1), 2),
                    Catch::Contains("group_norm: expects input [N, C, *], got [6]"));
  CHECK_THROWS_AS(tg::group_norm(x, 0), tg::ValueError);
  CHECK_THROWS_WITH(tg::group_norm(x, 3, random_tensor({3}, 2)),
                    Catch::Contains("group_norm: weight must be [6]") && Catch::Contains("got [3]") &&
                        Catch::Contains("[2, 6, 3]"));
  CHECK_THROWS_WITH(tg::group_norm(x, 3, {}, random_tensor({2, 3}, 2)),
                    Catch::Contains("group_norm: bias must be [6]") && Catch::Contains("got [2, 3]"));
  CHECK_THROWS_WITH(tg::group_norm(x, 3, {}, random_tensor({6}, 2, -1, 1, tg::DType::f32)),
                    Catch::Contains("group_norm: bias is f32 [6] but input is f64 [2, 6, 3]"));
}

TEST_CASE("batch_norm: argument errors name the op the argument and the shapes", "[ops][norms][errors]") {
  const tg::Tensor x = random_tensor({4, 3, 5}, 1);
  CHECK_THROWS_AS(tg::batch_norm(random_tensor({2, 3, 4, 5}, 1), {}, {}, {}, {}, true), tg::ShapeError);
  CHECK_THROWS_WITH(tg::batch_norm(random_tensor({2, 3, 4, 5}, 1), {}, {}, {}, {}, true),
                    Catch::Contains("batch_norm: expects input [N, C] or [N, C, L], got [2, 3, 4, 5]"));
  CHECK_THROWS_WITH(tg::batch_norm(random_tensor({3}, 1), {}, {}, {}, {}, true),
                    Catch::Contains("batch_norm") && Catch::Contains("got [3]"));
  CHECK_THROWS_WITH(tg::batch_norm(x, {}, {}, random_tensor({4}, 2), {}, true),
                    Catch::Contains("batch_norm: weight must be [3]") && Catch::Contains("got [4]") &&
                        Catch::Contains("[4, 3, 5]"));
  CHECK_THROWS_WITH(tg::batch_norm(x, tg::zeros({5}, tg::DType::f64), tg::ones({5}, tg::DType::f64)),
                    Catch::Contains("batch_norm: running_mean must be [3]") && Catch::Contains("got [5]"));
  CHECK_THROWS_WITH(tg::batch_norm(x, tg::zeros({3}), tg::ones({3}), {}, {}, true),
                    Catch::Contains("batch_norm: running_mean is f32 [3] but input is f64 [4, 3, 5]"));
  CHECK_THROWS_AS(tg::batch_norm(x, {}, {}), tg::ValueError);  // eval needs running statistics
  CHECK_THROWS_WITH(tg::batch_norm(random_tensor({1, 3}, 1), {}, {}, {}, {}, true),
                    Catch::Contains("batch_norm: training needs more than 1 value per channel") &&
                        Catch::Contains("N·L = 1"));
  CHECK_THROWS_WITH(tg::batch_norm(x, {}, {}, {}, {}, true, 1.5),
                    Catch::Contains("batch_norm: momentum must be in [0, 1]"));
  CHECK_THROWS_AS(tg::batch_norm(x, {}, {}, {}, {}, true, 0.1, std::nan("")), tg::ValueError);
  // batch_norm2d keeps its own name in its errors.
  CHECK_THROWS_WITH(tg::batch_norm2d(x, {}, {}, {}, {}, true),
                    Catch::Contains("batch_norm2d: expects input [N, C, H, W], got [4, 3, 5]"));
}

TEST_CASE("batch_norm: training on [N, C] and [N, C, L] updates the running statistics", "[ops][norms]") {
  // Channel 0 holds {1, 3, 2, 6}: mean 3, biased var 14/4, unbiased 14/3.
  const tg::Tensor x = f64({1, 3, 2, 6}, {4, 1});
  tg::Tensor rm = f64({0.5}, {1}), rv = f64({2.0}, {1});
  const tg::Tensor y = tg::batch_norm(x, rm, rv, {}, {}, true, 0.25, 0.0);
  CHECK_THAT(y, AllClose({-2 / std::sqrt(3.5), 0, -1 / std::sqrt(3.5), 3 / std::sqrt(3.5)}, {4, 1}));
  CHECK_THAT(rm, AllClose({0.75 * 0.5 + 0.25 * 3}, {1}));
  CHECK_THAT(rv, AllClose({0.75 * 2.0 + 0.25 * 14.0 / 3.0}, {1}));
  // The same values as [N=1, C=1, L=4]: the statistics run over N and L.
  tg::Tensor rm3 = f64({0.5}, {1}), rv3 = f64({2.0}, {1});
  const tg::Tensor y3 = tg::batch_norm(tg::reshape(x, {1, 1, 4}), rm3, rv3, {}, {}, true, 0.25, 0.0);
  CHECK_THAT(y3, AllClose(tg::reshape(y, {1, 1, 4}), 1e-15, 1e-15));
  CHECK_THAT(rv3, AllClose(rv, 1e-15, 1e-15));
}
