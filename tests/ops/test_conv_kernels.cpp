// The depthwise conv kernels (the AVX-512 ones where the CPU has them, the AVX2 ones, and
// the portable ones f64 and older CPUs run) against naive loops, forward and both
// gradients, on random geometries: strides, dilation, uneven padding, channel multipliers,
// rows of 1 to 3 vector widths; the AVX2 kernels also on a broader sweep (padding past the
// kernel's reach, 1-wide and 1-tall planes, grad_w added to what it holds). Also the direct
// kernels with the output channels in the lanes, im2col / col2im against their portable
// twins, and the Winograd F(2×2, 3×3) kernels against f64 loops.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/error.hpp>

#include "ops/kernels/conv.hpp"
#include "ops/kernels/winograd.hpp"

namespace td = tapegrad::detail;

namespace {

struct Naive {
  std::vector<double> out, grad_x, grad_w;
};

/// The definitions, one output and one tap at a time.
Naive naive_depthwise(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& gy,
                      const td::ConvGeometry& g) {
  Naive r;
  const std::int64_t mult = g.group_out(), k = g.h.kernel * g.w.kernel;
  r.out.assign(static_cast<std::size_t>(g.out_channels * g.plane_out()), 0.0);
  r.grad_x.assign(x.size(), 0.0);
  r.grad_w.assign(w.size(), 0.0);
  for (std::int64_t o = 0; o < g.out_channels; ++o) {
    for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
      for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
        const auto y = static_cast<std::size_t>(o * g.plane_out() + oh * g.w.out + ow);
        for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
          for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
            const std::int64_t ih = g.h.start(oh) + ki * g.h.dilation, iw = g.w.start(ow) + kj * g.w.dilation;
            if (ih < 0 || ih >= g.h.in || iw < 0 || iw >= g.w.in) continue;
            const auto xi = static_cast<std::size_t>((o / mult) * g.plane_in() + ih * g.w.in + iw);
            const auto wi = static_cast<std::size_t>(o * k + ki * g.w.kernel + kj);
            r.out[y] += double{w[wi]} * x[xi];
            r.grad_x[xi] += double{gy[y]} * w[wi];
            r.grad_w[wi] += double{gy[y]} * x[xi];
          }
        }
      }
    }
  }
  return r;
}

template <class T>
void require_close(const std::vector<T>& got, const std::vector<double>& want, const char* what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what << "[" << i << "]");
    REQUIRE(std::abs(static_cast<double>(got[i]) - want[i]) <= 1e-4 * (1 + std::abs(want[i])));
  }
}

/// Seeded draws for the random-geometry tests: pick(lo, hi) an integer in [lo, hi],
/// floats(n) n values in [-1, 1).
struct Draw {
  std::mt19937_64 rng;
  explicit Draw(std::uint64_t seed) : rng(seed) {}
  std::int64_t operator()(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  }
  std::vector<float> floats(std::int64_t n) {
    std::uniform_real_distribution<float> value(-1, 1);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& e : v) e = value(rng);
    return v;
  }
};

/// A random window geometry for one image: sizes, kernel, stride, uneven padding and
/// dilation per axis; nullopt when no window fits.
template <class Pick>
std::optional<td::ConvGeometry> random_geometry(Pick& pick, std::int64_t channels, std::int64_t groups,
                                                std::int64_t out_channels) {
  td::ConvGeometry g;
  g.batch = 1;
  g.channels = channels;
  g.groups = groups;
  g.out_channels = out_channels;
  g.h = {pick(1, 10), pick(1, 5), pick(1, 3), pick(0, 2), pick(0, 2), pick(1, 2), 0};
  g.w = {pick(1, 40), pick(1, 5), pick(1, 4), pick(0, 3), pick(0, 3), pick(1, 2), 0};
  try {
    td::resolve_axis("conv2d", "height", g.h, false);
    td::resolve_axis("conv2d", "width", g.w, false);
  } catch (const tapegrad::ShapeError&) {
    return std::nullopt;
  }
  return g;
}

std::string describe(const td::ConvGeometry& g) {
  return fmt::format("H={} W={} kernel={}x{} stride={},{} pad={}+{},{}+{} dilation={},{} channels={} out={}",
                     g.h.in, g.w.in, g.h.kernel, g.w.kernel, g.h.stride, g.w.stride, g.h.pad_begin,
                     g.h.pad_end, g.w.pad_begin, g.w.pad_end, g.h.dilation, g.w.dilation, g.channels,
                     g.out_channels);
}

}  // namespace

TEST_CASE("depthwise kernels agree with the naive loops on random geometries", "[conv][kernels]") {
  Draw pick(1126);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    // multipliers the kernels take 6, 4, 3, 2 channels at a time for, and one they do not
    const std::int64_t multipliers[] = {1, 2, 3, 4, 5, 6, 12};
    const std::int64_t channels = pick(1, 3), mult = multipliers[pick(0, 6)];
    const auto geometry = random_geometry(pick, channels, channels, channels * mult);
    if (!geometry) continue;
    const td::ConvGeometry& g = *geometry;
    const auto x = pick.floats(channels * g.plane_in());
    const auto w = pick.floats(g.out_channels * g.h.kernel * g.w.kernel);
    const auto gy = pick.floats(g.out_channels * g.plane_out());
    const auto bias = pick.floats(g.out_channels);
    const Naive want = naive_depthwise(x, w, gy, g);
    INFO(describe(g));
    for (bool portable : {false, true}) {
      INFO((portable ? "portable" : "dispatched") << " f32 kernels");
      // grad_x starts as garbage: the kernels overwrite it.
      std::vector<float> out(want.out.size()), gx(x.size(), 7.0f), gw(w.size(), 0.0f);
      using Forward = void (*)(const float*, const float*, const float*, const td::ConvGeometry&, float*);
      using Backward = void (*)(const float*, const float*, const float*, const td::ConvGeometry&, float*, float*);
      const Forward forward = portable ? Forward{td::depthwise_forward_portable} : Forward{td::depthwise_forward};
      const Backward backward = portable ? Backward{td::depthwise_backward_portable} : Backward{td::depthwise_backward};
      forward(x.data(), w.data(), nullptr, g, out.data());
      require_close(out, want.out, "out");
      forward(x.data(), w.data(), bias.data(), g, out.data());
      for (std::size_t i = 0; i < out.size(); ++i) out[i] -= bias[i / static_cast<std::size_t>(g.plane_out())];
      require_close(out, want.out, "out with bias, minus the bias");
      backward(x.data(), w.data(), gy.data(), g, gx.data(), gw.data());
      require_close(gx, want.grad_x, "grad_x");
      require_close(gw, want.grad_w, "grad_w");
      std::fill(gx.begin(), gx.end(), -3.0f);  // each gradient alone, as conv2d asks for it
      backward(x.data(), w.data(), gy.data(), g, gx.data(), nullptr);
      require_close(gx, want.grad_x, "grad_x alone");
      std::fill(gw.begin(), gw.end(), 0.0f);
      backward(x.data(), w.data(), gy.data(), g, nullptr, gw.data());
      require_close(gw, want.grad_w, "grad_w alone");
    }
    ++checked;
  }
  CHECK(checked > 150);
}

TEST_CASE("im2col and col2im: the dispatched kernels equal the portable ones", "[conv][kernels]") {
  Draw pick(2611);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t channels = pick(1, 3);
    const auto geometry = random_geometry(pick, channels, 1, 1);
    if (!geometry) continue;
    const td::ConvGeometry& g = *geometry;
    const std::int64_t rows = g.col_rows(), ld = g.plane_out() + pick(0, 5);
    const std::vector<float> x = pick.floats(channels * g.plane_in());
    const std::vector<float> col = pick.floats(rows * ld);
    INFO(describe(g) << " ld=" << ld);
    std::vector<float> got(col.size(), 5.0f), want(col.size(), 5.0f);  // gaps between rows stay 5
    td::im2col(x.data(), g, channels, got.data(), ld);
    td::im2col_portable(x.data(), g, channels, want.data(), ld);
    REQUIRE(got == want);  // copies: exactly
    std::vector<float> gx = x, wx = x;  // col2im adds into x, in another order: rounding differs
    td::col2im(col.data(), ld, g, channels, gx.data());
    td::col2im_portable(col.data(), ld, g, channels, wx.data());
    for (std::size_t i = 0; i < gx.size(); ++i) REQUIRE(std::abs(gx[i] - wx[i]) <= 1e-5f * (1 + std::abs(wx[i])));
    ++checked;
  }
  CHECK(checked > 150);
}

TEST_CASE("tiling geometries (kernel = stride): unfold_tiles and fold_tiles equal im2col and col2im", "[conv][kernels]") {
  Draw pick(2613);
  for (int trial = 0; trial < 60; ++trial) {
    const std::int64_t channels = pick(1, 4), kh = pick(1, 3), kw = pick(1, 4), oh = pick(1, 6), ow = pick(1, 20);
    td::ConvGeometry g;
    g.channels = g.out_channels = channels;
    g.h = {oh * kh, kh, kh, 0, 0, 1, oh};
    g.w = {ow * kw, kw, kw, 0, 0, 1, ow};
    REQUIRE(g.tiles());
    const std::int64_t rows = channels * kh * kw, ld = g.plane_out() + pick(0, 5);
    INFO(describe(g) << " ld=" << ld);
    const std::vector<float> x = pick.floats(channels * g.plane_in()), col = pick.floats(rows * ld);
    std::vector<float> got(col.size(), 5.0f), want(col.size(), 5.0f);
    td::unfold_tiles(x.data(), g, channels, got.data(), ld);
    td::im2col_portable(x.data(), g, channels, want.data(), ld);
    REQUIRE(got == want);
    std::vector<float> gx(x.size(), 9.0f), wx(x.size(), 0.0f);  // fold_tiles writes every element
    td::fold_tiles(col.data(), ld, g, channels, gx.data());
    td::col2im_portable(col.data(), ld, g, channels, wx.data());
    REQUIRE(gx == wx);  // one term per element: exactly
    const std::vector<double> xd(x.begin(), x.end()), cold(col.begin(), col.end());
    std::vector<double> gotd(cold.size(), 5.0), wantd(cold.size(), 5.0), gxd(xd.size(), 9.0), wxd(xd.size(), 0.0);
    td::im2col(xd.data(), g, channels, gotd.data(), ld);  // dispatches to unfold_tiles
    td::im2col_portable(xd.data(), g, channels, wantd.data(), ld);
    REQUIRE(gotd == wantd);
    td::fold_tiles(cold.data(), ld, g, channels, gxd.data());
    td::col2im_portable(cold.data(), ld, g, channels, wxd.data());
    REQUIRE(gxd == wxd);
  }
}

TEST_CASE("direct conv kernels (output channels in the lanes) agree with the naive loops", "[conv][kernels]") {
  if (!td::direct_conv_fits([] {
        td::ConvGeometry g;
        g.channels = 4;
        g.out_channels = 8;
        g.h = g.w = {5, 3, 1, 0, 0, 1, 3};
        return g;
      }())) {
    SUCCEED("no AVX-512 on this CPU: conv2d never takes the direct kernels");
    return;
  }
  Draw pick(2612);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t groups = pick(1, 3), group_in = pick(2, 5), group_out = pick(1, 40);
    auto geometry = random_geometry(pick, groups * group_in, groups, groups * group_out);
    if (!geometry) continue;
    td::ConvGeometry g = *geometry;
    // what the direct kernels take: width stride and dilation 1, a 3- or 5-wide kernel
    g.w.stride = g.w.dilation = 1;
    g.w.kernel = pick(0, 1) == 0 ? 3 : 5;
    g.w.out = 0;
    try {
      td::resolve_axis("conv2d", "width", g.w, false);
    } catch (const tapegrad::ShapeError&) {
      continue;
    }
    // (the forward serves any group of at most 16 outputs, the weight gradient any group;
    // conv2d takes them from 8 outputs over 4 inputs, the weight gradient beyond 16 outputs
    // only for images of 1024 output pixels or more)
    CHECK(td::direct_conv_fits(g) == (group_out >= 8 && group_out <= 16 && group_in >= 4));
    CHECK(td::direct_weight_grad_fits(g) ==
          (group_out >= 8 && group_in >= 4 && (group_out <= 16 || g.plane_out() >= 1024)));
    INFO(describe(g) << " groups=" << groups);
    const std::int64_t rows = g.col_rows(), plane = g.plane_out();
    const auto x = pick.floats(g.channels * g.plane_in());
    const auto w = pick.floats(g.out_channels * rows);
    const auto gy = pick.floats(g.out_channels * plane);
    const auto bias = pick.floats(g.out_channels);
    // The definitions: out[o, p] = bias[o] + Σ w[o, r] x[r-th tap of p], grad_w[o, r] = Σ_p gy[o, p] x[...]
    std::vector<double> want_out(static_cast<std::size_t>(g.out_channels * plane)), want_gw(w.size(), 0.0);
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      const std::int64_t gi = o / group_out;
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
          const auto y = static_cast<std::size_t>(o * plane + oh * g.w.out + ow);
          double sum = bias[static_cast<std::size_t>(o)];
          for (std::int64_t c = 0; c < group_in; ++c) {
            for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
              for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
                const std::int64_t ih = g.h.start(oh) + ki * g.h.dilation, iw = g.w.start(ow) + kj;
                if (ih < 0 || ih >= g.h.in || iw < 0 || iw >= g.w.in) continue;
                const auto xi = static_cast<std::size_t>((gi * group_in + c) * g.plane_in() + ih * g.w.in + iw);
                const auto wi = static_cast<std::size_t>(o * rows + (c * g.h.kernel + ki) * g.w.kernel + kj);
                sum += double{w[wi]} * x[xi];
                want_gw[wi] += double{gy[y]} * x[xi];
              }
            }
          }
          want_out[y] = sum;
        }
      }
    }
    if (group_out <= 16) {
      std::vector<float> wt(static_cast<std::size_t>(groups * rows * 16), 0.0f);  // [groups][rows][16]
      for (std::int64_t o = 0; o < g.out_channels; ++o) {
        for (std::int64_t r = 0; r < rows; ++r) {
          wt[static_cast<std::size_t>(((o / group_out) * rows + r) * 16 + o % group_out)] = w[static_cast<std::size_t>(o * rows + r)];
        }
      }
      std::vector<float> out(want_out.size(), 9.0f);
      td::direct_conv_forward(x.data(), wt.data(), bias.data(), g, out.data());
      require_close(out, want_out, "out");
    }
    // the weight gradient, transposed per group [groups][rows][group_out], added to 0.5
    std::vector<float> gwt(w.size(), 0.5f);
    td::direct_conv_weight_grad(x.data(), gy.data(), g, gwt.data());
    std::vector<float> gw(w.size());
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t gi = o / group_out;
        gw[static_cast<std::size_t>(o * rows + r)] = gwt[static_cast<std::size_t>((gi * rows + r) * group_out + o % group_out)] - 0.5f;
      }
    }
    require_close(gw, want_gw, "grad_w");
    ++checked;
  }
  CHECK(checked > 150);
}

namespace {

/// The AVX2 kernels on g against the naive loops: forward with and without bias, grad_x
/// (overwritten: it starts as garbage) and grad_w (added to what it holds), each gradient
/// alone and both together.
void check_avx2_depthwise(const td::ConvGeometry& g, Draw& pick) {
  INFO("AVX2 f32 kernels, " << describe(g));
  REQUIRE(td::depthwise_avx2_fits(g));
  const auto x = pick.floats(g.channels * g.plane_in());
  const auto w = pick.floats(g.out_channels * g.h.kernel * g.w.kernel);
  const auto gy = pick.floats(g.out_channels * g.plane_out());
  const auto bias = pick.floats(g.out_channels);
  const auto before = pick.floats(g.out_channels * g.h.kernel * g.w.kernel);  // grad_w's prior content
  Naive want = naive_depthwise(x, w, gy, g);
  std::vector<float> out(want.out.size(), 11.0f);
  td::depthwise_forward_avx2(x.data(), w.data(), nullptr, g, out.data());
  require_close(out, want.out, "out");
  td::depthwise_forward_avx2(x.data(), w.data(), bias.data(), g, out.data());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] -= bias[i / static_cast<std::size_t>(g.plane_out())];
  require_close(out, want.out, "out with bias, minus the bias");
  for (std::size_t i = 0; i < want.grad_w.size(); ++i) want.grad_w[i] += before[i];
  std::vector<float> gx(x.size(), 7.0f), gw = before;
  td::depthwise_backward_avx2(x.data(), w.data(), gy.data(), g, gx.data(), gw.data());
  require_close(gx, want.grad_x, "grad_x");
  require_close(gw, want.grad_w, "grad_w += ...");
  std::fill(gx.begin(), gx.end(), -3.0f);
  td::depthwise_backward_avx2(x.data(), w.data(), gy.data(), g, gx.data(), nullptr);
  require_close(gx, want.grad_x, "grad_x alone");
  gw = before;
  td::depthwise_backward_avx2(x.data(), w.data(), gy.data(), g, nullptr, gw.data());
  require_close(gw, want.grad_w, "grad_w alone");
}

td::ConvGeometry depthwise_geometry(std::int64_t channels, std::int64_t mult, td::Axis h, td::Axis w) {
  td::ConvGeometry g;
  g.batch = 1;
  g.channels = g.groups = channels;
  g.out_channels = channels * mult;
  g.h = h;
  g.w = w;
  td::resolve_axis("conv2d", "height", g.h, false);
  td::resolve_axis("conv2d", "width", g.w, false);
  return g;
}

}  // namespace

TEST_CASE("AVX2 depthwise kernels agree with the naive loops over a sweep of geometries", "[conv][kernels]") {
  const td::ConvGeometry lenet = depthwise_geometry(1, 6, {28, 5, 1, 2, 2, 1, 0}, {28, 5, 1, 2, 2, 1, 0});
  if (!td::depthwise_avx2_fits(lenet)) {
    SUCCEED("no AVX2 and FMA on this CPU: the AVX2 kernels never run");
    return;
  }
  Draw pick(2026);
  SECTION("named geometries") {
    // LeNet's conv1, the 3×3 bench row, 1-wide and 1-tall planes, a 1×1 plane under
    // padding wider than the kernel's reach, stride 3 with dilation 2, a non-square kernel
    check_avx2_depthwise(lenet, pick);
    check_avx2_depthwise(depthwise_geometry(4, 1, {28, 3, 1, 1, 1, 1, 0}, {28, 3, 1, 1, 1, 1, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(2, 3, {9, 3, 1, 1, 1, 1, 0}, {1, 3, 1, 1, 1, 1, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(2, 2, {1, 3, 1, 1, 1, 1, 0}, {19, 3, 2, 1, 1, 1, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(1, 4, {1, 3, 1, 5, 4, 1, 0}, {1, 3, 1, 3, 6, 2, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(3, 8, {17, 3, 3, 2, 1, 2, 0}, {33, 3, 3, 0, 4, 2, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(1, 6, {12, 3, 2, 1, 0, 1, 0}, {15, 5, 1, 0, 3, 1, 0}), pick);
    check_avx2_depthwise(depthwise_geometry(2, 1, {11, 7, 1, 3, 3, 1, 0}, {23, 7, 2, 3, 3, 1, 0}), pick);
  }
  SECTION("random geometries") {
    const std::int64_t multipliers[] = {1, 2, 3, 4, 6, 8};
    const std::int64_t widths[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 28, 31, 33, 40};
    const std::int64_t kernels[] = {1, 2, 3, 3, 3, 4, 5, 5, 5, 7};
    int checked = 0;
    for (int trial = 0; trial < 1500; ++trial) {
      const std::int64_t channels = pick(1, 2), mult = multipliers[pick(0, 5)];
      td::Axis axes[2];
      for (td::Axis& a : axes) {
        // paddings up to 2 past the kernel's reach d (k - 1): windows wholly in the padding
        a.in = widths[pick(0, 14)];
        a.kernel = kernels[pick(0, 9)];
        a.stride = pick(1, 3);
        a.dilation = pick(1, 2);
        a.pad_begin = pick(0, a.dilation * (a.kernel - 1) + 2);
        a.pad_end = pick(0, a.dilation * (a.kernel - 1) + 2);
      }
      if (pick(0, 3) == 0) axes[0].kernel = axes[1].kernel;  // square kernels: the unrolled paths
      if (pick(0, 5) == 0) axes[0].in = 1;
      td::ConvGeometry g;
      try {
        g = depthwise_geometry(channels, mult, axes[0], axes[1]);
      } catch (const tapegrad::ShapeError&) {
        continue;
      }
      check_avx2_depthwise(g, pick);
      ++checked;
    }
    CHECK(checked > 1000);
  }
}

namespace {

/// conv2d (one group) of a batch in f64, one output and one tap at a time: y = conv(x, w) + b,
/// the input gradient grad_x = Σ grad_y · w over the windows reading each element, + c, and
/// the weight gradient grad_w = Σ grad_y · x over the windows.
struct NaiveConv {
  std::vector<double> y, grad_x, grad_w;
};
NaiveConv naive_conv(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                     const std::vector<float>& gy, const std::vector<float>& c, const td::ConvGeometry& g) {
  NaiveConv r;
  r.y.assign(static_cast<std::size_t>(g.batch * g.out_channels * g.plane_out()), 0.0);
  r.grad_x.assign(x.size(), 0.0);
  r.grad_w.assign(w.size(), 0.0);
  for (std::int64_t n = 0; n < g.batch; ++n) {
    for (std::int64_t o = 0; o < g.out_channels; ++o) {
      for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
        for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
          const auto yi = static_cast<std::size_t>(((n * g.out_channels + o) * g.h.out + oh) * g.w.out + ow);
          r.y[yi] = b[static_cast<std::size_t>(o)];
          for (std::int64_t ci = 0; ci < g.channels; ++ci) {
            for (std::int64_t ki = 0; ki < 3; ++ki) {
              for (std::int64_t kj = 0; kj < 3; ++kj) {
                const std::int64_t ih = oh - g.h.pad_begin + ki, iw = ow - g.w.pad_begin + kj;
                if (ih < 0 || ih >= g.h.in || iw < 0 || iw >= g.w.in) continue;
                const auto xi = static_cast<std::size_t>(((n * g.channels + ci) * g.h.in + ih) * g.w.in + iw);
                const auto wi = static_cast<std::size_t>(((o * g.channels + ci) * 3 + ki) * 3 + kj);
                r.y[yi] += double{w[wi]} * x[xi];
                r.grad_x[xi] += double{gy[yi]} * w[wi];
                r.grad_w[wi] += double{gy[yi]} * x[xi];
              }
            }
          }
        }
      }
    }
  }
  for (std::size_t i = 0; i < r.grad_x.size(); ++i) {
    r.grad_x[i] += c[i / static_cast<std::size_t>(g.plane_in()) % static_cast<std::size_t>(g.channels)];
  }
  return r;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float e : v) m = std::max(m, std::abs(double{e}));
  return m;
}

}  // namespace

TEST_CASE("Winograd F(2x2, 3x3) and F(4x4, 3x3) forward, input and weight gradients agree with f64 loops", "[conv][kernels]") {
  Draw pick(1717);
  for (int trial = 0; trial < 60; ++trial) {
    td::ConvGeometry g;
    g.batch = pick(1, 3);
    g.channels = pick(0, 3) == 0 ? pick(1, 4) : pick(1, 70);
    g.out_channels = pick(0, 3) == 0 ? pick(1, 4) : pick(1, 70);
    g.h = {pick(1, 14), 3, 1, pick(0, 1), pick(0, 1), 1, 0};
    g.w = {pick(1, 20), 3, 1, pick(0, 1), pick(0, 1), 1, 0};
    if (trial < 4) {  // enough tiles for several blocks on several threads
      g.batch = 3;
      g.channels = 70 - trial;
      g.out_channels = 63 + trial;
      g.h.in = 17 + trial;
      g.w.in = 21 - trial;
    } else if (trial < 8) {  // rows of more than 32 tiles (the transforms take 32 at a time)
      g.w.in = trial < 6 ? pick(64, 81) : pick(129, 140);  // (of 2×2 tiles, of 4×4 tiles)
    } else if (trial < 10) {  // U's rows: gathered 256 channels at a time, padded to 16
      g.channels = trial == 8 ? 300 : 5;
      g.out_channels = trial == 8 ? 6 : 290;
    }
    g.h.out = g.h.in + g.h.pad_begin + g.h.pad_end - 2;
    g.w.out = g.w.in + g.w.pad_begin + g.w.pad_end - 2;
    if (g.h.out < 1 || g.w.out < 1) continue;
    REQUIRE(td::winograd_fits(g));
    INFO(describe(g) << " batch=" << g.batch);
    const auto x = pick.floats(g.batch * g.channels * g.plane_in());
    const auto w = pick.floats(g.out_channels * g.channels * 9);
    const auto b = pick.floats(g.out_channels);
    const auto gy = pick.floats(g.batch * g.out_channels * g.plane_out());
    const auto c = pick.floats(g.channels);
    const NaiveConv want = naive_conv(x, w, b, gy, c, g);
    // The rounding bound, F(2×2): each product in the 16 GEMMs is of a transformed weight (at
    // most 2.25·max|w|) and a transformed input (at most 4·max|x|) and each output adds 9 GEMM
    // entries, so with the transforms' few roundings the error stays within
    // 81·(k + 4)·eps·max|w|·max|x| for dot products of k terms whose rounding errors do not
    // all share a sign (the worst case grows as k², random signs as √k; we see about 2 % of
    // this bound). F(4×4)'s larger coefficients (winograd.cpp) gave up to 20 times F(2×2)'s
    // error over these trials; its bound is ten times F(2×2)'s. A wrong tap, channel, tile or
    // padding is off by about |w·x|, far more than either.
    const double eps = std::numeric_limits<float>::epsilon();
    // The weight gradient's: the same form over its k = batch · output-plane terms, with
    // max|grad_y|·max|x| (measured errors: 0.5 % of it for either tile; a 1e-3 change in one
    // of Gᵀ's entries fails it).
    const auto bound = [&](td::WinogradTile tile, std::int64_t k, double max_product) {
      return (tile == td::WinogradTile::f4 ? 810 : 81) * double(k + 4) * eps * max_product;
    };
    for (const auto& setting : {std::pair{td::WinogradTile::f2, false}, std::pair{td::WinogradTile::f2, true},
                                std::pair{td::WinogradTile::f4, false}, std::pair{td::WinogradTile::f4, true}}) {
      const td::WinogradTile tile = setting.first;  // (not a structured binding: clang 14 cannot capture one)
      const bool parallel = setting.second;
      std::vector<float> y(want.y.size(), std::nanf("")), grad_x(want.grad_x.size(), std::nanf(""));
      td::winograd_forward(g, x.data(), w.data(), b.data(), y.data(), tile, parallel);
      td::winograd_input_grad(g, gy.data(), w.data(), c.data(), grad_x.data(), tile, parallel);
      // the weight gradient overwrites (serial) or adds to w (parallel)
      std::vector<float> grad_w = parallel ? w : std::vector<float>(w.size(), std::nanf(""));
      td::winograd_weight_grad(g, x.data(), gy.data(), grad_w.data(), parallel, tile, parallel);
      std::vector<double> want_w = want.grad_w;
      for (std::size_t i = 0; parallel && i < w.size(); ++i) want_w[i] += w[i];
      const auto check = [&](const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                             double tolerance) {
        std::size_t at = 0;
        double error = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          const double e = std::abs(got[i] - ref[i]);
          if (!(e <= error)) std::tie(at, error) = std::pair(i, e);  // (NaN included)
        }
        INFO(what << "[" << at << "] = " << got[at] << ", want " << ref[at] << ", tile=" << int(tile)
                  << ", parallel=" << parallel);
        REQUIRE(error <= tolerance);
      };
      check("y", y, want.y, bound(tile, g.channels, max_abs(w) * max_abs(x)));
      check("grad_x", grad_x, want.grad_x, bound(tile, g.out_channels, max_abs(w) * max_abs(gy)));
      check("grad_w", grad_w, want_w, bound(tile, g.batch * g.plane_out(), max_abs(gy) * max_abs(x)));
    }
  }
}

TEST_CASE("Winograd weight gradient called inside a parallel region equals the serial one", "[conv][kernels]") {
  // Nested in another parallel region the kernel's own team has one thread however many it
  // asks for: its work shares must follow the team it got.
  td::ConvGeometry g;
  g.batch = 2;
  g.channels = 64;
  g.out_channels = 66;
  g.h = {10, 3, 1, 1, 1, 1, 10};
  g.w = {9, 3, 1, 1, 1, 1, 9};
  Draw pick(4242);
  const auto x = pick.floats(g.batch * g.channels * g.plane_in());
  const auto gy = pick.floats(g.batch * g.out_channels * g.plane_out());
  for (const td::WinogradTile tile : {td::WinogradTile::f2, td::WinogradTile::f4}) {
    std::vector<float> serial(static_cast<std::size_t>(g.out_channels * g.channels * 9));
    td::winograd_weight_grad(g, x.data(), gy.data(), serial.data(), false, tile, false);
    std::vector<float> nested(serial.size(), std::nanf(""));
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      td::winograd_weight_grad(g, x.data(), gy.data(), nested.data(), false, tile, true);
    }
    INFO("tile=" << int(tile));
    CHECK(nested == serial);
  }
}
