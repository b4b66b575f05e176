#pragma once
// The rows of the conv/pool benchmark table (issue: conv2d, max_pool2d and avg_pool2d),
// shared by the tapegrad benchmark and its libtorch twin so both time the same work.
#include <array>
#include <cstdint>

namespace bench {

struct ConvCase {
  const char* name;
  std::int64_t n, c, h, w, o, k, stride, pad, groups;
};

inline constexpr std::array<ConvCase, 5> kConvCases{{
    {"lenet_conv1", 64, 1, 28, 28, 6, 5, 1, 2, 1},
    {"lenet_conv2", 64, 6, 14, 14, 16, 5, 1, 0, 1},
    {"conv_64x56x56_3x3", 32, 64, 56, 56, 64, 3, 1, 1, 1},
    {"conv_128x28x28_to256_3x3_s2", 32, 128, 28, 28, 256, 3, 2, 1, 1},
    {"depthwise_128x28x28_3x3", 32, 128, 28, 28, 128, 3, 1, 1, 128},
}};

struct PoolCase {
  const char* name;
  std::int64_t n, c, h, w, k, stride, pad;
};

inline constexpr std::array<PoolCase, 2> kPoolCases{{
    {"max_pool_2x2_s2_64x6x28x28", 64, 6, 28, 28, 2, 2, 0},
    {"max_pool_3x3_s2_p1_32x64x112x112", 32, 64, 112, 112, 3, 2, 1},
}};

/// conv_transpose2d on U-Net decoder shapes (issue 15): x [n, c, h, w] -> o channels.
struct ConvTransposeCase {
  const char* name;
  std::int64_t n, c, h, w, o, k, stride, pad;
  std::int64_t out(std::int64_t in) const { return (in - 1) * stride - 2 * pad + k; }
};

inline constexpr std::array<ConvTransposeCase, 2> kConvTransposeCases{{
    {"conv_transpose_unet_32x128x28x28_to64_k2s2", 32, 128, 28, 28, 64, 2, 2, 0},
    {"conv_transpose_unet_32x128x28x28_to64_k3s1p1", 32, 128, 28, 28, 64, 3, 1, 1},
}};

/// Each input element times each tap of each output channel: 2·n·c·h·w·o·k².
inline double conv_transpose_flops(const ConvTransposeCase& c) {
  return 2.0 * static_cast<double>(c.n * c.c * c.h * c.w) * static_cast<double>(c.o * c.k * c.k);
}

inline double conv_flops(const ConvCase& c) {
  const double oh = static_cast<double>((c.h + 2 * c.pad - c.k) / c.stride + 1);
  const double ow = static_cast<double>((c.w + 2 * c.pad - c.k) / c.stride + 1);
  return 2.0 * static_cast<double>(c.n * c.o) * oh * ow * static_cast<double>(c.c / c.groups * c.k * c.k);
}

}  // namespace bench
