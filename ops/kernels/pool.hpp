#pragma once
// Loops behind max_pool2d over (n, c) planes; max_pool2d.cpp parallelises over the planes.
#include <cstdint>

#include "ops/kernels/window.hpp"

namespace tapegrad::detail {

/// The forward of `planes` consecutive planes: out[oh, ow] = the maximum of the window's
/// elements inside the input, indices[oh, ow] = its flat index ih * W + iw within the plane.
/// Ties keep the first maximum in row-major window order; NaN wins, and a later NaN
/// replaces an earlier one. A window that dilation places entirely in the padding gives
/// -inf and index -1.
void max_pool_forward(const float* x, const PoolGeometry& g, float* out, std::int64_t* indices,
                      std::int64_t planes = 1);
void max_pool_forward(const double* x, const PoolGeometry& g, double* out, std::int64_t* indices,
                      std::int64_t planes = 1);
/// One plane without explicit AVX-512 (compiled per x86-64 level): what max_pool_forward
/// runs on CPUs without AVX-512, and for f64. Tests compare both.
void max_pool_forward_portable(const float* x, const PoolGeometry& g, float* out, std::int64_t* indices);
void max_pool_forward_portable(const double* x, const PoolGeometry& g, double* out, std::int64_t* indices);

/// One plane's VJP: grad_x = 0, then grad_x[indices[o]] += grad_out[o] for every output o.
void max_pool_backward(const float* grad_out, const std::int64_t* indices, const PoolGeometry& g,
                       float* grad_x);
void max_pool_backward(const double* grad_out, const std::int64_t* indices, const PoolGeometry& g,
                       double* grad_x);

}  // namespace tapegrad::detail
