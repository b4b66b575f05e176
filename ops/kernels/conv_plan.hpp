#pragma once
// How conv2d runs one geometry, decided once. A ConvPlan is computed from the geometry and
// the element size when conv2d's forward runs and is stored on the op; the forward, the VJP
// and the gradient ops (conv2d_input_grad, conv2d_weight_grad) read their paths, the
// saved-tensor layout and the batch split from it, and never choose again.
//
// The paths (per image and group, y_g = W_g · im2col(x_g)):
// - depthwise: one input channel per group (which includes a single input channel): direct
//   loops, no unfolding.
// - direct: f32 on an AVX-512 CPU, 8 to 16 outputs and at least 4 inputs per group and a 3-
//   or 5-wide kernel of width stride 1 (direct_conv.cpp): no unfolding. The weight gradient
//   takes its direct kernel also for up to 64 outputs per group on images of 1024 or more
//   output pixels.
// - winograd: f32 3×3 stride-1 convolutions of one group with enough channels
//   (winograd.cpp, the rule in conv_plan.cpp): the forward, the input gradient and the
//   weight gradient as Winograd F(2×2, 3×3) or F(4×4, 3×3) over the whole batch; no
//   unfolding.
// - banded: an image whose unfolded input exceeds about 1 MiB is unfolded a band of output
//   rows at a time, so the band stays in cache between im2col and its GEMMs.
// - gemm: small images unfolded in chunks side by side, so one GEMM covers several of them;
//   a 1×1, stride-1, unpadded kernel reads x itself as its unfolded input.
// The batch is split across OpenMP threads when it carries enough multiply-adds.
#include <array>
#include <cstddef>
#include <cstdint>

#include "ops/kernels/conv.hpp"
#include "ops/kernels/winograd.hpp"

namespace tapegrad::detail {

enum class ConvPath : std::uint8_t { depthwise, direct, winograd, banded, gemm };

struct ConvPlan {
  ConvGeometry g{};
  std::size_t elem = 0;  ///< bytes per element
  ConvPath forward = ConvPath::gemm, input_grad = ConvPath::gemm, weight_grad = ConvPath::gemm;
  WinogradTile winograd_tile = WinogradTile::f2;  ///< for the winograd paths
  bool parallel = false;  ///< split the batch across threads
  /// When the weight needs a gradient, the forward keeps the whole batch's unfolded input
  /// (in place of unfolding x again in the VJP): gemm paths that unfold in chunks, up to
  /// 16 MiB, whose forward unfolds too (not winograd). Not whole_batch plans: unfolding x
  /// again in their VJP measured no slower and lowers a training step's peak memory
  /// (ResNet-18, batch 32: 14 MB kept by its stride-2 convs, peak RSS 370-385 → 349-367 MB).
  bool keeps_unfolded = false;
  /// The weight-gradient GEMM computes grad_W_gᵀ [col_rows, group_out]: faster with the long
  /// side as its rows (16×150×1700: 45 → 76 GFLOP/s, 64×576×3136: 64 → 94; below 16 columns
  /// slower). The direct kernel writes this layout too.
  bool transposed_weight_grad = false;
  /// gemm-path images so small that a cache-sized chunk of them gives the GEMMs fewer than
  /// 256 columns (ResNet's deep layers), within kKeepUnfoldedBytes: the forward unfolds the
  /// whole batch into a workspace and runs one GEMM per group, and so does the weight
  /// gradient, from x unfolded whole in the VJP.
  bool whole_batch = false;
  std::int64_t band_rows = 0, bands = 1;  ///< output rows per band, bands per image

  ConvPlan() = default;
  ConvPlan(const ConvGeometry& geometry, std::size_t elem_size);

  /// The kept unfolded input: [groups, col_rows, batch · plane_out].
  std::array<std::int64_t, 3> kept_shape() const { return {g.groups, g.col_rows(), g.batch * g.plane_out()}; }
};

/// y = conv2d(x, w) + b (b may be null). When kept is non-null (plan.keeps_unfolded), the
/// unfolded input is written there, laid out as kept_shape().
template <class T>
void conv_forward(const ConvPlan& plan, const T* x, const T* w, const T* b, T* y, T* kept);

/// The raw gradients of y = conv2d(x, w): grad_x (when non-null) from grad_y and w, and
/// grad_w (when non-null) from grad_y and x, or the forward's kept unfolded input when
/// non-null. Both are overwritten, except grad_w with `add_w`, where it is added to.
/// grad_x_bias (when non-null, [channels]) is added to grad_x: conv_transpose2d's bias,
/// while each chunk is in cache.
template <class T>
void conv_backward(const ConvPlan& plan, const T* x, const T* kept, const T* w, const T* grad_y, T* grad_x,
                   T* grad_w, const T* grad_x_bias = nullptr, bool add_w = false);

/// conv_transpose2d's VJP: y = conv2d(x, w) and grad_w = conv2d's weight gradient for the
/// input x and the output gradient grad_y, each chunk of x unfolded once for both GEMMs (in
/// place of conv_forward and conv_backward unfolding it twice). Only plans whose forward
/// and weight gradient both take the chunked gemm path (not pointwise): returns false, and
/// does nothing, for any other.
template <class T>
bool conv_forward_weight_grad(const ConvPlan& plan, const T* x, const T* w, T* y, const T* grad_y, T* grad_w);

}  // namespace tapegrad::detail
