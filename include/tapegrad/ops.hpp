#pragma once
/// \file
/// The built-in differentiable ops. Every op here records itself when an input requires
/// grad and has an explicit VJP. Unless stated otherwise, floating inputs (f32, f64) of one
/// dtype are required: mixing dtypes throws DTypeError (convert with Tensor::to first).
#include <cstdint>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad {

// ---- element-wise, with NumPy broadcasting -------------------------------------------------
/// a + b; shapes broadcast like NumPy ([2, 1, 4] + [3, 1] -> [2, 3, 4]).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
/// With a number: the number takes the tensor's dtype.
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
/// b - a and b / a.
Tensor rsub(const Tensor& a, double b);
Tensor rdiv(const Tensor& a, double b);

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
/// Natural log; log(0) = -inf, log of a negative number is nan (as PyTorch).
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
/// x^exponent for a number exponent.
Tensor pow(const Tensor& x, double exponent);
/// |x|; its gradient at 0 is 0 (PyTorch's sign(0) = 0).
Tensor abs(const Tensor& x);
/// max(x, 0); gradient 0 at x = 0 (PyTorch's rule).
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
Tensor operator-(const Tensor& x);

// ---- linear algebra ----------------------------------------------------------------------
/// a: [M, K], b: [K, N] -> [M, N]; batched a: [B, M, K] with b: [B, K, N] or [K, N] -> [B, M, N].
Tensor matmul(const Tensor& a, const Tensor& b);
/// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out] = x·weightᵀ + bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- reductions ----------------------------------------------------------------------------
/// Sum of all elements: a 0-dim tensor.
Tensor sum(const Tensor& x);
/// Sum over `dims` (negative counts from the end); keepdim keeps them as size 1.
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);

/// Maximum along one dim and the (i64) index of its first occurrence; NaN counts as the
/// maximum (PyTorch's rule). The gradient goes to that first maximum only.
struct MaxResult {
  Tensor values;
  Tensor indices;
};
MaxResult max(const Tensor& x, std::int64_t dim, bool keepdim = false);

// ---- shapes -------------------------------------------------------------------------------
/// Same data, new shape (one size may be -1); shares storage with x.
Tensor reshape(const Tensor& x, const Shape& shape);
/// Merges dims start_dim..end_dim into one; shares storage with x.
Tensor flatten(const Tensor& x, std::int64_t start_dim = 0, std::int64_t end_dim = -1);
/// Swaps two dims (copies: tensors are always contiguous).
Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1);
/// Reorders the dims: output dim i is input dim dims[i].
Tensor permute(const Tensor& x, const std::vector<std::int64_t>& dims);

// ---- activations, losses -------------------------------------------------------------------
Tensor softmax(const Tensor& x, std::int64_t dim);
/// log(softmax(x)), computed stably as x - max - log(sum(exp(x - max))).
Tensor log_softmax(const Tensor& x, std::int64_t dim);

enum class Reduction { none, mean, sum };

/// logp: [N, C] log-probabilities, target: [N] i64 in [0, C) -> -logp[n, target[n]],
/// averaged (default), summed, or [N] with Reduction::none.
Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction = Reduction::mean);
/// nll_loss(log_softmax(logits, 1), target).
Tensor cross_entropy(const Tensor& logits, const Tensor& target,
                     Reduction reduction = Reduction::mean);
/// (a - b)^2, averaged (default), summed or element-wise; shapes must be equal.
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction = Reduction::mean);
/// Zeroes each element with probability p and scales the rest by 1/(1-p) when `train`;
/// the identity otherwise. Draws from the global generator (see manual_seed).
Tensor dropout(const Tensor& x, double p = 0.5, bool train = true);

}  // namespace tapegrad
