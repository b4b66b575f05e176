// Outputs too large to stay in cache (autograd/simd.hpp: kStreamBytes and up) are written
// with streaming stores: element-wise maps, cat, the copies of narrow/pad, clone. Each must
// equal the plain loop element for element, including the unaligned heads and the tails that
// do not fill a chunk; the helpers themselves are checked at every offset and length.
#include <cstdint>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "autograd/simd.hpp"
#include "support/numeric.hpp"

namespace tg = tapegrad;
using tg::Tensor;

namespace {

/// Elements of f32 just past the streaming threshold, not a whole number of chunks.
constexpr std::int64_t kLarge = tg::detail::kStreamBytes / 4 + 1000003;

template <class T>
std::vector<T> values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

}  // namespace

TEST_CASE("stream_copy and stream_map equal a plain copy at every alignment and length",
          "[streaming]") {
  std::vector<float> src(700);
  std::iota(src.begin(), src.end(), 1.0f);
  for (std::int64_t offset = 0; offset < 20; ++offset) {
    for (std::int64_t n : {0, 1, 15, 16, 17, 63, 64, 65, 129, 300, 640}) {
      std::vector<float> copied(700, -1.0f), mapped(700, -1.0f);
      tg::detail::stream_copy(src.data(), copied.data() + offset, n);
      tg::detail::stream_map(mapped.data() + offset, n, [&](std::int64_t i) { return 2 * src[i]; });
      tg::detail::stream_fence();
      for (std::int64_t i = 0; i < 700; ++i) {
        const bool inside = i >= offset && i < offset + n;
        INFO("offset " << offset << ", n " << n << ", i " << i);
        REQUIRE(copied[i] == (inside ? src[i - offset] : -1.0f));
        REQUIRE(mapped[i] == (inside ? 2 * src[i - offset] : -1.0f));
      }
    }
  }
  std::vector<double> wide(99, 0.5), out(100, 0.0);  // 8-byte elements, odd start
  tg::detail::stream_copy(wide.data(), out.data() + 1, 99);
  tg::detail::stream_fence();
  CHECK(out[0] == 0.0);
  for (std::size_t i = 1; i < 100; ++i) REQUIRE(out[i] == 0.5);
}

TEST_CASE("large element-wise outputs (streaming stores) equal the element-wise formula",
          "[streaming]") {
  const Tensor x = tg::randn({kLarge});
  const Tensor y = tg::randn({kLarge});
  const auto vx = values<float>(x), vy = values<float>(y);
  const auto lr = values<float>(tg::leaky_relu(x, 0.1));
  const auto scaled = values<float>(x * 2.5);
  const auto low = values<float>(tg::minimum(x, y));
  // A view starting one element in: the map reads from an unaligned address.
  const auto shifted = values<float>(tg::abs(tg::narrow(x, 0, 1, kLarge - 1)));
  Tensor acc = x.clone();  // clone streams too
  CHECK(values<float>(acc) == vx);
  acc.add_(y);
  const auto sum = values<float>(acc);
  std::int64_t wrong = 0;
  for (std::size_t i = 0; i < vx.size(); ++i) {
    const float v = vx[i], w = vy[i];
    wrong += lr[i] != (v > 0 ? v : static_cast<float>(0.1) * v);
    wrong += scaled[i] != v * 2.5f;
    wrong += low[i] != std::min(v, w);
    wrong += i > 0 && shifted[i - 1] != std::abs(v);
    wrong += sum[i] != v + w;
  }
  CHECK(wrong == 0);
}

TEST_CASE("large cat, narrow and pad outputs (streaming stores) equal the plain copies",
          "[streaming]") {
  const std::int64_t rows = 1031, cols = kLarge / 1031 / 2 + 7;  // rows of odd length
  const Tensor a = tg::randn({rows, cols}), b = tg::randn({rows, cols + 5});
  const auto va = values<float>(a), vb = values<float>(b);
  const auto at = [](const std::vector<float>& v, std::int64_t width, std::int64_t r, std::int64_t c) {
    return v[static_cast<std::size_t>(r * width + c)];
  };

  const Tensor joined = tg::cat({a, b}, 1);  // [rows, 2·cols + 5]: each row's pieces unaligned
  REQUIRE(joined.shape() == tg::Shape{rows, 2 * cols + 5});
  const auto vj = values<float>(joined);
  const auto vn = values<float>(tg::narrow(joined, 1, 3, 2 * cols));  // a copy of unaligned rows
  const auto vp = values<float>(tg::pad(a, {2, 1, 0, 0}, tg::PadMode::constant, 7.0));
  std::int64_t wrong = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < 2 * cols + 5; ++c) {
      const float expected = c < cols ? at(va, cols, r, c) : at(vb, cols + 5, r, c - cols);
      wrong += at(vj, 2 * cols + 5, r, c) != expected;
      wrong += c >= 3 && c < 3 + 2 * cols && at(vn, 2 * cols, r, c - 3) != expected;
    }
    for (std::int64_t c = 0; c < cols + 3; ++c) {
      wrong += at(vp, cols + 3, r, c) != (c < 2 || c >= cols + 2 ? 7.0f : at(va, cols, r, c - 2));
    }
  }
  CHECK(wrong == 0);
  const Tensor stacked = tg::cat({a, tg::narrow(b, 1, 0, cols)}, 0);
  CHECK(values<float>(tg::narrow(stacked, 0, 0, rows)) == va);
}
