#pragma once
// Winograd F(2×2, 3×3) and F(4×4, 3×3) for f32 3×3 stride-1 convolutions (winograd.cpp):
// 16 multiplies per 2×2 output tile in place of 36, as 16 GEMMs over blocks of tiles, or 36
// per 4×4 tile in place of 144, as 36 GEMMs; the forward and both gradients.
#include "ops/kernels/conv.hpp"

namespace tapegrad::detail {

/// The output tile: F(2×2, 3×3) or F(4×4, 3×3) (less exact in f32: see winograd.cpp).
enum class WinogradTile : std::uint8_t { f2 = 2, f4 = 4 };

/// Whether the Winograd kernels serve g: one group, a 3×3 kernel, stride and dilation 1,
/// padding 0 or 1 on each side.
bool winograd_fits(const ConvGeometry& g);

/// The tile for g: F(4×4, 3×3) where the batch gives at least 128 of its 4×4 tiles (the
/// block size below which the GEMMs run far from their peak, winograd.cpp), else F(2×2).
/// ResNet-18's layers, batch 32, kernel level on Zen 4 (medians of 9, F(2×2) → F(4×4) ms,
/// forward | input gradient):
///   1 thread:  64@32² 23.0 → 17.4 | 23.0 → 17.7;  128@16² 17.7 → 14.1 | 17.9 → 14.4;
///              256@8² 23.9 → 20.2 | 22.9 → 20.1;  512@4² (32 tiles) 24.5 → 36.2 | 25.2 → 36.9
///   2 threads: 64@32² 11.6 → 9.7 | 11.0 → 9.6;    128@16² 9.1 → 7.3 | 8.9 → 8.4;
///              256@8² 10.4 → 8.4 | 10.1 → 8.4;    512@4² 12.5 → 20.2 | 12.9 → 19.7
/// (At 4² each image is one 4×4 tile: 36 GEMMs of 32 columns, each reading its 1 MiB of U.)
WinogradTile winograd_tile_for(const ConvGeometry& g);

/// y = conv2d(x, w) + b for the whole batch (b may be null); x: [N, C, H, W],
/// w: [O, C, 3, 3], y: [N, O, H_out, W_out] (overwritten). `parallel`: split the tiles
/// across OpenMP threads (each GEMM then runs on one thread).
void winograd_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                      WinogradTile tile, bool parallel);

/// grad_x = conv2d's input gradient from grad_y: [N, O, H_out, W_out] (overwritten), the
/// 3×3 stride-1 convolution of grad_y with padding 2 - p and the weight rotated by 180° with
/// its channels swapped; plus grad_x_bias[c] (when non-null) on every element of channel c.
void winograd_input_grad(const ConvGeometry& g, const float* grad_y, const float* w, const float* grad_x_bias,
                         float* grad_x, WinogradTile tile, bool parallel);

/// grad_w = conv2d's weight gradient for the input x and the output gradient grad_y:
/// [O, C, 3, 3], overwritten, or added to with `add`. `parallel`: split the transforms'
/// channels and the GEMMs across OpenMP threads. In place of the direct kernel (64@32²) and
/// the whole-batch unfolding GEMM, ResNet-18's layers' forward + backward on Zen 4 (two
/// interleaved rounds, ms): 1 thread 64@32² 49 → 38, 128@16² 45-47 → 31-32, 256@8² 51-52 →
/// 36, 512@4² 62-65 → 53-54; 2 threads 27-28 → 27, 28 → 16-24, 35-36 → 25, 41 → 33-35.
void winograd_weight_grad(const ConvGeometry& g, const float* x, const float* grad_y, float* grad_w, bool add,
                          WinogradTile tile, bool parallel);

}  // namespace tapegrad::detail
