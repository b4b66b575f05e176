#pragma once
// Loops behind conv2d: im2col / col2im, and the direct depthwise kernel. Each works on
// one image (one n) and one group; conv_plan.cpp chooses among them and parallelises over
// the batch.
#include <cstdint>

#include "ops/kernels/window.hpp"

namespace tapegrad::detail {

struct ConvGeometry {
  std::int64_t batch = 0, channels = 0, out_channels = 0, groups = 1;
  Axis h, w;
  std::int64_t group_in() const { return channels / groups; }
  std::int64_t group_out() const { return out_channels / groups; }
  std::int64_t plane_in() const { return h.in * w.in; }
  std::int64_t plane_out() const { return h.out * w.out; }
  /// Rows of the unfolded input of one group: (c, ki, kj) triples.
  std::int64_t col_rows() const { return group_in() * h.kernel * w.kernel; }
  /// One input channel per group: depthwise, or a single input channel (the direct
  /// depthwise kernels, with output channels per input channel = group_out()).
  bool depthwise() const { return group_in() == 1; }
  /// 1×1 kernel, stride 1, no padding: the input already is its own im2col.
  bool pointwise() const {
    return h.kernel == 1 && w.kernel == 1 && h.stride == 1 && w.stride == 1 &&
           h.pad_begin == 0 && h.pad_end == 0 && w.pad_begin == 0 && w.pad_end == 0;
  }
  /// The windows tile the input: kernel = stride, no padding, dilation 1 and in = out ·
  /// stride on both axes (conv_transpose2d's k2 s2 upsampling). im2col then only reorders x
  /// and every element of x lies in exactly one window.
  bool tiles() const {
    const auto tiled = [](const Axis& a) {
      return a.kernel == a.stride && a.pad_begin == 0 && a.pad_end == 0 && a.dilation == 1 && a.in == a.out * a.stride;
    };
    return tiled(h) && tiled(w);
  }
};

/// col[(c, ki, kj), (oh, ow)] = x[c, ih, iw] (0 in the padding), for `channels` channels.
/// Row r of col starts at col + r * ld (ld >= plane_out: several images can sit side by side).
void im2col(const float* x, const ConvGeometry& g, std::int64_t channels, float* col, std::int64_t ld);
void im2col(const double* x, const ConvGeometry& g, std::int64_t channels, double* col, std::int64_t ld);

/// The adjoint of im2col: x[c, ih, iw] += col[(c, ki, kj), (oh, ow)] over every window
/// reading (ih, iw). Elements no window reads are left untouched.
void col2im(const float* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, float* x);
void col2im(const double* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, double* x);

/// For a tiling geometry (g.tiles()): im2col, a reorder of x, and the fold that writes
/// x[c, ih, iw] = col[(c, ki, kj), (oh, ow)] (no sum: each element has one window). im2col
/// takes unfold_tiles itself; col2im's callers take fold_tiles and skip zeroing x.
void unfold_tiles(const float* x, const ConvGeometry& g, std::int64_t channels, float* col, std::int64_t ld);
void unfold_tiles(const double* x, const ConvGeometry& g, std::int64_t channels, double* col, std::int64_t ld);
void fold_tiles(const float* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, float* x);
void fold_tiles(const double* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, double* x);

/// The same without explicit AVX-512 (compiled per x86-64 level): what im2col and col2im
/// run on CPUs without AVX-512, and for f64. Tests compare both.
void im2col_portable(const float* x, const ConvGeometry& g, std::int64_t channels, float* col, std::int64_t ld);
void im2col_portable(const double* x, const ConvGeometry& g, std::int64_t channels, double* col, std::int64_t ld);
void col2im_portable(const float* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, float* x);
void col2im_portable(const double* col, std::int64_t ld, const ConvGeometry& g, std::int64_t channels, double* x);

/// Depthwise (one input channel per group): out[o] = bias[o] + Σ_taps x[o / mult] * w[o]
/// directly, for one image (bias may be null). `mult` = output channels per input channel.
void depthwise_forward(const float* x, const float* w, const float* bias, const ConvGeometry& g, float* out);
void depthwise_forward(const double* x, const double* w, const double* bias, const ConvGeometry& g, double* out);

/// The same without explicit AVX-512 (compiled per x86-64 level): what the two functions
/// above and below run on CPUs without AVX-512, and for f64. Tests compare both.
void depthwise_forward_portable(const float* x, const float* w, const float* bias, const ConvGeometry& g,
                                float* out);
void depthwise_forward_portable(const double* x, const double* w, const double* bias, const ConvGeometry& g,
                                double* out);

/// Depthwise VJP for one image: grad_x (if non-null) = Σ grad_out * w (overwritten), and
/// grad_w (if non-null) += Σ grad_out * x.
void depthwise_backward(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                        float* grad_x, float* grad_w);
void depthwise_backward(const double* x, const double* w, const double* grad_out, const ConvGeometry& g,
                        double* grad_x, double* grad_w);
void depthwise_backward_portable(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                                 float* grad_x, float* grad_w);
void depthwise_backward_portable(const double* x, const double* w, const double* grad_out,
                                 const ConvGeometry& g, double* grad_x, double* grad_w);

/// The depthwise kernels for AVX2 + FMA (depthwise_avx2.cpp): what the two functions
/// above run on CPUs without AVX-512 (and the backward at stride > 1 on CPUs with it).
/// depthwise_avx2_fits(g): the CPU has AVX2 and FMA and g's padded copies stay small.
bool depthwise_avx2_fits(const ConvGeometry& g);
void depthwise_forward_avx2(const float* x, const float* w, const float* bias, const ConvGeometry& g, float* out);
void depthwise_backward_avx2(const float* x, const float* w, const float* grad_out, const ConvGeometry& g,
                             float* grad_x, float* grad_w);

/// Direct convolution with the output channels in the vector lanes (AVX-512, f32; see
/// direct_conv.cpp): whether conv2d takes it for g (8 to 16 outputs and at least 4 inputs
/// per group, width stride and dilation 1, a 3- or 5-wide kernel, on a CPU with AVX-512).
/// The two kernels themselves serve any group of at most 16 outputs on such a CPU.
bool direct_conv_fits(const ConvGeometry& g);
/// out = bias + conv(x) for one image (bias may be null); wt is the weight transposed per
/// group and padded to 16 lanes: [groups][col_rows][16], zero beyond group_out.
void direct_conv_forward(const float* x, const float* wt, const float* bias, const ConvGeometry& g, float* out);
/// Whether conv2d takes direct_conv_weight_grad for g: as direct_conv_fits, and also for 17
/// to 64 outputs per group (16 at a time) on images of 1024 output pixels or more.
bool direct_weight_grad_fits(const ConvGeometry& g);
/// grad_wt[gi][(c, ki, kj)][o] += Σ grad_out · x for one image: the weight gradient
/// transposed per group, [groups][col_rows][group_out].
void direct_conv_weight_grad(const float* x, const float* grad_out, const ConvGeometry& g, float* grad_wt);

/// The bias gradient of one image: grad_b[o] += Σ_plane grad_out[o] for `channels` planes.
void bias_grad(const float* grad_out, std::int64_t channels, std::int64_t plane, float* grad_b);
void bias_grad(const double* grad_out, std::int64_t channels, std::int64_t plane, double* grad_b);

}  // namespace tapegrad::detail
