#pragma once
// ResNet-18 as bench_resnet18 and its libtorch twin build it (issue 17): CIFAR stem (3x3 conv
// 3->64, no max-pool), four stages of two BasicBlocks (64, 128, 256, 512 channels; stride 2
// and a 1x1 conv + batch norm shortcut at the start of stages 2-4), train-mode batch norm,
// ReLU, global average pool as mean over {2, 3}, linear 512->10; convs without bias. Batch
// 32 of 3x32x32, cross-entropy, SGD lr 0.01 momentum 0.9. Also the distinct conv shapes of
// that network, timed one by one, and an FMA-peak loop that gives each GFLOP/s figure a
// fraction of what this host can do.
#include <array>
#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bench {

inline constexpr std::int64_t kResNetBatch = 32;

struct ResNetConv {
  const char* name;
  std::int64_t c, hw, o, k, stride, pad;  // input [kResNetBatch, c, hw, hw]
};

/// Each distinct conv shape of ResNet-18 on 32x32 inputs, with how often the step runs it.
struct ResNetConvRow {
  ResNetConv conv;
  int count;
};

inline constexpr std::array<ResNetConvRow, 11> kResNetConvs{{
    {{"resnet_stem_3to64_32", 3, 32, 64, 3, 1, 1}, 1},
    {{"resnet_64to64_32", 64, 32, 64, 3, 1, 1}, 4},
    {{"resnet_64to128_32_s2", 64, 32, 128, 3, 2, 1}, 1},
    {{"resnet_128to128_16", 128, 16, 128, 3, 1, 1}, 3},
    {{"resnet_short_64to128_s2", 64, 32, 128, 1, 2, 0}, 1},
    {{"resnet_128to256_16_s2", 128, 16, 256, 3, 2, 1}, 1},
    {{"resnet_256to256_8", 256, 8, 256, 3, 1, 1}, 3},
    {{"resnet_short_128to256_s2", 128, 16, 256, 1, 2, 0}, 1},
    {{"resnet_256to512_8_s2", 256, 8, 512, 3, 2, 1}, 1},
    {{"resnet_512to512_4", 512, 4, 512, 3, 1, 1}, 3},
    {{"resnet_short_256to512_s2", 256, 8, 512, 1, 2, 0}, 1},
}};

inline std::int64_t out_size(const ResNetConv& c) { return (c.hw + 2 * c.pad - c.k) / c.stride + 1; }

/// Multiply-adds x 2 of one forward of `c`.
inline double flops(const ResNetConv& c) {
  const double o = static_cast<double>(out_size(c));
  return 2.0 * static_cast<double>(kResNetBatch * c.o * c.c * c.k * c.k) * o * o;
}

/// f32 FMA throughput of one thread in GFLOP/s: 12 independent chains of 8-wide FMAs (two
/// FMA ports x a latency of 4-5 cycles need at least 10), long enough to time.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline float fma_loop(std::int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}
inline constexpr double kFmaLoopFlops = 12 * 8 * 2;  // per iteration
#endif

}  // namespace bench
