#pragma once
// A functional ResNet-18 for tests of the checker on a deep network: CIFAR stem (3×3 conv,
// no max-pool), four stages of two BasicBlocks (width w, 2w, 4w, 8w; stride 2 from the
// second stage, a 1×1 strided conv + batch norm on the shortcut where the shape changes),
// train-mode batch norm, ReLU, global average pool as mean over {2, 3}, a linear head.
// Convs have no bias, as torchvision's. Header-only, f64, seeded.
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tapegrad::testing {

struct ResNet18 {
  /// The op that adds a block's shortcut: tg::add, or a stand-in (a mutated op) for the
  /// block `odd_block` (counting from 0).
  using AddFn = std::function<Tensor(const Tensor&, const Tensor&)>;

  std::int64_t width = 8;
  std::int64_t classes = 10;
  std::vector<Tensor> params;  ///< in the order forward() reads them; params[0] is the stem conv
  AddFn odd_add;
  int odd_block = -1;

  explicit ResNet18(std::int64_t w = 8, std::uint64_t seed = 1) : width(w) {
    auto conv = [&](std::int64_t out, std::int64_t in, std::int64_t k) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(in * k * k));
      params.push_back(random_tensor({out, in, k, k}, seed++, -bound, bound));
    };
    auto norm = [&](std::int64_t c) {
      params.push_back(random_tensor({c}, seed++, 0.5, 1.5));
      params.push_back(random_tensor({c}, seed++, -0.1, 0.1));
    };
    conv(w, 3, 3);
    norm(w);
    std::int64_t in = w;
    for (std::int64_t stage = 0; stage < 4; ++stage) {
      const std::int64_t out = w << stage;
      for (int b = 0; b < 2; ++b) {
        const bool down = b == 0 && stage > 0;
        conv(out, in, 3);
        norm(out);
        conv(out, out, 3);
        norm(out);
        if (down) {
          conv(out, in, 1);
          norm(out);
        }
        in = out;
      }
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    params.push_back(random_tensor({classes, in}, seed++, -bound, bound));
    params.push_back(random_tensor({classes}, seed++, -bound, bound));
  }

  /// Logits [N, classes] for x: [N, 3, H, W], with the parameters `p` (same layout as params).
  Tensor forward(const Tensor& x, const std::vector<Tensor>& p) const {
    std::size_t i = 0;
    auto conv_bn = [&](const Tensor& h, std::int64_t stride, std::int64_t pad) {
      const Tensor& w = p[i++];
      const Tensor& gamma = p[i++];
      const Tensor& beta = p[i++];
      const Tensor c = conv2d(h, w, Tensor(), {.stride = {stride, stride}, .padding = {pad, pad}});
      return batch_norm2d(c, Tensor(), Tensor(), gamma, beta, true);
    };
    Tensor h = relu(conv_bn(x, 1, 1));
    int block = 0;
    for (std::int64_t stage = 0; stage < 4; ++stage) {
      for (int b = 0; b < 2; ++b, ++block) {
        const std::int64_t stride = b == 0 && stage > 0 ? 2 : 1;
        Tensor y = relu(conv_bn(h, stride, 1));
        y = conv_bn(y, 1, 1);
        const Tensor shortcut = stride == 2 ? conv_bn(h, 2, 0) : h;
        h = relu(block == odd_block ? odd_add(y, shortcut) : add(y, shortcut));
      }
    }
    return linear(mean(h, {2, 3}), p[i], p[i + 1]);
  }
};

}  // namespace tapegrad::testing
