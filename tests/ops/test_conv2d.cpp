// conv2d: hand-computed values, gradients against finite differences over the geometries
// of the conv/pool issue, stride remainders, padding modes, the threaded paths, the Winograd
// path against f64, and errors.
#include <catch2/catch.hpp>
#include <omp.h>
#include <tapegrad/tapegrad.hpp>

#include "ops/kernels/conv_plan.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using tg::testing::AllClose;
using tg::testing::check_vjp;
using tg::testing::leaf;
using Catch::Matchers::Contains;

namespace {
tg::Tensor conv_fn_out(const std::vector<tg::Tensor>& in, const tg::Conv2dOptions& opt) {
  return tg::conv2d(in[0], in[1], in.size() > 2 ? in[2] : tg::Tensor(), opt);
}

/// A named conv2d geometry: input and weight shapes and the options.
struct Case {
  const char* name;
  tg::Shape x, w;
  tg::Conv2dOptions opt;
};
}  // namespace

TEST_CASE("conv2d forward matches a hand computation (cross-correlation, not flipped)", "[conv]") {
  // x = 1..9 on a 3x3 plane, w = [[1, 2], [3, 4]], no padding: out[p,q] = Σ x[p+i,q+j] w[i,j].
  const tg::Tensor x = tg::testing::f64({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  const tg::Tensor w = tg::testing::f64({1, 2, 3, 4}, {1, 1, 2, 2});
  const tg::Tensor b = tg::testing::f64({0.5}, {1});
  CHECK_THAT(tg::conv2d(x, w, b), AllClose({37.5, 47.5, 67.5, 77.5}, {1, 1, 2, 2}));
  // stride 2 and padding 1: windows start at (-1,-1), (-1,1), (1,-1), (1,1), e.g.
  // out[0,1] = x[0,1]*w[1,0] + x[0,2]*w[1,1] = 2*3 + 3*4 = 18.
  CHECK_THAT(tg::conv2d(x, w, tg::Tensor(), {.stride = {2, 2}, .padding = {1, 1}}),
             AllClose({4, 18, 36, 77}, {1, 1, 2, 2}));
}

TEST_CASE("conv2d VJPs match finite differences over the issue's geometries", "[conv][gradcheck]") {
  struct Case {
    const char* name;
    tg::Shape x, w;
    bool bias;
    tg::Conv2dOptions opt;
  };
  const Case cases[] = {
      {"non-square kernel and input, stride/dilation per axis", {2, 3, 7, 6}, {4, 3, 2, 3}, true,
       {.stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}}},
      {"groups 2", {1, 4, 5, 6}, {6, 2, 3, 2}, true, {.padding = {0, 1}, .groups = 2}},
      {"groups 3 no bias", {2, 6, 5, 5}, {3, 2, 3, 3}, false, {.stride = {2, 2}, .groups = 3}},
      {"depthwise", {2, 4, 6, 5}, {4, 1, 3, 3}, true, {.padding = {1, 1}, .groups = 4}},
      {"depthwise multiplier 2, stride 2", {1, 2, 7, 6}, {4, 1, 3, 2}, true, {.stride = {2, 2}, .padding = {2, 1}, .groups = 2}},
      {"padding 2 dilation 2", {1, 2, 6, 7}, {2, 2, 3, 3}, true, {.padding = {2, 2}, .dilation = {2, 2}}},
      {"input exactly the receptive field", {2, 2, 4, 3}, {3, 2, 4, 3}, true, {}},
      {"H of 1", {2, 3, 1, 6}, {2, 3, 1, 3}, true, {.padding = {0, 1}}},
      {"W of 1", {2, 2, 5, 1}, {2, 2, 2, 1}, true, {.stride = {2, 1}}},
      {"1x1 pointwise", {2, 3, 4, 5}, {2, 3, 1, 1}, true, {}},
      {"1x1 stride 2 (not the pointwise path)", {2, 3, 5, 5}, {2, 3, 1, 1}, true, {.stride = {2, 2}}},
      {"same, even kernel", {1, 2, 5, 6}, {3, 2, 2, 4}, true, {.padding_mode = tg::ConvPadding::same}},
      // ≥ 16 outputs per group and more unfolded rows: the weight gradient is summed transposed
      {"16 outputs, stride 2", {2, 3, 6, 7}, {16, 3, 3, 2}, true, {.stride = {2, 1}, .padding = {1, 0}}},
      {"groups 2 of 17 outputs", {2, 4, 5, 5}, {34, 2, 3, 3}, false, {.padding = {1, 1}, .groups = 2}},
      // f32: the direct kernels (8-16 outputs over 4+ inputs), and the direct weight gradient alone
      {"10 outputs over 4 inputs, 5x5", {2, 4, 6, 7}, {10, 4, 5, 5}, true, {.padding = {2, 1}}},
      {"20 outputs over 4 inputs", {2, 4, 5, 6}, {20, 4, 3, 3}, true, {.stride = {2, 1}, .padding = {1, 1}}},
  };
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    SECTION(c.name) {
      std::vector<tg::Tensor> in{leaf(c.x, seed++), leaf(c.w, seed++)};
      if (c.bias) in.push_back(leaf({c.w[0]}, seed++));
      const tg::Conv2dOptions opt = c.opt;
      check_vjp([opt](const auto& v) { return conv_fn_out(v, opt); }, in, seed++);
      tg::testing::check_f32_grads_match_f64([opt](const auto& v) { return conv_fn_out(v, opt); },
                                             in, seed++);
    }
  }
}

TEST_CASE("conv2d: input elements no window reads get a gradient of exactly 0", "[conv]") {
  // H = W = 7, kernel 2, stride 3: rows/cols 2 and 5 are skipped, and row/col 6 too.
  tg::Tensor x = leaf({1, 2, 7, 7}, 11);
  tg::Tensor w = leaf({3, 2, 2, 2}, 12);
  tg::Tensor y = tg::conv2d(x, w, tg::Tensor(), {.stride = {3, 3}});
  REQUIRE(y.shape() == tg::Shape{1, 3, 2, 2});
  y.backward(tg::testing::random_cotangent(y.shape(), tg::DType::f64, 13));
  const tg::Tensor g = x.grad();
  for (std::int64_t c = 0; c < 2; ++c) {
    for (std::int64_t i = 0; i < 7; ++i) {
      for (std::int64_t j = 0; j < 7; ++j) {
        const bool read = (i % 3 != 2 && i < 5) && (j % 3 != 2 && j < 5);
        INFO("c=" << c << " h=" << i << " w=" << j);
        if (read) {
          CHECK(g.at({0, c, i, j}) != 0.0);
        } else {
          CHECK(g.at({0, c, i, j}) == 0.0);
        }
      }
    }
  }
}

TEST_CASE("conv2d padding modes follow PyTorch", "[conv]") {
  const tg::Tensor x = tg::testing::random_tensor({1, 2, 6, 7}, 21);
  const tg::Tensor w = tg::testing::random_tensor({3, 2, 2, 4}, 22);
  SECTION("same keeps H x W and puts the odd padding at the bottom/right") {
    const tg::Tensor y = tg::conv2d(x, w, tg::Tensor(), {.padding_mode = tg::ConvPadding::same});
    CHECK(y.shape() == tg::Shape{1, 3, 6, 7});
    // total padding 1 (rows) and 3 (cols): top 0, bottom 1, left 1, right 2. The first
    // output row must equal an explicit pad-0 row computation, i.e. no padding on top.
    const tg::Tensor valid = tg::conv2d(x, w, tg::Tensor(), {.padding = {0, 1}});
    CHECK(y.at({0, 0, 0, 1}) == Approx(valid.at({0, 0, 0, 1})).epsilon(1e-12));
  }
  SECTION("valid is no padding") {
    CHECK_THAT(tg::conv2d(x, w, tg::Tensor(), {.padding_mode = tg::ConvPadding::valid}),
               AllClose(tg::conv2d(x, w)));
  }
  SECTION("same needs stride 1") {
    REQUIRE_THROWS_WITH(tg::conv2d(x, w, tg::Tensor(), {.stride = {2, 1}, .padding_mode = tg::ConvPadding::same}),
                        Contains("conv2d") && Contains("same") && Contains("stride"));
  }
}

TEST_CASE("conv2d batch-parallel paths give the per-image results, deterministically", "[conv][threads]") {
  // Large enough that the batch is split across threads (im2col, pointwise and depthwise).
  struct Case {
    tg::Shape x, w;
    tg::Conv2dOptions opt;
  };
  const Case cases[] = {{{8, 8, 16, 16}, {16, 8, 3, 3}, {.padding = {1, 1}}},
                        {{8, 16, 12, 12}, {8, 16, 1, 1}, {}},
                        {{8, 16, 14, 14}, {16, 1, 3, 3}, {.padding = {1, 1}, .groups = 16}}};
  for (const Case& c : cases) {
    tg::Tensor x = tg::testing::random_tensor(c.x, 31, -1, 1, tg::DType::f32, true);
    tg::Tensor w = tg::testing::random_tensor(c.w, 32, -1, 1, tg::DType::f32, true);
    tg::Tensor b = tg::testing::random_tensor({c.w[0]}, 33, -1, 1, tg::DType::f32, true);
    const tg::Tensor y = tg::conv2d(x, w, b, c.opt);
    const tg::Tensor seed = tg::testing::random_cotangent(y.shape(), tg::DType::f32, 34);
    const auto grads = tg::grad({y}, {x, w, b}, {seed});
    // Image 1 alone gives the same output slice and input-gradient slice.
    tg::Tensor x1 = tg::from_vector(std::vector<float>(x.data<float>() + c.x.numel() / c.x[0],
                                                       x.data<float>() + 2 * c.x.numel() / c.x[0]),
                                    {1, c.x[1], c.x[2], c.x[3]}).set_requires_grad(true);
    const tg::Tensor y1 = tg::conv2d(x1, w, b, c.opt);
    const auto per_image = y.to_vector<float>();
    const auto single = y1.to_vector<float>();
    for (std::size_t i = 0; i < single.size(); ++i) {
      REQUIRE(per_image[single.size() + i] == Approx(single[i]).margin(1e-5));
    }
    // The same inputs and thread count give bitwise the same gradients.
    const auto again = tg::grad({tg::conv2d(x, w, b, c.opt)}, {x, w, b}, {seed});
    for (std::size_t k = 0; k < grads.size(); ++k) CHECK(grads[k].to_vector<float>() == again[k].to_vector<float>());
    // One thread and two agree within f32 accuracy.
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const auto serial = tg::grad({tg::conv2d(x, w, b, c.opt)}, {x, w, b}, {seed});
    omp_set_num_threads(threads);
    for (std::size_t k = 0; k < grads.size(); ++k) {
      CHECK_THAT(serial[k].to(tg::DType::f64), AllClose(grads[k].to(tg::DType::f64), 1e-3, 1e-4));
    }
  }
}

TEST_CASE("conv2d rejects bad input with the op, the contract and the shapes", "[conv][errors]") {
  const tg::Tensor x = tg::zeros({2, 4, 5, 5});
  const tg::Tensor w = tg::zeros({6, 4, 3, 3});
  CHECK_THROWS_AS(tg::conv2d(x, tg::zeros({6, 3, 3, 3})), tg::ShapeError);
  CHECK_THROWS_WITH(tg::conv2d(x, tg::zeros({6, 3, 3, 3})),
                    Contains("conv2d") && Contains("[2, 4, 5, 5]") && Contains("[6, 3, 3, 3]"));
  CHECK_THROWS_WITH(tg::conv2d(x, tg::zeros({6, 4, 3, 3}), tg::Tensor(), {.groups = 3}),
                    Contains("groups=3") && Contains("divide"));
  CHECK_THROWS_WITH(tg::conv2d(x, tg::zeros({6, 2, 3, 3}), tg::Tensor(), {.groups = 0}), Contains("groups must be positive"));
  CHECK_THROWS_AS(tg::conv2d(x, w, tg::Tensor(), {.stride = {0, 1}}), tg::ValueError);
  CHECK_THROWS_WITH(tg::conv2d(x, w, tg::Tensor(), {.stride = {1, -1}}), Contains("stride=-1"));
  CHECK_THROWS_WITH(tg::conv2d(x, w, tg::Tensor(), {.dilation = {0, 1}}), Contains("dilation=0"));
  CHECK_THROWS_WITH(tg::conv2d(x, w, tg::Tensor(), {.padding = {-1, 0}}), Contains("padding must be non-negative"));
  // Kernel larger than the padded input: the arithmetic is shown.
  CHECK_THROWS_AS(tg::conv2d(x, tg::zeros({6, 4, 7, 3})), tg::ShapeError);
  CHECK_THROWS_WITH(tg::conv2d(x, tg::zeros({6, 4, 7, 3})),
                    Contains("output height would be 0") && Contains("H=5") && Contains("kernel=7"));
  CHECK_THROWS_WITH(tg::conv2d(tg::zeros({4, 25}), w), Contains("[4, 25]"));
  CHECK_THROWS_AS(tg::conv2d(x, w.to(tg::DType::f64)), tg::DTypeError);
  CHECK_THROWS_AS(tg::conv2d(tg::zeros({2, 4, 5, 5}, tg::DType::i64), tg::zeros({6, 4, 3, 3}, tg::DType::i64)), tg::DTypeError);
  CHECK_THROWS_WITH(tg::conv2d(x, w, tg::zeros({5})), Contains("bias must be [6]") && Contains("[5]"));
}

TEST_CASE("conv2d accepts an unbatched C x H x W input", "[conv]") {
  const tg::Tensor x = tg::testing::random_tensor({1, 3, 6, 5}, 41);
  const tg::Tensor w = tg::testing::random_tensor({2, 3, 3, 3}, 42);
  const tg::Tensor y3 = tg::conv2d(x.reshape({3, 6, 5}), w);
  CHECK(y3.shape() == tg::Shape{2, 4, 3});
  CHECK_THAT(y3.reshape({1, 2, 4, 3}), AllClose(tg::conv2d(x, w)));
}

TEST_CASE("conv2d: keeping the unfolded input for the VJP gives the same gradients", "[conv]") {
  // The forward keeps the batch's unfolded input when it is at most 16 MiB: here f32 keeps
  // it (9.4 MB; the weight gradient is then one GEMM over the whole batch) and f64 does not
  // (18.9 MB; unfolded again and summed chunk by chunk), so the two paths are compared.
  const tg::Conv2dOptions opt{.padding = {1, 1}};
  auto fn = [opt](const std::vector<tg::Tensor>& in) { return tg::conv2d(in[0], in[1], in[2], opt); };
  tg::testing::check_f32_grads_match_f64(fn, {leaf({8, 32, 32, 32}, 51), leaf({8, 32, 3, 3}, 52), leaf({8}, 53)}, 54,
                                         1e-3, 1e-3);
}

TEST_CASE("conv2d: small images run one GEMM over the whole batch, equal to image by image", "[conv]") {
  // 4x4 images with 64 channels: a cache-sized chunk would give the GEMMs 96 columns, so the
  // batch of 6 is unfolded whole (forward, and again for the weight gradient);
  // a batch of one takes the chunk path. Output, input gradient, and the per-image weight
  // and bias gradients summed must agree.
  const tg::Conv2dOptions opt{.padding = 1};
  const tg::Tensor x = leaf({6, 64, 4, 4}, 61), w = leaf({32, 64, 3, 3}, 62), b = leaf({32}, 63);
  const tg::Tensor y = tg::conv2d(x, w, b, opt);
  const tg::Tensor seed = tg::testing::random_cotangent(y.shape(), tg::DType::f64, 64);
  const auto grads = tg::grad({y}, {x, w, b}, {seed});
  tg::Tensor grad_w = tg::zeros_like(w), grad_b = tg::zeros_like(b);
  for (std::int64_t i = 0; i < 6; ++i) {
    const tg::Tensor xi = tg::narrow(x, 0, i, 1).detach().set_requires_grad(true);
    const tg::Tensor yi = tg::conv2d(xi, w, b, opt);
    const auto gi = tg::grad({yi}, {xi, w, b}, {tg::narrow(seed, 0, i, 1)});
    CHECK_THAT(tg::narrow(y, 0, i, 1).detach(), AllClose(yi.detach(), 1e-12, 1e-12));
    CHECK_THAT(tg::narrow(grads[0], 0, i, 1), AllClose(gi[0], 1e-12, 1e-12));
    grad_w = grad_w + gi[1];
    grad_b = grad_b + gi[2];
  }
  CHECK_THAT(grads[1], AllClose(grad_w, 1e-12, 1e-12));
  CHECK_THAT(grads[2], AllClose(grad_b, 1e-12, 1e-12));
}

TEST_CASE("conv2d: large images are unfolded a band of output rows at a time, exactly", "[conv]") {
  // One image's unfolded input above 1 MiB is processed in bands of output rows (each band
  // with the padding it sees); compared with a direct loop over the definition.
  struct Case {
    tg::Shape x, w;
    tg::Conv2dOptions opt;
  };
  const Case cases[] = {
      // f64 2 bands (1.45 MB unfolded); f32 none
      {{2, 32, 33, 35}, {5, 32, 3, 3}, {.stride = {2, 1}, .padding = {1, 2}}},
      // f64 4 bands, f32 2 (1.67 MB)
      {{2, 24, 61, 40}, {18, 12, 3, 5}, {.padding = {2, 1}, .dilation = {2, 1}, .groups = 2}},
  };
  for (const Case& c : cases) {
    const tg::Tensor x = tg::testing::random_tensor(c.x, 71, -1, 1, tg::DType::f64, true);
    const tg::Tensor w = tg::testing::random_tensor(c.w, 72, -1, 1, tg::DType::f64, true);
    const tg::Tensor y = tg::conv2d(x, w, tg::Tensor(), c.opt);
    const tg::Tensor seed = tg::testing::random_cotangent(y.shape(), tg::DType::f64, 73);
    const auto grads = tg::grad({y}, {x, w}, {seed});
    // The definition, with the same loops for the three results.
    const std::int64_t N = c.x[0], C = c.x[1], H = c.x[2], W = c.x[3], O = c.w[0], cg = c.w[1];
    const std::int64_t KH = c.w[2], KW = c.w[3], OH = y.shape()[2], OW = y.shape()[3], og = O / c.opt.groups;
    std::vector<double> ref_y(static_cast<std::size_t>(y.numel()), 0.0), ref_gx(static_cast<std::size_t>(x.numel()), 0.0),
        ref_gw(static_cast<std::size_t>(w.numel()), 0.0);
    const double* px = x.data<double>();
    const double* pw = w.data<double>();
    const double* ps = seed.data<double>();
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t o = 0; o < O; ++o)
        for (std::int64_t p = 0; p < OH; ++p)
          for (std::int64_t q = 0; q < OW; ++q)
            for (std::int64_t ci = 0; ci < cg; ++ci)
              for (std::int64_t i = 0; i < KH; ++i)
                for (std::int64_t j = 0; j < KW; ++j) {
                  const std::int64_t ih = p * c.opt.stride[0] - c.opt.padding[0] + i * c.opt.dilation[0];
                  const std::int64_t iw = q * c.opt.stride[1] - c.opt.padding[1] + j * c.opt.dilation[1];
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  const std::int64_t xi = ((n * C + (o / og) * cg + ci) * H + ih) * W + iw;
                  const std::int64_t wi = ((o * cg + ci) * KH + i) * KW + j, yi = ((n * O + o) * OH + p) * OW + q;
                  ref_y[static_cast<std::size_t>(yi)] += px[xi] * pw[wi];
                  ref_gx[static_cast<std::size_t>(xi)] += ps[yi] * pw[wi];
                  ref_gw[static_cast<std::size_t>(wi)] += ps[yi] * px[xi];
                }
    CHECK_THAT(y, AllClose(tg::from_vector(ref_y, y.shape(), tg::DType::f64), 1e-12, 1e-12));
    CHECK_THAT(grads[0], AllClose(tg::from_vector(ref_gx, x.shape(), tg::DType::f64), 1e-12, 1e-12));
    CHECK_THAT(grads[1], AllClose(tg::from_vector(ref_gw, w.shape(), tg::DType::f64), 1e-12, 1e-12));
    // f32: the AVX-512 im2col / col2im, over bands in the second case
    tg::testing::check_f32_grads_match_f64([opt = c.opt](const auto& v) { return tg::conv2d(v[0], v[1], tg::Tensor(), opt); },
                                           {x, w}, 74, 1e-3, 1e-3);
    // f32 with only the weight needing a gradient (a first layer), every image of the batch
    const tg::Tensor x32 = x.detach().to(tg::DType::f32);
    const tg::Tensor w32 = w.detach().to(tg::DType::f32).set_requires_grad(true);
    const auto gw32 = tg::grad({tg::conv2d(x32, w32, tg::Tensor(), c.opt)}, {w32}, {seed.to(tg::DType::f32)});
    CHECK_THAT(gw32[0].to(tg::DType::f64), AllClose(tg::from_vector(ref_gw, w.shape(), tg::DType::f64), 1e-4, 1e-4));
  }
}

TEST_CASE("conv2d: f32 3x3 stride-1 convolutions of 64+ channels, or 24+ with F(4x4) tiles (Winograd), match f64",
          "[conv]") {
  // The forward, the input gradient and the weight gradient run Winograd F(2x2, 3x3), or
  // F(4x4, 3x3) where the batch gives 128 or more 4x4 tiles. The tolerance: the kernel test's
  // rounding bounds, 81·(k + 4)·eps·max|w|·max|x| for k = 65 terms (ten times that for
  // F(4x4)), are 6e-4 (6e-3) here; F(4x4)'s errors measured ~1e-5 of the output's scale.
  const Case cases[] = {
      {"16x16 images, F(4x4) tiles", {8, 64, 16, 16}, {64, 64, 3, 3}, {.padding = {1, 1}}},
      {"4x4 images", {6, 64, 4, 4}, {64, 64, 3, 3}, {.padding = {1, 1}}},
      {"odd 9x7 images, padding 1 then 0", {3, 65, 9, 7}, {64, 65, 3, 3}, {.padding = {1, 0}}},
      {"18x19 images, padding 0", {2, 64, 18, 19}, {70, 64, 3, 3}, {}},
      {"one odd 9x7 image", {1, 64, 9, 7}, {66, 64, 3, 3}, {.padding = {1, 1}}},
      {"24 to 32 channels, F(4x4) tiles", {8, 32, 16, 16}, {24, 32, 3, 3}, {.padding = {1, 1}}},
  };
  std::uint64_t seed = 71;
  for (const Case& c : cases) {
    SECTION(c.name) {
      tapegrad::detail::ConvGeometry g;
      g.batch = c.x[0];
      g.channels = c.x[1];
      g.out_channels = c.w[0];
      g.h = {c.x[2], 3, 1, c.opt.padding[0], c.opt.padding[0], 1, c.x[2] + 2 * c.opt.padding[0] - 2};
      g.w = {c.x[3], 3, 1, c.opt.padding[1], c.opt.padding[1], 1, c.x[3] + 2 * c.opt.padding[1] - 2};
      const tapegrad::detail::ConvPlan plan(g, sizeof(float));
      REQUIRE(plan.forward == tapegrad::detail::ConvPath::winograd);
      REQUIRE(plan.input_grad == tapegrad::detail::ConvPath::winograd);
      REQUIRE(plan.weight_grad == tapegrad::detail::ConvPath::winograd);
      CHECK(plan.winograd_tile == (g.batch * g.plane_out() >= 128 * 16 ? tapegrad::detail::WinogradTile::f4
                                                                        : tapegrad::detail::WinogradTile::f2));
      CHECK_FALSE(plan.whole_batch);
      CHECK_FALSE(plan.keeps_unfolded);
      const std::vector<tg::Tensor> in{leaf(c.x, seed), leaf(c.w, seed + 1), leaf({c.w[0]}, seed + 2)};
      seed += 4;
      const tg::Conv2dOptions opt = c.opt;
      const auto fn = [opt](const auto& v) { return conv_fn_out(v, opt); };
      tg::testing::check_f32_matches_f64(fn, in, 1e-3, 1e-3);
      tg::testing::check_f32_grads_match_f64(fn, in, seed - 1, 1e-3, 1e-3);
    }
  }
}

TEST_CASE("conv2d: Winograd below 64 channels only where the batch gives F(4x4) tiles", "[conv]") {
  // conv_plan.cpp: from 24 channels on both sides with 128 or more 4x4 tiles; 64 otherwise.
  struct Want {
    std::int64_t batch, channels, out_channels, size;
    bool winograd;
  };
  const Want wants[] = {
      {8, 32, 24, 16, true},    // 8 · 4² = 128 4x4 tiles
      {4, 32, 24, 16, false},   // 64: F(2x2) only
      {32, 24, 48, 8, true},    // 32 · 2² = 128
      {32, 16, 64, 32, false},  // 16 input channels
      {32, 64, 16, 32, false},  // 16 output channels
      {1, 64, 64, 8, true},     // 64 channels: F(2x2) too
  };
  for (const Want& want : wants) {
    tapegrad::detail::ConvGeometry g;
    g.batch = want.batch;
    g.channels = want.channels;
    g.out_channels = want.out_channels;
    g.h = g.w = {want.size, 3, 1, 1, 1, 1, want.size};
    INFO("batch " << want.batch << ", " << want.channels << " -> " << want.out_channels << " channels, "
                  << want.size << "x" << want.size);
    const tapegrad::detail::ConvPlan plan(g, sizeof(float));
    CHECK((plan.forward == tapegrad::detail::ConvPath::winograd) == want.winograd);
    CHECK((plan.input_grad == tapegrad::detail::ConvPath::winograd) == want.winograd);
    CHECK((plan.weight_grad == tapegrad::detail::ConvPath::winograd) == want.winograd);
  }
}

TEST_CASE("conv2d: the weight and bias gradients add into an existing grad() on every path",
          "[conv][grad_sum]") {
  // A second backward adds into the parameters' grad() (OpContext::grad_sum): the per-thread
  // slots' sum, the whole-batch GEMM with beta 1, or the Winograd weight gradient's last
  // transform must add, not overwrite.
  const Case cases[] = {
      {"Winograd F(2x2)", {6, 64, 4, 4}, {64, 64, 3, 3}, {.padding = {1, 1}}},
      {"Winograd F(2x2), padding 0", {2, 64, 18, 19}, {70, 64, 3, 3}, {}},
      {"Winograd F(4x4)", {8, 64, 16, 16}, {64, 64, 3, 3}, {.padding = {1, 1}}},
      {"stride 2, whole batch", {4, 16, 8, 8}, {32, 16, 3, 3}, {.stride = {2, 2}, .padding = {1, 1}}},
      {"LeNet's first layer (direct weight gradient)", {4, 1, 28, 28}, {6, 1, 5, 5}, {}},
      {"pointwise", {3, 8, 5, 5}, {4, 8, 1, 1}, {}},
      {"depthwise", {2, 6, 9, 9}, {6, 1, 3, 3}, {.padding = {1, 1}, .groups = 6}},
  };
  std::uint64_t seed = 91;
  for (const Case& c : cases) {
    SECTION(c.name) {
      for (tg::DType dtype : {tg::DType::f32, tg::DType::f64}) {
        using tg::testing::random_tensor;
        std::vector<tg::Tensor> in{random_tensor(c.x, seed).to(dtype), random_tensor(c.w, seed + 1).to(dtype),
                                   random_tensor({c.w[0]}, seed + 2).to(dtype)};
        for (tg::Tensor& t : in) t.set_requires_grad(true);
        const tg::Tensor upstream = tg::testing::random_cotangent(conv_fn_out(in, c.opt).shape(), dtype, seed + 3);
        conv_fn_out(in, c.opt).backward(upstream);
        std::vector<tg::Tensor> once;
        for (const tg::Tensor& t : in) once.push_back(t.grad().clone());
        conv_fn_out(in, c.opt).backward(upstream);
        const double tol = dtype == tg::DType::f32 ? 1e-5 : 1e-12;
        for (std::size_t i = 0; i < in.size(); ++i) {
          INFO("input " << i << ", " << fmt::format("{}", dtype));
          CHECK_THAT(in[i].grad(), AllClose(once[i] * 2.0, tol, tol));
        }
      }
      seed += 4;
    }
  }
}
