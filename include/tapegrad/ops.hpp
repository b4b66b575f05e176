#pragma once
/// \file
/// The built-in differentiable ops. Every op here records itself when an input requires
/// grad and has an explicit VJP. Unless stated otherwise, floating inputs (f32, f64) of one
/// dtype are required: mixing dtypes throws DTypeError (convert with Tensor::to first).
#include <array>
#include <cstdint>
#include <optional>
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

/// Product of all elements (0-dim), or along one dim. Zeros included, with PyTorch's
/// gradient: each element gets the product of the others (so with one zero only that zero's
/// gradient is nonzero); with two or more zeros the gradient of prod(x) is 0 and not
/// differentiable again, as in PyTorch 1.13.
Tensor prod(const Tensor& x);
Tensor prod(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// Cumulative sum along dim: out[..., k, ...] = Σ_{i <= k} x[..., i, ...].
Tensor cumsum(const Tensor& x, std::int64_t dim);

/// Variance over `dims` (empty: every element) with Bessel's correction: Σ (x - mean)² /
/// max(0, N - correction); correction 1 is the unbiased estimate, 0 the population variance.
Tensor var(const Tensor& x, const std::vector<std::int64_t>& dims = {}, std::int64_t correction = 1,
           bool keepdim = false);
/// sqrt(var(x, dims, correction, keepdim)); its gradient is 0 where it is 0 (PyTorch's rule).
Tensor std(const Tensor& x, const std::vector<std::int64_t>& dims = {}, std::int64_t correction = 1,
           bool keepdim = false);
/// log Σ exp(x) over `dims` (empty: every element), stable for large x; an all -inf group
/// gives -inf (and a nan gradient, as PyTorch).
Tensor logsumexp(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
/// Maximum / minimum over `dims` (empty: every element). The gradient is split evenly among
/// tied extrema (PyTorch's rule for amax / amin); NaN propagates.
Tensor amax(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
/// i64 index of the first maximum / minimum along dim, or into the flattened x without a
/// dim; NaN counts as the extremum (PyTorch's rule). Not differentiable.
Tensor argmax(const Tensor& x, std::optional<std::int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<std::int64_t> dim = std::nullopt, bool keepdim = false);
/// p-norm over `dims` (empty: every element) for p = 1, 2 or infinity (pass
/// std::numeric_limits<double>::infinity()). Gradients at 0 as PyTorch's: 0 for p = 1 and 2;
/// for p = inf, sgn(x) split evenly among the tied maxima of |x|.
Tensor norm(const Tensor& x, double p = 2, const std::vector<std::int64_t>& dims = {},
            bool keepdim = false);

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

/// torch.nn.functional.nll_loss's options. weight: [C] per-class weights (a constant: not
/// differentiable, as in PyTorch) or undefined; rows whose target is ignore_index add nothing.
/// The mean is Σ weight[target[n]]·loss_n / Σ weight[target[n]] over the rows not ignored
/// (nan when all are ignored).
struct NllLossOptions {
  Tensor weight{};
  std::int64_t ignore_index = -100;
  Reduction reduction = Reduction::mean;
};
/// nll_loss with class weights and ignore_index: nll_loss(logp, target, {.weight = w, .ignore_index = 0}).
Tensor nll_loss(const Tensor& logp, const Tensor& target, const NllLossOptions& options);

/// torch.nn.functional.cross_entropy's options: those of nll_loss and label_smoothing ε in
/// [0, 1], which mixes in the uniform distribution: (1 - ε)·nll + ε/C·Σ_c -weight[c]·logp[n, c]
/// (the second term reduced with nll's weighted-mean divisor, PyTorch 1.13's formula).
struct CrossEntropyOptions {
  Tensor weight{};
  std::int64_t ignore_index = -100;
  Reduction reduction = Reduction::mean;
  double label_smoothing = 0.0;
};
/// logits: [N, C], target: [N] i64:
/// cross_entropy(logits, target, {.weight = w, .ignore_index = -1, .label_smoothing = 0.1}).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options);

/// |input - target| (gradient 0 where they are equal), reduced; shapes must be equal.
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
/// 0.5·d²/beta where |d| < beta, else |d| - 0.5·beta (d = input - target); beta >= 0.
/// beta = 0 is l1_loss except at d = 0, where the gradient is -1 (PyTorch 1.13's kernel).
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target,
                      Reduction reduction = Reduction::mean, double beta = 1.0);
/// 0.5·d² where |d| < delta, else delta·(|d| - 0.5·delta); delta > 0.
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean,
                  double delta = 1.0);
/// input: logits, target: probabilities, both of one shape:
/// weight·[(1 - t)·x + (1 + (pos_weight - 1)·t)·log(1 + e^-x)], computed stably for large |x|.
/// weight (broadcast to the input) and pos_weight (broadcast, e.g. [C] over [N, C]) are
/// optional constants; differentiable in input and target.
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        const Tensor& weight = Tensor(),
                                        const Tensor& pos_weight = Tensor(),
                                        Reduction reduction = Reduction::mean);

/// kl_div's reductions: PyTorch's names, including batchmean (the sum divided by the size of
/// dim 0, the mathematically correct KL divergence of a batch) besides mean (÷ numel).
enum class KlDivReduction { none, batchmean, sum, mean };
/// input: log-probabilities; target: probabilities (log-probabilities with log_target):
/// target·(log target - input), 0 where target = 0; or exp(target)·(target - input).
Tensor kl_div(const Tensor& input, const Tensor& target,
              KlDivReduction reduction = KlDivReduction::mean, bool log_target = false);
/// (a - b)^2, averaged (default), summed or element-wise; shapes must be equal.
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction = Reduction::mean);
/// Zeroes each element with probability p and scales the rest by 1/(1-p) when `train`;
/// the identity otherwise. Draws from the global generator (see manual_seed).
Tensor dropout(const Tensor& x, double p = 0.5, bool train = true);

// ---- convolution and pooling -----------------------------------------------------------------

/// How conv2d pads: by `padding`, or PyTorch's padding='same' (stride 1; an odd total
/// padding puts the extra row/column at the bottom/right) or 'valid' (no padding).
enum class ConvPadding { explicit_sizes, same, valid };

struct Conv2dOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::explicit_sizes;
};

/// 2-D cross-correlation (not flipped), as torch.nn.functional.conv2d.
/// x: [N, C, H, W] (or [C, H, W]), weight: [O, C/groups, kh, kw], bias: [O] or undefined
/// -> [N, O, OH, OW] with OH = (H + 2·pad - dilation·(kh-1) - 1)/stride + 1 (floor).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

struct MaxPool2dOptions {
  std::array<std::int64_t, 2> kernel_size{2, 2};
  /// Empty ({} or {0, 0}) means "= kernel_size" (PyTorch's default).
  std::array<std::int64_t, 2> stride{};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  bool ceil_mode = false;
};

/// Max over each window of x: [N, C, H, W] (or [C, H, W]). Padding is never selected; ties go
/// to the first maximum in row-major window order; NaN wins. padding <= kernel/2.
Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& options = {});

struct MaxPoolResult {
  Tensor values;
  Tensor indices;  ///< i64, flat h*W + w within each (n, c) plane, as PyTorch returns them
};
MaxPoolResult max_pool2d_with_indices(const Tensor& x, const MaxPool2dOptions& options = {});

struct AvgPool2dOptions {
  std::array<std::int64_t, 2> kernel_size{2, 2};
  /// Empty ({} or {0, 0}) means "= kernel_size".
  std::array<std::int64_t, 2> stride{};
  std::array<std::int64_t, 2> padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;
  std::optional<std::int64_t> divisor_override{};
};

/// Mean over each window, with PyTorch's divisor rules (count_include_pad counts padding
/// inside the padded input, never the part of a ceil_mode window past it; divisor_override
/// replaces the count).
Tensor avg_pool2d(const Tensor& x, const AvgPool2dOptions& options = {});

// ---- normalisation ---------------------------------------------------------------------------

/// Batch normalisation of x: [N, C, H, W] per channel, as torch.nn.functional.batch_norm:
/// y = (x - mean_c) / sqrt(var_c + eps) · weight_c + bias_c. With `training`, mean and
/// (biased) var come from the batch, and running_mean/running_var ([C], when defined) are
/// updated in place: running = (1 - momentum)·running + momentum·batch statistic, using the
/// unbiased variance. Without `training` the running statistics are used (and required).
/// weight and bias: [C] or undefined (no affine transform). Differentiable in x, weight, bias.
Tensor batch_norm2d(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                    bool training = false, double momentum = 0.1, double eps = 1e-5);

}  // namespace tapegrad
