#pragma once
// Winograd F(2×2, 3×3) for f32 3×3 stride-1 convolutions (winograd.cpp): 16 multiplies per
// 2×2 output tile in place of 36, as 16 GEMMs over blocks of tiles.
#include "ops/kernels/conv.hpp"

namespace tapegrad::detail {

/// Whether the Winograd kernels serve g: one group, a 3×3 kernel, stride and dilation 1,
/// padding 0 or 1 on each side.
bool winograd_fits(const ConvGeometry& g);

/// y = conv2d(x, w) + b for the whole batch (b may be null); x: [N, C, H, W],
/// w: [O, C, 3, 3], y: [N, O, H_out, W_out] (overwritten). `parallel`: split the tiles
/// across OpenMP threads (each GEMM then runs on one thread).
void winograd_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                      bool parallel);

/// grad_x = conv2d's input gradient from grad_y: [N, O, H_out, W_out] (overwritten), the
/// 3×3 stride-1 convolution of grad_y with padding 2 - p and the weight rotated by 180° with
/// its channels swapped; plus grad_x_bias[c] (when non-null) on every element of channel c.
void winograd_input_grad(const ConvGeometry& g, const float* grad_y, const float* w, const float* grad_x_bias,
                         float* grad_x, bool parallel);

}  // namespace tapegrad::detail
