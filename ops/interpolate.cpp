// interpolate: x [N, C, H, W] -> [N, C, OH, OW] (or [N, C, L] -> [N, C, OL], run as H = OH = 1),
// as torch.nn.functional.interpolate in PyTorch 1.13. Per axis, with scale = 1/scale_factor
// when a scale_factor is given and not recomputed, else in/out (PyTorch's
// compute_scales_value), output pixel dst reads
//   nearest:        src = min(floor(dst·scale), in - 1) in f32 arithmetic, except that
//                   out = in takes src = dst and out = 2·in takes src = dst/2 (PyTorch's shortcuts)
//   nearest_exact:  src = min(floor((dst + 0.5)·scale), in - 1)
//   (bi)linear:     r = dst·(in - 1)/(out - 1) (align_corners; 0 when out = 1) or
//                   r = max(scale·(dst + 0.5) - 0.5, 0); pixels i0 = floor(r) and
//                   i1 = min(i0 + 1, in - 1) with weights 1 - λ and λ = r - i0; out = in copies.
// The map is linear, y = A·x, and separable: a table per axis (source pixels and weights per
// output row/column) serves every plane. VJP: grad_x = Aᵀ·grad_y, each output's gradient
// scattered back to the pixels it read with their weights; that is an op of its own,
// upsample_*_backward, whose VJP is A again: every order of derivative is these two ops.
#include <cmath>
#include <limits>

#include "ops/detail/elementwise.hpp"
#include "ops/detail/samples.hpp"
#include "ops/registration.hpp"

namespace tapegrad {
namespace {

constexpr std::string_view kOp = "interpolate";
/// The largest output size accepted along one axis: index arithmetic stays far inside int64.
constexpr std::int64_t kMaxOutput = (std::int64_t{1} << 31) - 1;

/// One spatial axis: input and output size, and the user's scale_factor when the kernels
/// use it (0 when they use in/out).
struct ResampleAxis {
  std::int64_t in = 1, out = 1;
  double scale_factor = 0;
};

enum class Kind { nearest, nearest_exact, linear };

/// Everything the kernels need, resolved from the options and the input shape.
struct ResamplePlan {
  Kind kind = Kind::nearest;
  bool align_corners = false;
  std::size_t rank = 4;  ///< 3: [N, C, L] (h is then 1 -> 1)
  ResampleAxis h, w;

  Shape output_shape(const Shape& x) const {
    Shape out = x;
    if (rank == 4) out[2] = h.out;
    out[rank - 1] = w.out;
    return out;
  }
  std::int64_t planes(const Shape& x) const { return x.numel() / (h.in * w.in); }
  std::string describe() const {
    const char* modes[] = {"nearest", "nearest_exact", "linear"};
    const auto axis = [](const ResampleAxis& a) {
      return a.scale_factor > 0 ? fmt::format("{}->{} (scale_factor {})", a.in, a.out, a.scale_factor)
                                : fmt::format("{}->{}", a.in, a.out);
    };
    return fmt::format("mode={}, align_corners={}, h={}, w={}", modes[static_cast<int>(kind)], align_corners,
                       axis(h), axis(w));
  }
};

/// The source pixels and weights of one output row or column.
template <class T>
struct Tap {
  std::int64_t i0, i1;
  T l0, l1;
};

// PyTorch's compute_scales_value, in the precision its kernels use (f32 for nearest).
template <class T>
T axis_scale(const ResampleAxis& a) {
  return a.scale_factor > 0 ? static_cast<T>(1.0 / a.scale_factor) : static_cast<T>(a.in) / static_cast<T>(a.out);
}

std::int64_t nearest_source(const ResampleAxis& a, std::int64_t dst, bool exact) {
  if (!exact && a.out == a.in) return dst;
  if (!exact && a.out == 2 * a.in) return dst >> 1;
  const float scale = axis_scale<float>(a);
  const float at = exact ? static_cast<float>((static_cast<double>(dst) + 0.5) * static_cast<double>(scale))
                         : static_cast<float>(dst) * scale;
  return std::min(static_cast<std::int64_t>(std::floor(at)), a.in - 1);
}

template <class T>
std::vector<Tap<T>> axis_taps(const ResamplePlan& p, const ResampleAxis& a) {
  std::vector<Tap<T>> taps(static_cast<std::size_t>(a.out));
  T ratio = 0;
  if (p.kind == Kind::linear) {
    ratio = p.align_corners ? (a.out > 1 ? static_cast<T>(a.in - 1) / static_cast<T>(a.out - 1) : T(0))
                            : axis_scale<T>(a);
  }
  for (std::int64_t dst = 0; dst < a.out; ++dst) {
    Tap<T>& t = taps[static_cast<std::size_t>(dst)];
    if (p.kind != Kind::linear) {
      t.i0 = t.i1 = nearest_source(a, dst, p.kind == Kind::nearest_exact);
      t.l0 = 1;
      t.l1 = 0;
    } else if (a.out == a.in) {
      t = {dst, dst, T(1), T(0)};
    } else {
      const T r = p.align_corners ? ratio * static_cast<T>(dst)
                                  : std::max(ratio * (static_cast<T>(dst) + T(0.5)) - T(0.5), T(0));
      t.i0 = static_cast<std::int64_t>(r);
      t.i1 = t.i0 + (t.i0 < a.in - 1 ? 1 : 0);
      t.l1 = std::min(std::max(r - static_cast<T>(t.i0), T(0)), T(1));
      t.l0 = T(1) - t.l1;
    }
  }
  return taps;
}

/// Calls f(plane, row tap, column taps) for every plane and output row, planes in parallel
/// (a plane's outputs and inputs belong to one thread, so scatters need no atomics).
template <class T, class F>
void for_each_row(const ResamplePlan& p, std::int64_t planes, F f) {
  const std::vector<Tap<T>> rows = axis_taps<T>(p, p.h), cols = axis_taps<T>(p, p.w);
  const std::int64_t work = planes * (p.h.in * p.w.in + p.h.out * p.w.out);
#pragma omp parallel for schedule(static) if (work >= detail::kParallelElements)
  for (std::int64_t plane = 0; plane < planes; ++plane) {
    for (std::int64_t oh = 0; oh < p.h.out; ++oh) f(plane, oh, rows[static_cast<std::size_t>(oh)], cols.data());
  }
}

/// y = A·x, plane by plane.
template <class T>
void resample(const ResamplePlan& p, std::int64_t planes, const T* x, T* y) {
  const std::int64_t in_w = p.w.in, out_w = p.w.out, in_plane = p.h.in * in_w, out_plane = p.h.out * out_w;
  for_each_row<T>(p, planes, [&](std::int64_t plane, std::int64_t oh, const Tap<T>& r, const Tap<T>* cols) {
    const T* r0 = x + plane * in_plane + r.i0 * in_w;
    const T* r1 = x + plane * in_plane + r.i1 * in_w;
    T* out = y + plane * out_plane + oh * out_w;
    if (p.kind != Kind::linear) {
      for (std::int64_t ow = 0; ow < out_w; ++ow) out[ow] = r0[cols[ow].i0];
      return;
    }
    for (std::int64_t ow = 0; ow < out_w; ++ow) {
      const Tap<T>& c = cols[ow];
      out[ow] = r.l0 * (c.l0 * r0[c.i0] + c.l1 * r0[c.i1]) + r.l1 * (c.l0 * r1[c.i0] + c.l1 * r1[c.i1]);
    }
  });
}

/// grad_x += Aᵀ·grad_y, plane by plane: each output's gradient goes back to the pixels it read.
template <class T>
void resample_adjoint(const ResamplePlan& p, std::int64_t planes, const T* grad_y, T* grad_x) {
  const std::int64_t in_w = p.w.in, out_w = p.w.out, in_plane = p.h.in * in_w, out_plane = p.h.out * out_w;
  for_each_row<T>(p, planes, [&](std::int64_t plane, std::int64_t oh, const Tap<T>& r, const Tap<T>* cols) {
    T* r0 = grad_x + plane * in_plane + r.i0 * in_w;
    T* r1 = grad_x + plane * in_plane + r.i1 * in_w;
    const T* g = grad_y + plane * out_plane + oh * out_w;
    if (p.kind != Kind::linear) {
      for (std::int64_t ow = 0; ow < out_w; ++ow) r0[cols[ow].i0] += g[ow];
      return;
    }
    for (std::int64_t ow = 0; ow < out_w; ++ow) {
      const Tap<T>& c = cols[ow];
      const T g0 = r.l0 * g[ow], g1 = r.l1 * g[ow];
      r0[c.i0] += c.l0 * g0;
      r0[c.i1] += c.l1 * g0;
      r1[c.i0] += c.l0 * g1;
      r1[c.i1] += c.l1 * g1;
    }
  });
}

/// Throws unless x has the rank and spatial sizes the plan was resolved for (an op that
/// is applied directly, as the checker's samples and reruns do).
void check_input(std::string_view op, const ResamplePlan& p, const Shape& x) {
  const bool ok = x.size() == p.rank && (p.rank == 3 || x[2] == p.h.in) && x[x.size() - 1] == p.w.in;
  if (!ok) {
    throw ShapeError(fmt::format("{}: input {} does not match the plan it was built for ({})", op, x, p.describe()));
  }
}

// Both modes are one op each (nearest and nearest_exact share upsample_nearest), with the
// adjoint beside it; kLinear picks the name.
template <bool kLinear>
struct UpsampleOp {
  static constexpr std::string_view name = kLinear ? "upsample_linear" : "upsample_nearest";
  ResamplePlan plan;

  std::string attributes() const { return plan.describe(); }
  TensorMeta infer(std::span<const Tensor> in) const {
    detail::check_floating(name, in[0]);
    check_input(name, plan, in[0].shape());
    return {plan.output_shape(in[0].shape()), in[0].dtype()};
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    const Tensor& x = in[0];
    Tensor out = detail::make_tensor(plan.output_shape(x.shape()), x.dtype());
    detail::dispatch_floating(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      resample<T>(plan, plan.planes(x.shape()), x.data<T>(), out.data<T>());
    });
    return out;
  }
  std::vector<Tensor> vjp(OpContext& ctx, const Tensor& grad_out);
  static std::vector<Sample> samples();
};

/// upsample_*_backward: grad_x [x's shape] = Aᵀ·grad_y for the plan's A on an input of meta
/// `x`. VJP: grad_grad_y = A·grad_grad_x.
template <bool kLinear>
struct UpsampleBackwardOp {
  static constexpr std::string_view name = kLinear ? "upsample_linear_backward" : "upsample_nearest_backward";
  ResamplePlan plan;
  TensorMeta x;

  std::string attributes() const { return fmt::format("{}, input={}", plan.describe(), x.shape); }
  TensorMeta infer(std::span<const Tensor> in) const {
    check_input(name, plan, x.shape);
    detail::check_meta(name, "grad_out", in[0], {plan.output_shape(x.shape), x.dtype});
    return x;
  }
  Tensor forward(OpContext&, std::span<const Tensor> in) {
    Tensor grad_x = zeros(x.shape, x.dtype);
    detail::dispatch_floating(x.dtype, name, [&](auto tag) {
      using T = decltype(tag);
      resample_adjoint<T>(plan, plan.planes(x.shape), in[0].data<T>(), grad_x.data<T>());
    });
    return grad_x;
  }
  std::vector<Tensor> vjp(OpContext&, const Tensor& grad_out) { return {apply(UpsampleOp<kLinear>{plan}, {grad_out})}; }
  static std::vector<Sample> samples();
};

template <bool kLinear>
std::vector<Tensor> UpsampleOp<kLinear>::vjp(OpContext& ctx, const Tensor& grad_out) {
  return {apply(UpsampleBackwardOp<kLinear>{plan, ctx.input(0)}, {grad_out})};
}

const char* mode_name(InterpolateMode mode) {
  switch (mode) {
    case InterpolateMode::nearest: return "nearest";
    case InterpolateMode::nearest_exact: return "nearest_exact";
    case InterpolateMode::linear: return "linear";
    case InterpolateMode::bilinear: return "bilinear";
  }
  return "?";
}

template <class V>
std::string list(const std::vector<V>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}

/// Checks the options against x's shape, as PyTorch's interpolate does, and resolves them
/// into sizes and scales.
ResamplePlan resolve(const Shape& x, const InterpolateOptions& o) {
  const bool linear = o.mode == InterpolateMode::linear || o.mode == InterpolateMode::bilinear;
  if (x.size() != 3 && x.size() != 4) {
    throw ShapeError(fmt::format("{}: input must be [N, C, L] or [N, C, H, W], got {} (rank {}); an unbatched "
                                 "input needs a leading batch dim of 1", kOp, x, x.size()));
  }
  if (o.mode == InterpolateMode::bilinear && x.size() != 4) {
    throw ShapeError(fmt::format("{}: mode bilinear needs input [N, C, H, W], got {}; mode linear takes "
                                 "[N, C, L]", kOp, x));
  }
  if (o.mode == InterpolateMode::linear && x.size() != 3) {
    throw ShapeError(fmt::format("{}: mode linear needs input [N, C, L], got {}; mode bilinear takes "
                                 "[N, C, H, W]", kOp, x));
  }
  if (!linear && o.align_corners.has_value()) {
    throw ValueError(fmt::format("{}: align_corners can only be set with modes linear and bilinear, got "
                                 "align_corners={} with mode {}", kOp, *o.align_corners, mode_name(o.mode)));
  }
  const bool by_size = !o.size.empty(), by_scale = !o.scale_factor.empty();
  if (by_size == by_scale) {
    throw ValueError(fmt::format("{}: give exactly one of size and scale_factor, got {} for input {}", kOp,
                                 by_size ? fmt::format("size={} and scale_factor={}", list(o.size),
                                                       list(o.scale_factor))
                                         : std::string("neither"),
                                 x));
  }
  const std::size_t dims = x.size() - 2;
  const std::size_t given = by_size ? o.size.size() : o.scale_factor.size();
  if (given != 1 && given != dims) {
    throw ShapeError(fmt::format("{}: {}={} has {} values; input {} has {}", kOp, by_size ? "size" : "scale_factor",
                                 by_size ? list(o.size) : list(o.scale_factor), given, x,
                                 dims == 1 ? "1 spatial dim, so give 1" : "2 spatial dims, so give 1 or 2"));
  }
  if (by_size && o.recompute_scale_factor.value_or(false)) {
    throw ValueError(fmt::format("{}: recompute_scale_factor=true is not meaningful with size={}", kOp,
                                 list(o.size)));
  }
  if (x[1] == 0 || x[2] == 0 || (dims == 2 && x[3] == 0)) {
    throw ShapeError(fmt::format("{}: input {} has an empty channel or spatial dim; only the batch dim may be 0",
                                 kOp, x));
  }
  const bool recompute = o.recompute_scale_factor.value_or(false);
  ResamplePlan p;
  p.kind = linear ? Kind::linear : o.mode == InterpolateMode::nearest ? Kind::nearest : Kind::nearest_exact;
  p.align_corners = o.align_corners.value_or(false);
  p.rank = x.size();
  for (std::size_t d = 0; d < dims; ++d) {
    ResampleAxis& a = dims == 2 && d == 0 ? p.h : p.w;
    const char* axis = dims == 1 ? "length" : d == 0 ? "height" : "width";
    const char* sym = dims == 1 ? "L" : d == 0 ? "H" : "W";
    a.in = x[2 + d];
    if (by_size) {
      a.out = o.size[given == 1 ? 0 : d];
      if (a.out <= 0 || a.out > kMaxOutput) {
        throw ValueError(fmt::format("{}: size={} must hold sizes in [1, {}], got {} {} for input {}", kOp,
                                     list(o.size), kMaxOutput, axis, a.out, x));
      }
      continue;
    }
    const double s = o.scale_factor[given == 1 ? 0 : d];
    if (!(s > 0) || !std::isfinite(s)) {
      throw ValueError(fmt::format("{}: scale_factor={} must hold positive finite factors, got {} {} for input {}",
                                   kOp, list(o.scale_factor), axis, s, x));
    }
    const double out = std::floor(static_cast<double>(a.in) * s);
    if (out < 1 || out > static_cast<double>(kMaxOutput)) {
      throw ValueError(fmt::format("{}: output {} would be {}: floor({}={} * scale_factor={}) for input {}; it "
                                   "must be in [1, {}]", kOp, axis, out, sym, a.in, s, x, kMaxOutput));
    }
    a.out = static_cast<std::int64_t>(out);
    if (!recompute) a.scale_factor = s;
  }
  return p;
}

struct SampleCase {
  const char* label;
  Shape x;
  InterpolateOptions options;
};

std::vector<SampleCase> sample_cases(bool linear) {
  using M = InterpolateMode;
  if (!linear) {
    return {
        {"nearest 3x4 to 5x7", {2, 2, 3, 4}, {.size = {5, 7}}},
        {"nearest scale_factor 1.7, 0.6", {1, 2, 5, 6}, {.scale_factor = {1.7, 0.6}}},
        {"nearest 6x5 to 2x3", {1, 1, 6, 5}, {.size = {2, 3}}},
        {"nearest_exact scale_factor 2.5", {1, 2, 3, 2}, {.scale_factor = {2.5}, .mode = M::nearest_exact}},
        {"nearest [N, C, L] 4 to 7", {2, 2, 4}, {.size = {7}}},
    };
  }
  return {
      {"bilinear 3x4 to 5x7", {2, 2, 3, 4}, {.size = {5, 7}, .mode = M::bilinear}},
      {"bilinear align_corners 3x4 to 5x7", {1, 2, 3, 4}, {.size = {5, 7}, .mode = M::bilinear, .align_corners = true}},
      {"bilinear scale_factor 1.7, 0.6", {1, 2, 5, 6}, {.scale_factor = {1.7, 0.6}, .mode = M::bilinear}},
      {"bilinear 7x6 to 1x1", {1, 1, 7, 6}, {.size = {1}, .mode = M::bilinear}},
      {"linear [N, C, L] 4 to 9", {2, 2, 4}, {.size = {9}, .mode = M::linear, .align_corners = true}},
  };
}

template <bool kLinear>
std::vector<Sample> UpsampleOp<kLinear>::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = kLinear ? 560 : 540;
  for (const SampleCase& c : sample_cases(kLinear)) {
    const InterpolateOptions options = c.options;
    out.push_back({c.label, {detail::sample_tensor(c.x, -1, 1, seed++)},
                   [options](const std::vector<Tensor>& in) { return interpolate(in[0], options); }});
  }
  return out;
}

template <bool kLinear>
std::vector<Sample> UpsampleBackwardOp<kLinear>::samples() {
  std::vector<Sample> out;
  std::uint64_t seed = kLinear ? 600 : 580;
  for (const SampleCase& c : sample_cases(kLinear)) {
    const UpsampleBackwardOp op{resolve(c.x, c.options), {c.x, DType::f64}};
    out.push_back({c.label, {detail::sample_tensor(op.plan.output_shape(c.x), -1, 1, seed++)},
                   [op](const std::vector<Tensor>& in) { return apply(UpsampleBackwardOp{op}, {in[0]}); }});
  }
  return out;
}

using UpsampleNearest = UpsampleOp<false>;
using UpsampleNearestBackward = UpsampleBackwardOp<false>;
using UpsampleLinear = UpsampleOp<true>;
using UpsampleLinearBackward = UpsampleBackwardOp<true>;

}  // namespace

Tensor interpolate(const Tensor& x, const InterpolateOptions& options) {
  detail::check_floating(kOp, x);
  const ResamplePlan plan = resolve(x.shape(), options);
  if (plan.kind == Kind::linear) return apply(UpsampleLinear{plan}, {x});
  return apply(UpsampleNearest{plan}, {x});
}

TAPEGRAD_BUILTIN_OPS(interpolate, UpsampleNearest, UpsampleNearestBackward, UpsampleLinear, UpsampleLinearBackward)

}  // namespace tapegrad
