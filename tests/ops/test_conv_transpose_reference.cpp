// conv_transpose2d, conv1d, max_pool1d and avg_pool1d against PyTorch 1.13 (CPU, float64), read
// from tests/fixtures/conv_transpose_reference.txt (make_conv_transpose_reference.py writes it
// and documents the format). For each case out = op(x0, x1, x2), a random upstream v that
// itself requires grad and random u_i:
//   g_i = d<out, v>/dx_i with create_graph,  s = Σ <g_i, u_i>,  ds/dx_i and ds/dv,
// all of which must agree to 1e-9 relative (1e-12 absolute near 0); max_pool1d's indices
// exactly. The module cases of the file are read by tests/nn/test_conv_transpose_layers.cpp.
// Then every argument error, each naming the op the user called.
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/fixture.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;

namespace {

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-12;
constexpr const char* kFixture = TAPEGRAD_FIXTURE_DIR "/conv_transpose_reference.txt";

std::vector<std::int64_t> config(const tg::testing::FixtureCase& c) {
  std::vector<std::int64_t> out;
  for (double v : c.values("config")) out.push_back(static_cast<std::int64_t>(std::llround(v)));
  return out;
}

tg::ConvTranspose2dOptions conv_t_options(const std::vector<std::int64_t>& k) {
  REQUIRE(k.size() == 10);
  return {.stride = {k[0], k[1]}, .padding = {k[2], k[3]}, .output_padding = {k[4], k[5]}, .groups = k[6],
          .dilation = {k[7], k[8]}, .bias = k[9] != 0};
}
tg::Conv1dOptions conv1d_options(const std::vector<std::int64_t>& k) {
  REQUIRE(k.size() == 5);
  return {.stride = k[0], .padding = k[1], .dilation = k[2], .groups = k[3], .bias = k[4] != 0};
}
tg::MaxPool1dOptions max_options(const std::vector<std::int64_t>& k) {
  REQUIRE(k.size() == 5);
  return {.kernel_size = k[0], .stride = k[1], .padding = k[2], .dilation = k[3], .ceil_mode = k[4] != 0};
}
tg::AvgPool1dOptions avg_options(const std::vector<std::int64_t>& k) {
  REQUIRE(k.size() == 5);
  return {.kernel_size = k[0], .stride = k[1], .padding = k[2], .ceil_mode = k[3] != 0, .count_include_pad = k[4] != 0};
}

tg::Tensor bias_of(const std::vector<tg::Tensor>& x) { return x.size() > 2 ? x[2] : tg::Tensor(); }

/// The case's function of its inputs (empty for a module case).
tg::testing::TensorFn function_of(const tg::testing::FixtureCase& c) {
  const std::string& op = c.word("op");
  const std::vector<std::int64_t> k = config(c);
  if (op == "conv_transpose2d") {
    return [o = conv_t_options(k)](const std::vector<tg::Tensor>& x) {
      return tg::conv_transpose2d(x[0], x[1], bias_of(x), o);
    };
  }
  if (op == "conv1d") {
    return [o = conv1d_options(k)](const std::vector<tg::Tensor>& x) { return tg::conv1d(x[0], x[1], bias_of(x), o); };
  }
  if (op == "max_pool1d") {
    return [o = max_options(k)](const std::vector<tg::Tensor>& x) { return tg::max_pool1d(x[0], o); };
  }
  if (op == "avg_pool1d") {
    return [o = avg_options(k)](const std::vector<tg::Tensor>& x) { return tg::avg_pool1d(x[0], o); };
  }
  return {};
}

}  // namespace

TEST_CASE("conv_transpose reference: conv_transpose2d conv1d max_pool1d avg_pool1d forward, indices and "
          "derivatives to 2nd order match PyTorch 1.13",
          "[ops][conv-transpose-reference]") {
  const std::vector<tg::testing::FixtureCase> cases = tg::testing::read_fixture(kFixture);
  std::set<std::string> ops_seen;
  std::size_t functional = 0;
  for (const auto& c : cases) {
    if (!function_of(c)) continue;
    ops_seen.insert(c.word("op"));
    ++functional;
  }
  CHECK(ops_seen == std::set<std::string>{"conv_transpose2d", "conv1d", "max_pool1d", "avg_pool1d"});
  CHECK(functional >= 30);
  for (const auto& c : cases) {
    const tg::testing::TensorFn f = function_of(c);
    if (!f) continue;
    SECTION(c.name) {
      tg::testing::check_case_derivatives(c, f, kAtol, kRtol);
      if (c.word("op") == "max_pool1d") {
        const tg::MaxPoolResult r = tg::max_pool1d_with_indices(c.tensor("x0"), max_options(config(c)));
        tg::testing::check_reference(c.name, "values of _with_indices", r.values, c.tensor("out"), kAtol, kRtol);
        tg::testing::check_reference(c.name, "indices", r.indices, c.tensor("indices", c.shape("out"), tg::DType::i64),
                                     0, 0);
      }
    }
  }
}

TEST_CASE("conv_transpose reference: f32 agrees with the f64 fixture to f32 precision",
          "[ops][conv-transpose-reference]") {
  for (const auto& c : tg::testing::read_fixture(kFixture)) {
    const tg::testing::TensorFn f = function_of(c);
    if (!f) continue;
    INFO(c.name);
    std::vector<tg::Tensor> xs;
    for (std::size_t i = 0; c.has(fmt::format("x{}.shape", i)); ++i) {
      xs.push_back(c.tensor(fmt::format("x{}", i), tg::DType::f32).set_requires_grad(true));
    }
    const tg::Tensor out = f(xs);
    CHECK(out.dtype() == tg::DType::f32);
    tg::testing::check_reference(c.name, "f32 out", out.to(tg::DType::f64), c.tensor("out"), 1e-5, 1e-5);
    out.backward(c.tensor("v", c.shape("out"), tg::DType::f32));
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const std::string key = fmt::format("g{}", i);
      tg::testing::check_reference(c.name, "f32 " + key, xs[i].grad().to(tg::DType::f64),
                                   c.tensor(key, xs[i].shape()), 1e-5, 1e-5);
    }
  }
}

TEST_CASE("conv_transpose2d: the fast paths agree with the plain ones (f64)", "[ops][conv-transpose]") {
  // grad_x and grad_w together come from one unfolding of grad_y (conv_forward_weight_grad);
  // each alone takes conv2d's forward or weight gradient. kernel = stride without padding
  // tiles the output (unfold_tiles / fold_tiles, the bias added per chunk). Both against the
  // plain paths: each gradient alone, and the bias added to an unbiased output.
  struct Case {
    tg::Shape x, w;
    tg::ConvTranspose2dOptions opt;
  };
  const std::vector<Case> cases = {
      {{3, 4, 5, 6}, {4, 3, 2, 2}, {.stride = 2}},                         // tiling, chunks of several images
      {{3, 8, 32, 32}, {8, 32, 2, 2}, {.stride = 2}},                      // tiling, one image per chunk
      {{2, 4, 3, 5}, {4, 2, 3, 2}, {.stride = {3, 2}}},                    // tiling 3×2
      {{2, 4, 5, 5}, {4, 3, 2, 2}, {.stride = 2, .groups = 2}},            // tiling, groups
      {{3, 4, 5, 5}, {4, 3, 3, 3}, {.stride = 2, .padding = 1}},           // overlapping windows
      {{2, 3, 4, 4}, {3, 2, 2, 2}, {.stride = 2, .output_padding = 1}},    // cropped (extra rows)
  };
  tg::manual_seed(77);
  for (const Case& c : cases) {
    INFO("x " << fmt::format("{}", c.x) << " w " << fmt::format("{}", c.w));
    const tg::Tensor x = tg::randn(c.x, tg::DType::f64), w = tg::randn(c.w, tg::DType::f64);
    const tg::Tensor b = tg::randn({c.w[1] * c.opt.groups}, tg::DType::f64);
    const tg::Tensor plain = tg::conv_transpose2d(x, w, tg::Tensor(), c.opt);
    const tg::Tensor gy = tg::randn(plain.shape(), tg::DType::f64);
    const auto grads = [&](bool need_x, bool need_w) {
      tg::Tensor xg = x.detach().set_requires_grad(need_x), wg = w.detach().set_requires_grad(need_w);
      tg::conv_transpose2d(xg, wg, b, c.opt).backward(gy);
      return std::pair{need_x ? xg.grad() : tg::Tensor(), need_w ? wg.grad() : tg::Tensor()};
    };
    const auto [gx_both, gw_both] = grads(true, true);
    const auto [gx_alone, unused_w] = grads(true, false);
    const auto [unused_x, gw_alone] = grads(false, true);
    tg::testing::check_reference("fused", "grad_x", gx_both, gx_alone, 1e-12, 1e-12);
    tg::testing::check_reference("fused", "grad_w", gw_both, gw_alone, 1e-12, 1e-12);
    const tg::Tensor biased = tg::conv_transpose2d(x, w, b, c.opt);
    tg::testing::check_reference("bias", "out", biased, plain + tg::reshape(b, {1, b.shape()[0], 1, 1}), 1e-12, 1e-12);
  }
}

TEST_CASE("conv_transpose2d: f32 on the Winograd paths matches f64", "[ops][conv-transpose]") {
  // conv_transpose2d is conv2d's input gradient: with 64 or more channels on both sides, a 3x3
  // kernel and stride 1, its forward runs Winograd's input gradient and its VJP Winograd's
  // forward (grad_x) and weight gradient (grad_w, with grad_y and x in each other's roles);
  // F(2x2) tiles, and F(4x4) in the second case (128 tiles of 4x4). Tolerance as conv2d's.
  struct Case {
    tg::Shape x, w;
    tg::ConvTranspose2dOptions opt;
  };
  const std::vector<Case> cases = {
      {{2, 64, 9, 8}, {64, 66, 3, 3}, {.padding = 1}},
      {{8, 64, 16, 16}, {64, 64, 3, 3}, {.padding = 1}},
      {{1, 65, 6, 7}, {65, 64, 3, 3}, {}},
  };
  tg::manual_seed(78);
  std::uint64_t seed = 5;
  for (const Case& c : cases) {
    INFO("x " << fmt::format("{}", c.x) << " w " << fmt::format("{}", c.w));
    const std::vector<tg::Tensor> in{tg::randn(c.x, tg::DType::f64).set_requires_grad(true),
                                     tg::randn(c.w, tg::DType::f64).set_requires_grad(true),
                                     tg::randn({c.w[1]}, tg::DType::f64).set_requires_grad(true)};
    const auto fn = [opt = c.opt](const auto& v) { return tg::conv_transpose2d(v[0], v[1], v[2], opt); };
    tg::testing::check_f32_matches_f64(fn, in, 1e-3, 1e-3);
    tg::testing::check_f32_grads_match_f64(fn, in, seed++, 1e-3, 1e-3);
  }
}

namespace {

/// Runs f, which must throw E with a message holding every one of `parts`.
template <class E, class F>
void check_error(F f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no error was thrown");
  } catch (const E& e) {
    const std::string what = e.what();
    INFO(what);
    for (const std::string& p : parts) CHECK(what.find(p) != std::string::npos);
  }
}

tg::Tensor t(const tg::Shape& s, tg::DType d = tg::DType::f64) { return tg::zeros(s, d); }

}  // namespace

TEST_CASE("conv_transpose2d: argument errors name the op, the argument and the shapes", "[ops][conv-transpose]") {
  const tg::Tensor x = t({2, 4, 3, 3}), w = t({4, 3, 2, 2});
  check_error<tg::ShapeError>([&] { tg::conv_transpose2d(t({4, 3}), w); },
                              {"conv_transpose2d", "input [4, 3]", "weight [4, 3, 2, 2]"});
  check_error<tg::ShapeError>([&] { tg::conv_transpose2d(x, t({3, 3, 2, 2})); },
                              {"conv_transpose2d", "[2, 4, 3, 3]", "4 channels", "[3, 3, 2, 2]"});
  check_error<tg::ShapeError>([&] { tg::conv_transpose2d(x, w, {}, {.groups = 3}); },
                              {"conv_transpose2d", "groups=3"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, {}, {.groups = 0}); },
                              {"conv_transpose2d", "groups must be positive, got 0"});
  check_error<tg::ShapeError>([&] { tg::conv_transpose2d(x, w, t({4})); },
                              {"conv_transpose2d", "bias must be [3]", "got [4]"});
  check_error<tg::DTypeError>([&] { tg::conv_transpose2d(x, t({4, 3, 2, 2}, tg::DType::f32)); },
                              {"conv_transpose2d", "one dtype"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, {}, {.stride = 2, .output_padding = {0, 2}}); },
                              {"conv_transpose2d", "output_padding", "width output_padding=2", "stride=2",
                               "dilation=1"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, {}, {.output_padding = 1}); },
                              {"conv_transpose2d", "height output_padding=1", "stride=1"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, {}, {.stride = {0, 1}}); },
                              {"conv_transpose2d", "positive", "stride=0"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, {}, {.padding = -1}); },
                              {"conv_transpose2d", "padding must be non-negative"});
  check_error<tg::ShapeError>([&] { tg::conv_transpose2d(x, w, {}, {.padding = {2, 0}}); },
                              {"conv_transpose2d", "output height would be 0", "H=3", "2*pad=2"});
  check_error<tg::ValueError>([&] { tg::conv_transpose2d(x, w, t({3}), {.bias = false}); },
                              {"conv_transpose2d", "options.bias is false", "[3]"});
  check_error<tg::DTypeError>([&] { tg::conv_transpose2d(t({2, 4, 3, 3}, tg::DType::i64), w); },
                              {"conv_transpose2d", "input must be f32 or f64"});
}

TEST_CASE("conv1d max_pool1d avg_pool1d: errors name the 1-D op and its shapes", "[ops][conv-transpose]") {
  const tg::Tensor x = t({2, 4, 6});
  check_error<tg::ShapeError>([&] { tg::conv1d(t({2, 4, 6, 1}), t({3, 4, 2})); }, {"conv1d", "[2, 4, 6, 1]", "[N, C, L]"});
  check_error<tg::ShapeError>([&] { tg::conv1d(x, t({3, 4, 2, 2})); }, {"conv1d", "weight [3, 4, 2, 2]", "[O, C/groups, k]"});
  check_error<tg::ShapeError>([&] { tg::conv1d(x, t({3, 3, 2})); }, {"conv1d", "[2, 4, 6]", "4 channels", "[3, 3, 2]"});
  check_error<tg::ShapeError>([&] { tg::conv1d(x, t({3, 2, 2}), {}, {.groups = 2}); }, {"conv1d", "groups=2"});
  check_error<tg::ShapeError>([&] { tg::conv1d(x, t({3, 4, 2}), t({2})); }, {"conv1d", "bias must be [3]", "[2]"});
  check_error<tg::ShapeError>([&] { tg::conv1d(x, t({3, 4, 9})); },
                              {"conv1d", "output length would be", "L=6", "kernel=9", "[2, 4, 6]"});
  check_error<tg::ValueError>([&] { tg::conv1d(x, t({3, 4, 2}), {}, {.stride = 2, .padding_mode = tg::ConvPadding::same}); },
                              {"conv1d", "padding='same' needs stride 1"});
  check_error<tg::ValueError>([&] { tg::conv1d(x, t({3, 4, 2}), {}, {.dilation = 0}); }, {"conv1d", "positive", "dilation=0"});
  check_error<tg::DTypeError>([&] { tg::conv1d(x, t({3, 4, 2}, tg::DType::f32)); }, {"conv1d", "one dtype"});

  check_error<tg::ShapeError>([&] { tg::max_pool1d(t({6})); }, {"max_pool1d", "[N, C, L]", "[6]"});
  check_error<tg::ValueError>([&] { tg::max_pool1d(x, {.kernel_size = 2, .padding = 2}); },
                              {"max_pool1d", "padding must be at most half", "padding=2", "kernel_size=2"});
  check_error<tg::ShapeError>([&] { tg::max_pool1d(x, {.kernel_size = 4, .dilation = 2}); },
                              {"max_pool1d", "output length would be", "L=6", "dilation=2", "[2, 4, 6]"});
  check_error<tg::ValueError>([&] { tg::max_pool1d_with_indices(x, {.kernel_size = 0}); }, {"max_pool1d", "positive"});
  check_error<tg::ShapeError>([&] { tg::avg_pool1d(t({2, 4, 6, 1})); }, {"avg_pool1d", "[2, 4, 6, 1]"});
  check_error<tg::ShapeError>([&] { tg::avg_pool1d(x, {.kernel_size = 7}); }, {"avg_pool1d", "output length would be", "L=6"});
  check_error<tg::ValueError>([&] { tg::avg_pool1d(x, {.kernel_size = 3, .stride = -1}); }, {"avg_pool1d", "stride=-1"});
}
