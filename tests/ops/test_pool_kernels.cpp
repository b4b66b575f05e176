// The max-pool forward kernels (the AVX-512 one where the CPU has it, and the portable one
// every other CPU and f64 run) against a naive loop that states the rules, on random
// geometries: ties, NaN and -inf, padding, dilation, ceil_mode, rows of 1 to 3 vector widths.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/error.hpp>

#include "ops/kernels/pool.hpp"

namespace td = tapegrad::detail;

namespace {

/// The rules, one window at a time: taps in row-major order, inside the input only; take
/// the first element, then any greater one or any NaN.
template <class T>
void naive_max_pool(const std::vector<T>& x, const td::PoolGeometry& g, std::vector<T>& out,
                    std::vector<std::int64_t>& idx) {
  out.assign(static_cast<std::size_t>(g.h.out * g.w.out), -std::numeric_limits<T>::infinity());
  idx.assign(out.size(), -1);
  for (std::int64_t oh = 0; oh < g.h.out; ++oh) {
    for (std::int64_t ow = 0; ow < g.w.out; ++ow) {
      const auto o = static_cast<std::size_t>(oh * g.w.out + ow);
      for (std::int64_t ki = 0; ki < g.h.kernel; ++ki) {
        for (std::int64_t kj = 0; kj < g.w.kernel; ++kj) {
          const std::int64_t ih = g.h.start(oh) + ki * g.h.dilation, iw = g.w.start(ow) + kj * g.w.dilation;
          if (ih < 0 || ih >= g.h.in || iw < 0 || iw >= g.w.in) continue;
          const T v = x[static_cast<std::size_t>(ih * g.w.in + iw)];
          if (idx[o] < 0 || v > out[o] || std::isnan(v)) {
            out[o] = v;
            idx[o] = ih * g.w.in + iw;
          }
        }
      }
    }
  }
}

bool same_value(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

}  // namespace

TEST_CASE("max-pool kernels agree with the naive rules on random geometries", "[pool][kernels]") {
  std::mt19937_64 rng(20261126);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  int checked = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const std::int64_t kh = pick(1, 4), kw = pick(1, 5);
    const bool ceil_mode = pick(0, 1) == 1;
    td::PoolGeometry g;
    try {
      g = td::pool_geometry("max_pool2d", tapegrad::Shape{1, 1, pick(1, 12), pick(1, 70)}, {kh, kw},
                            {pick(1, 3), pick(1, 4)}, {pick(0, kh / 2), pick(0, kw / 2)},
                            {pick(1, 2), pick(1, 3)}, ceil_mode);
    } catch (const tapegrad::ShapeError&) {
      continue;  // no window fits
    }
    // Few distinct values: many ties; some NaN and -inf.
    std::vector<float> xf(static_cast<std::size_t>(g.h.in * g.w.in));
    for (float& v : xf) {
      const auto r = pick(0, 19);
      v = r == 0 ? std::numeric_limits<float>::quiet_NaN()
                 : r == 1 ? -std::numeric_limits<float>::infinity() : static_cast<float>(r % 5);
    }
    std::vector<double> xd(xf.begin(), xf.end());
    std::vector<float> want;
    std::vector<std::int64_t> want_idx;
    naive_max_pool(xf, g, want, want_idx);

    const std::size_t n = want.size();
    std::vector<float> out_f(n), out_p(n);
    std::vector<double> out_d(n);
    std::vector<std::int64_t> idx_f(n), idx_p(n), idx_d(n);
    td::max_pool_forward(xf.data(), g, out_f.data(), idx_f.data());
    td::max_pool_forward_portable(xf.data(), g, out_p.data(), idx_p.data());
    td::max_pool_forward(xd.data(), g, out_d.data(), idx_d.data());
    INFO("H=" << g.h.in << " W=" << g.w.in << " kernel=" << kh << "x" << kw << " stride=" << g.h.stride
              << "," << g.w.stride << " pad=" << g.h.pad_begin << "," << g.w.pad_begin << " dilation="
              << g.h.dilation << "," << g.w.dilation << " ceil_mode=" << ceil_mode);
    CHECK(idx_f == want_idx);
    CHECK(idx_p == want_idx);
    CHECK(idx_d == want_idx);
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(same_value(out_f[i], want[i]));
      REQUIRE(same_value(out_p[i], want[i]));
      REQUIRE(same_value(out_d[i], want[i]));
    }
    ++checked;
  }
  CHECK(checked > 300);
}

TEST_CASE("max-pool kernels: a kernel too wide for the lane table takes the portable path", "[pool][kernels]") {
  // 70,000 taps in one window: the AVX-512 kernel's per-row table would need 70,000 entries.
  const td::PoolGeometry g = td::pool_geometry("max_pool2d", tapegrad::Shape{1, 1, 1, 70000}, {1, 70000},
                                               {1, 1}, {0, 0}, {1, 1}, false);
  std::vector<float> x(70000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 70001);
  float out = 0;
  std::int64_t index = -2;
  td::max_pool_forward(x.data(), g, &out, &index);
  const auto best = std::max_element(x.begin(), x.end());
  REQUIRE(out == *best);
  REQUIRE(index == best - x.begin());
}
