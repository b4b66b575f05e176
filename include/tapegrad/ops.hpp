#pragma once
/// \file
/// The built-in differentiable ops. Every op here records itself when an input requires
/// grad and has an explicit VJP. Unless stated otherwise, floating inputs (f32, f64) of one
/// dtype are required: mixing dtypes throws DTypeError (convert with Tensor::to first).
#include <array>
#include <cstdint>
#include <optional>
#include <tuple>
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
/// log(1 + x), accurate for small |x|.
Tensor log1p(const Tensor& x);
/// e^x - 1, accurate for small |x|.
Tensor expm1(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor erf(const Tensor& x);
/// 1 / sqrt(x).
Tensor rsqrt(const Tensor& x);
/// -1, 0 or 1 (0 for 0 and, as PyTorch 1.13, for NaN); its gradient is 0 everywhere.
Tensor sign(const Tensor& x);
/// Its gradient is 0 everywhere (PyTorch's rule, also at the integers).
Tensor floor(const Tensor& x);
/// Rounds half to even (2.5 -> 2, as PyTorch); its gradient is 0 everywhere.
Tensor round(const Tensor& x);
/// min(max(x, min), max) with either bound optional (both absent throws ValueError); with
/// min > max every element is max (PyTorch's rule). The gradient passes where
/// min <= x <= max, bounds included, and is 0 elsewhere (NaN included).
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max = {});
/// Element-wise min/max of a and b with broadcasting; where a = b each gets half the gradient
/// (PyTorch 1.13's rule); a NaN operand wins.
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
/// a^b with broadcasting. As PyTorch: d/da = b·a^(b-1), 0 where b = 0; d/db = a^b·log(a),
/// 0 where a = 0 and b >= 0 (so a negative base gives a NaN exponent gradient).
Tensor pow(const Tensor& a, const Tensor& b);

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
/// torch.matmul: a [..., M, K], b [..., K, N] -> [..., M, N], the batch dims (all but the last
/// two) broadcast as NumPy does ([2, 1, M, K]·[5, K, N] -> [2, 5, M, N]). A 1-D a is [1, K] and a
/// 1-D b is [K, 1], that dim left out of the result: [K]·[K] -> [] (dot), [M, K]·[K] -> [M],
/// [K]·[..., K, N] -> [..., N]. Both operands need at least 1 dim.
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

// ---- joining, slicing and indexing (PyTorch 1.13 semantics; any dtype unless stated) ------------
/// Concatenates along `dim` (negative counts from the end). All tensors need one dtype and
/// one shape apart from `dim`; as in PyTorch, 1-D empty tensors ([0]) are skipped.
Tensor cat(const std::vector<Tensor>& tensors, std::int64_t dim = 0);
/// Joins tensors of one shape along a new dim `dim` (in [-rank-1, rank]).
Tensor stack(const std::vector<Tensor>& tensors, std::int64_t dim = 0);
/// x[start:end:step] along `dim`, as Python slicing: a negative bound counts from the end,
/// bounds then clamp to [0, size], end <= start is empty; step > 0. Unset bounds: the ends.
Tensor slice(const Tensor& x, std::int64_t dim = 0, std::optional<std::int64_t> start = {},
             std::optional<std::int64_t> end = {}, std::int64_t step = 1);
/// x[start : start + length] along `dim`; start may be negative (from the end). No clamping:
/// out-of-range bounds throw.
Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length);
/// x[index] along `dim`, which is removed; index in [-size, size).
Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index);
/// Parts of split_size along `dim` (the last may be shorter).
std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim = 0);
/// Parts of the given sizes along `dim`, which must add up to its size.
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& split_sizes,
                          std::int64_t dim = 0);
/// Parts of ceil(size / chunks) along `dim` (so possibly fewer than `chunks`).
std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim = 0);
/// select(x, dim, i) for every i.
std::vector<Tensor> unbind(const Tensor& x, std::int64_t dim = 0);
/// index: i64, 1-D (or 0-D), values in [0, size of dim) -> x with dim resized to index's length.
/// Repeated indices accumulate their gradients.
Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index);
/// out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and so on): index is i64, has x's rank,
/// index.size(d) <= x.size(d) for d != dim, values in [0, x.size(dim)); out has index's shape.
Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index);
/// x with src[i][j][k] added into out[index[i][j][k]][j][k] (dim 0; and so on). x, index and
/// src have one rank; index.size(d) <= src.size(d) for all d and <= x.size(d) for d != dim.
/// Differentiable in x and src.
Tensor scatter_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src);
/// weight[ids]: ids i64 of any shape, weight [num_embeddings, dim] -> [*ids.shape, dim].
/// Repeated ids accumulate gradient; the row padding_idx (in [-num, num); negative counts
/// from the end) gets none.
Tensor embedding(const Tensor& ids, const Tensor& weight,
                 std::optional<std::int64_t> padding_idx = {});

// ---- reshaping and rearranging (PyTorch 1.13 semantics; any dtype unless stated) --------------
/// Inserts a dim of size 1 at `dim` (in [-rank-1, rank]); shares storage.
Tensor unsqueeze(const Tensor& x, std::int64_t dim);
/// Removes every dim of size 1; shares storage.
Tensor squeeze(const Tensor& x);
/// Removes `dim` if its size is 1 (otherwise returns x's shape unchanged); shares storage.
Tensor squeeze(const Tensor& x, std::int64_t dim);
/// Repeats size-1 dims (and new leading dims) to `sizes`; -1 keeps a dim's size.
Tensor expand(const Tensor& x, const Shape& sizes);
/// expand(x, shape).
Tensor broadcast_to(const Tensor& x, const Shape& shape);
/// Tiles x `repeats[d]` times along each dim; repeats may have more dims than x (new
/// leading dims).
Tensor repeat(const Tensor& x, const std::vector<std::int64_t>& repeats);
/// Reverses the order along each of `dims`.
Tensor flip(const Tensor& x, const std::vector<std::int64_t>& dims);
/// Shifts circularly by shifts[i] along dims[i]; with no dims, rolls the flattened tensor
/// by its one shift.
Tensor roll(const Tensor& x, const std::vector<std::int64_t>& shifts,
            const std::vector<std::int64_t>& dims = {});

enum class PadMode { constant, reflect, replicate, circular };
/// torch.nn.functional.pad: `pad` lists (before, after) pairs starting from the LAST dim.
/// constant: any rank, pairs <= rank, negative pads crop, filled with `value`. reflect,
/// replicate, circular: one, two or three pairs on inputs of rank 2-3, 3-4 or 4-5, value 0;
/// reflect needs pad < size, circular pad <= size.
Tensor pad(const Tensor& x, const std::vector<std::int64_t>& pad, PadMode mode = PadMode::constant,
           double value = 0.0);
/// The lower triangle of the last two dims: keeps x[..., i, j] where j - i <= diagonal.
Tensor tril(const Tensor& x, std::int64_t diagonal = 0);
/// The upper triangle: keeps x[..., i, j] where j - i >= diagonal.
Tensor triu(const Tensor& x, std::int64_t diagonal = 0);

// ---- activations, losses -------------------------------------------------------------------
enum class GeluApproximate { none, tanh };
/// x·Φ(x) with Φ the standard normal CDF; GeluApproximate::tanh uses
/// 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
Tensor gelu(const Tensor& x, GeluApproximate approximate = GeluApproximate::none);
/// x·sigmoid(x).
Tensor silu(const Tensor& x);
/// x where x > 0, negative_slope·x elsewhere (gradient negative_slope at 0, as PyTorch).
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
/// x where x > 0, alpha·(e^x - 1) elsewhere (gradient alpha at 0, as PyTorch).
Tensor elu(const Tensor& x, double alpha = 1.0);
/// log(1 + e^(beta·x)) / beta, and x itself where beta·x > threshold.
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);
/// clamp(x, min_val, max_val); the gradient passes only strictly inside (min_val, max_val),
/// as PyTorch (0 for NaN). min_val > max_val throws ValueError (F.hardtanh would return max_val).
Tensor hardtanh(const Tensor& x, double min_val = -1.0, double max_val = 1.0);
/// log(sigmoid(x)) = -softplus(-x), computed without overflow.
Tensor log_sigmoid(const Tensor& x);
/// Gated linear unit: a·sigmoid(b), with a and b the first and second half of x along dim
/// (its size must be even): [..., 2h, ...] -> [..., h, ...].
Tensor glu(const Tensor& x, std::int64_t dim = -1);
Tensor softmax(const Tensor& x, std::int64_t dim);
/// log(softmax(x)), computed stably as x - max - log(sum(exp(x - max))).
Tensor log_softmax(const Tensor& x, std::int64_t dim);

enum class Reduction { none, mean, sum };

/// logp: [N, C, d1, ..., dk] log-probabilities along dim 1 (k >= 0), target: [N, d1, ..., dk]
/// i64 in [0, C) -> -logp[n, target[n, ...], ...], averaged (default), summed, or of target's
/// shape with Reduction::none. An unbatched logp [C] takes a 0-dim target (PyTorch's rule).
Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction = Reduction::mean);
/// nll_loss(log_softmax(logits, 1), target) (dim 0 for unbatched logits [C]).
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
/// logits: [N, C, d1, ..., dk] or [C], target: [N, d1, ..., dk] or [] i64:
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

// ---- masks: comparisons, logical ops and where ----------------------------------------------
/// Element-wise comparisons -> bool, with NumPy broadcasting: two tensors of one dtype (any
/// dtype), or a tensor and a number (converted to the tensor's dtype when it is floating).
/// NaN compares false, except in ne. No gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, double b);
/// Logical ops -> bool on any dtypes (nonzero is true), with broadcasting. No gradient.
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_xor(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& x);
/// a where the bool `condition` holds, b elsewhere; the three broadcast together. a and b
/// share a dtype; differentiable in a and b (the gradient follows the condition).
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& condition, const Tensor& a, double b);
Tensor where(const Tensor& condition, double a, const Tensor& b);
/// x with `value` where the bool mask (broadcast with x) holds: where(mask, value, x).
/// value: a number, or a 0-dim tensor of x's dtype (differentiable).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
Tensor masked_fill(const Tensor& x, const Tensor& mask, const Tensor& value);
/// The indices (i64) that sort x along dim, stably (equal values keep their order, in both
/// directions); NaN sorts above every number. No gradient.
Tensor argsort(const Tensor& x, std::int64_t dim = -1, bool descending = false);
/// indices (i64, in [0, num_classes)) -> i64 [..., num_classes] with a 1 at each index;
/// num_classes = -1 takes the largest index + 1.
Tensor one_hot(const Tensor& indices, std::int64_t num_classes = -1);

// ---- convolution and pooling -----------------------------------------------------------------

/// How conv2d pads: by `padding`, or PyTorch's padding='same' (stride 1; an odd total
/// padding puts the extra row/column at the bottom/right) or 'valid' (no padding).
enum class ConvPadding { explicit_sizes, same, valid };

/// A pair of sizes (height, width) written as one number (`.stride = 2` is {2, 2}) or two
/// (`.stride = {2, 1}`), as PyTorch's int-or-tuple arguments. It is a std::array of 2.
struct Size2 : std::array<std::int64_t, 2> {
  constexpr Size2() : std::array<std::int64_t, 2>{0, 0} {}
  constexpr Size2(std::int64_t v) : std::array<std::int64_t, 2>{v, v} {}  // NOLINT: implicit on purpose
  constexpr Size2(std::int64_t h, std::int64_t w) : std::array<std::int64_t, 2>{h, w} {}
  constexpr Size2(const std::array<std::int64_t, 2>& v) : std::array<std::int64_t, 2>(v) {}  // NOLINT
};

/// The options of conv2d and of nn::Conv2d (one type for both).
struct Conv2dOptions {
  Size2 stride{1, 1};
  Size2 padding{0, 0};
  Size2 dilation{1, 1};
  std::int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::explicit_sizes;
  /// nn::Conv2d: whether the layer has a bias parameter. The functional conv2d takes the bias
  /// tensor itself and throws ValueError when one is given with `bias = false`.
  bool bias = true;
};

/// 2-D cross-correlation (not flipped), as torch.nn.functional.conv2d.
/// x: [N, C, H, W] (or [C, H, W]), weight: [O, C/groups, kh, kw], bias: [O] or undefined
/// -> [N, O, OH, OW] with OH = (H + 2·pad - dilation·(kh-1) - 1)/stride + 1 (floor).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

/// The options of max_pool2d and of nn::MaxPool2d.
struct MaxPool2dOptions {
  Size2 kernel_size{2, 2};
  /// Empty ({} or {0, 0}) means "= kernel_size" (PyTorch's default).
  Size2 stride{};
  Size2 padding{0, 0};
  Size2 dilation{1, 1};
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

/// The options of avg_pool2d and of nn::AvgPool2d.
struct AvgPool2dOptions {
  Size2 kernel_size{2, 2};
  /// Empty ({} or {0, 0}) means "= kernel_size".
  Size2 stride{};
  Size2 padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;
  std::optional<std::int64_t> divisor_override{};
};

/// Mean over each window, with PyTorch's divisor rules (count_include_pad counts padding
/// inside the padded input, never the part of a ceil_mode window past it; divisor_override
/// replaces the count).
Tensor avg_pool2d(const Tensor& x, const AvgPool2dOptions& options = {});

/// Adaptive average pooling, as torch.nn.functional.adaptive_avg_pool2d. x: [N, C, H, W] or
/// [C, H, W] -> [N, C, OH, OW] (or [C, OH, OW]) with output_size = {OH, OW} (one number: square).
/// Output (p, q) is the mean of rows [floor(p·H/OH), ceil((p+1)·H/OH)) and columns
/// [floor(q·W/OW), ceil((q+1)·W/OW)): windows overlap when OH does not divide H, and OH > H
/// is allowed. Throws ShapeError for another rank or an empty C, H or W, ValueError for an
/// output size <= 0. Differentiable, also twice.
Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size);

/// Adaptive max pooling, as torch.nn.functional.adaptive_max_pool2d: the maximum over the
/// windows of adaptive_avg_pool2d. Ties go to the first maximum in row-major window order;
/// NaN wins, and a later NaN in the window replaces an earlier one (PyTorch 1.13's rule, the
/// same as max_pool2d's). Errors as adaptive_avg_pool2d.
Tensor adaptive_max_pool2d(const Tensor& x, Size2 output_size);
/// adaptive_max_pool2d with the winners' indices (i64, flat h*W + w in each (n, c) plane).
MaxPoolResult adaptive_max_pool2d_with_indices(const Tensor& x, Size2 output_size);

// ---- resampling ------------------------------------------------------------------------------

/// How interpolate picks its source pixels (torch.nn.functional.interpolate's `mode`):
/// nearest (PyTorch's legacy rule, src = floor(dst·scale)), nearest_exact (its
/// 'nearest-exact', src = floor((dst + 0.5)·scale)), linear ([N, C, L] only) and bilinear
/// ([N, C, H, W] only).
enum class InterpolateMode { nearest, nearest_exact, linear, bilinear };

/// The options of interpolate and of nn::Upsample: exactly one of `size` and `scale_factor`,
/// each one number (every spatial dim) or one per spatial dim:
/// `{.size = {14, 18}, .mode = InterpolateMode::bilinear, .align_corners = false}`,
/// `{.scale_factor = {1.7, 0.6}}`.
struct InterpolateOptions {
  /// Output size {OH, OW} (or {OL}); empty: from scale_factor.
  std::vector<std::int64_t> size{};
  /// Output size floor(H·s_h) (or floor(L·s)); empty: from size.
  std::vector<double> scale_factor{};
  InterpolateMode mode = InterpolateMode::nearest;
  /// linear and bilinear only (false when unset): whether the corner pixels' centres of
  /// input and output coincide, src = dst·(in - 1)/(out - 1), scale_factor then unused.
  std::optional<bool> align_corners{};
  /// Unset or false: the kernels use 1/scale_factor as the scale from output to input
  /// coordinates (PyTorch's default); true: they use in/out, as when `size` is given.
  std::optional<bool> recompute_scale_factor{};
};

/// Resamples x as torch.nn.functional.interpolate: x: [N, C, H, W] -> [N, C, OH, OW] or
/// x: [N, C, L] -> [N, C, OL] (N may be 0). Per axis, scale = 1/scale_factor when
/// scale_factor is given and not recomputed, else in/out; bilinear takes
/// src = max(scale·(dst + 0.5) - 0.5, 0) (align_corners false) and weighs the two pixels
/// around it. Throws ShapeError for another rank, a rank the mode does not take, a size or
/// scale_factor of the wrong length or an empty C, H or W; ValueError for both or neither of
/// size and scale_factor, align_corners with a nearest mode, recompute_scale_factor with
/// size, and sizes or factors that are not positive or give an output size of 0.
/// Differentiable in x, also twice.
Tensor interpolate(const Tensor& x, const InterpolateOptions& options);

// ---- transposed convolution and the 1-D convolution and pools -------------------------------

/// The options of conv_transpose2d and of nn::ConvTranspose2d, in PyTorch's argument order.
struct ConvTranspose2dOptions {
  Size2 stride{1, 1};
  Size2 padding{0, 0};
  /// Rows/columns added at the bottom/right of the output; each must be smaller than its
  /// stride or its dilation.
  Size2 output_padding{0, 0};
  std::int64_t groups = 1;
  Size2 dilation{1, 1};
  /// nn::ConvTranspose2d: whether the layer has a bias parameter (the functional form throws
  /// ValueError when given a bias with `bias = false`).
  bool bias = true;
};

/// Transposed 2-D convolution (the input gradient of conv2d), as
/// torch.nn.functional.conv_transpose2d. x: [N, C_in, H, W] (or [C_in, H, W]),
/// weight: [C_in, C_out/groups, kh, kw], bias: [C_out] or undefined -> [N, C_out, OH, OW] with
/// OH = (H-1)·stride - 2·padding + dilation·(kh-1) + output_padding + 1 (OW likewise).
/// Differentiable in x, weight and bias, also twice.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        const ConvTranspose2dOptions& options = {});

/// The options of conv1d and of nn::Conv1d (padding_mode as conv2d's; `bias` as Conv2dOptions').
struct Conv1dOptions {
  std::int64_t stride = 1;
  std::int64_t padding = 0;
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::explicit_sizes;
  bool bias = true;
};

/// 1-D cross-correlation, as torch.nn.functional.conv1d. x: [N, C, L] (or [C, L]),
/// weight: [O, C/groups, k], bias: [O] or undefined -> [N, O, OL] with
/// OL = (L + 2·padding - dilation·(k-1) - 1)/stride + 1 (floor). conv2d on a height of 1.
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv1dOptions& options = {});

/// The options of max_pool1d and of nn::MaxPool1d (stride 0 means "= kernel_size").
struct MaxPool1dOptions {
  std::int64_t kernel_size = 2;
  std::int64_t stride = 0;
  std::int64_t padding = 0;
  std::int64_t dilation = 1;
  bool ceil_mode = false;
};

/// Max over each window of x: [N, C, L] (or [C, L]), as torch.nn.functional.max_pool1d
/// (max_pool2d's rules on a height of 1: padding <= kernel/2, ties, NaN).
Tensor max_pool1d(const Tensor& x, const MaxPool1dOptions& options = {});
/// max_pool1d with the winners' indices (i64, positions in L), as return_indices=True.
MaxPoolResult max_pool1d_with_indices(const Tensor& x, const MaxPool1dOptions& options = {});

/// The options of avg_pool1d and of nn::AvgPool1d (stride 0 means "= kernel_size").
struct AvgPool1dOptions {
  std::int64_t kernel_size = 2;
  std::int64_t stride = 0;
  std::int64_t padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;
};

/// Mean over each window of x: [N, C, L] (or [C, L]), as torch.nn.functional.avg_pool1d
/// (avg_pool2d's divisor rules on a height of 1).
Tensor avg_pool1d(const Tensor& x, const AvgPool1dOptions& options = {});

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
/// batch_norm2d for x: [N, C] (statistics over N) or [N, C, L] (over N and L), as
/// torch.nn.functional.batch_norm on BatchNorm1d's inputs; any other rank throws ShapeError.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  bool training = false, double momentum = 0.1, double eps = 1e-5);

/// Layer normalisation over the trailing dims, as torch.nn.functional.layer_norm.
/// x: [*, D1, ..., Dk] with normalized_shape = [D1, ..., Dk] (k >= 1): each of the prod(*)
/// rows of D1·...·Dk values is normalised with its own mean and biased variance,
/// y = (x - mean) / sqrt(var + eps) · weight + bias, weight and bias: normalized_shape or
/// undefined (no scale, no shift). Differentiable in x, weight, bias, also twice.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

/// Group normalisation, as torch.nn.functional.group_norm. x: [N, C, *] with C divisible by
/// num_groups: the C/num_groups channels of a group are normalised together, per sample
/// (mean and biased variance over C/num_groups·prod(*) values), then each channel c is scaled
/// by weight[c] and shifted by bias[c] (weight, bias: [C] or undefined).
Tensor group_norm(const Tensor& x, std::int64_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// ---- recurrent cells ---------------------------------------------------------------------
/// One LSTM step, as torch.lstm_cell (PyTorch 1.13). input: [B, I] or [I] (unbatched);
/// hx = {h, c}: [B, H] (or [H]); w_ih: [4H, I], w_hh: [4H, H], b_ih, b_hh: [4H] or undefined,
/// gates in the order i, f, g, o. gates = input·w_ihᵀ + b_ih + h·w_hhᵀ + b_hh;
/// c' = sigmoid(f)·c + sigmoid(i)·tanh(g), h' = sigmoid(o)·tanh(c'). Returns {h', c'}.
/// Two linear ops and one fused_lstm_cell; differentiable in every argument, also twice.
std::tuple<Tensor, Tensor> lstm_cell(const Tensor& input, const std::tuple<Tensor, Tensor>& hx,
                                    const Tensor& w_ih, const Tensor& w_hh,
                                    const Tensor& b_ih = Tensor(), const Tensor& b_hh = Tensor());
/// One GRU step, as torch.gru_cell (PyTorch 1.13). input: [B, I] or [I]; h: [B, H] (or [H]);
/// w_ih: [3H, I], w_hh: [3H, H], b_ih, b_hh: [3H] or undefined, gates in the order r, z, n.
/// With a = input·w_ihᵀ + b_ih and b = h·w_hhᵀ + b_hh: r = sigmoid(a_r + b_r),
/// z = sigmoid(a_z + b_z), n = tanh(a_n + r·b_n); returns h' = (1 - z)·n + z·h.
Tensor gru_cell(const Tensor& input, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const Tensor& b_ih = Tensor(), const Tensor& b_hh = Tensor());
/// The element-wise part of lstm_cell (PyTorch's _thnn_fused_lstm_cell, biases already added):
/// input_gates, hidden_gates: [B, 4H] or [4H], c: [B, H] or [H] -> [2, B, H] (or [2, H]) holding
/// h' then c'. One primitive with its own VJP; LSTM layers feed it precomputed projections.
Tensor fused_lstm_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& c);
/// The element-wise part of gru_cell (PyTorch's _thnn_fused_gru_cell, biases already added):
/// input_gates, hidden_gates: [B, 3H] or [3H], h: [B, H] or [H] -> h'.
Tensor fused_gru_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& h);

// ---- attention -------------------------------------------------------------------------------

/// softmax(q·kᵀ/√E + mask)·v, as torch 2.x's torch.nn.functional.scaled_dot_product_attention.
/// query: [..., L, E], key: [..., S, E], value: [..., S, Ev] (batch dims broadcast) -> [..., L, Ev].
/// attn_mask (optional) broadcasts to [..., L, S]: bool, true = attend (false puts -inf in the
/// scores), or of the query's dtype, added to the scores (and differentiable). is_causal masks
/// key j for query i when j > i (top-left aligned when L != S); it excludes attn_mask. A row
/// whose keys are all masked gives NaN (and NaN in value's gradient), as the composite does in
/// PyTorch, whose masked_fill gives the masked scores no gradient. One primitive whose
/// forward keeps only the row log-sum-exp [..., L] besides its inputs and output, never the
/// [..., L, S] probabilities, and whose backward recomputes them by blocks; differentiable
/// twice. dropout_p > 0 drops probabilities (global generator) through the composite instead.
Tensor scaled_dot_product_attention(const Tensor& query, const Tensor& key, const Tensor& value,
                                    const Tensor& attn_mask = Tensor(), double dropout_p = 0.0,
                                    bool is_causal = false);

/// scaled_dot_product_attention of num_heads heads packed in the embedding, as
/// MultiheadAttention runs them: query [L, N, H·E], key [S, N, H·E], value [S, N, H·Ev]
/// (batch_first: [N, L, H·E], ...) -> [L, N, H·Ev] (or [N, L, H·Ev]), whose columns h·Ev to
/// (h+1)·Ev hold head h's attention over columns h·E to (h+1)·E of query and key. Equal to
/// splitting the heads to [N, H, L, E], scaled_dot_product_attention and merging them back,
/// without the copies: the kernels read and write the heads in place. attn_mask broadcasts to
/// [N, H, L, S]; no dropout. Differentiable twice.
Tensor scaled_dot_product_attention_heads(const Tensor& query, const Tensor& key, const Tensor& value,
                                          std::int64_t num_heads, bool batch_first = false,
                                          const Tensor& attn_mask = Tensor(), bool is_causal = false);

}  // namespace tapegrad
