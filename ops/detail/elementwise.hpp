#pragma once
// Shared machinery of the element-wise ops: argument checks, broadcasting and loops.
#include <omp.h>

#include <algorithm>
#include <array>
#include <string_view>

#include <fmt/format.h>

#include "autograd/dispatch.hpp"
#include "autograd/tensor_impl.hpp"
#include "autograd/simd.hpp"
#include "tapegrad/error.hpp"
#include "tapegrad/ops.hpp"

namespace tapegrad::detail {

/// Throws unless t is a defined floating tensor.
inline void check_floating(std::string_view op, const Tensor& t, std::string_view what = "input") {
  if (!t.defined()) throw ValueError(fmt::format("{}: {} is an undefined tensor", op, what));
  if (!is_floating(t.dtype())) {
    throw DTypeError(fmt::format("{}: {} must be f32 or f64, got {} {}", op, what, t.dtype(),
                                 t.shape()));
  }
}

/// Throws ShapeError unless t is defined with exactly `expected` shape and dtype (the
/// arguments of an op that is another op's VJP, whose sizes the forward fixed).
inline void check_meta(std::string_view op, std::string_view what, const Tensor& t,
                       const TensorMeta& expected) {
  if (!t.defined() || t.meta() != expected) {
    throw ShapeError(fmt::format("{}: {} must be {} {}, got {}", op, what, expected.shape,
                                 expected.dtype,
                                 t.defined() ? fmt::format("{} {}", t.shape(), t.dtype())
                                             : std::string("an undefined tensor")));
  }
}

/// Throws unless a and b are defined floating tensors of one dtype.
inline void check_same_floating(std::string_view op, const Tensor& a, const Tensor& b) {
  check_floating(op, a, "first operand");
  check_floating(op, b, "second operand");
  if (a.dtype() != b.dtype()) {
    throw DTypeError(fmt::format("{}: operands have different dtypes, {} {} and {} {}; convert "
                                 "one with .to()", op, a.shape(), a.dtype(), b.shape(), b.dtype()));
  }
}

/// NumPy broadcasting: sizes are aligned from the right; each pair must be equal or 1.
inline Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t sa = i + a.size() >= rank ? a[i + a.size() - rank] : 1;
    const std::int64_t sb = i + b.size() >= rank ? b[i + b.size() - rank] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      throw ShapeError(fmt::format("{}: shapes {} and {} cannot be broadcast (dim {}: {} vs {})",
                                   op, a, b, i, sa, sb));
    }
    out.push_back(sa == 1 ? sb : sa);
  }
  return out;
}

/// Strides (in elements) for reading a tensor of `shape` as if it had `out` shape:
/// broadcast dims get stride 0.
inline std::array<std::int64_t, Shape::kMaxRank> broadcast_strides(const Shape& shape,
                                                                   const Shape& out) {
  std::array<std::int64_t, Shape::kMaxRank> strides{};
  std::int64_t stride = 1;
  for (std::size_t k = shape.size(); k-- > 0;) {
    const std::size_t o = k + out.size() - shape.size();
    strides[o] = shape[k] == 1 ? 0 : stride;
    stride *= shape[k];
  }
  return strides;
}

/// Element-wise loops split across the OpenMP threads from this many elements (a
/// LeNet conv1 activation, 301,056, is split; below, a parallel region costs more than
/// it saves).
constexpr std::int64_t kParallelElements = std::int64_t{1} << 16;
/// Large element-wise loops run in blocks of this many elements (64 KiB of f32): a
/// thread's share is a run of consecutive blocks.
constexpr std::int64_t kBlockElements = std::int64_t{1} << 14;

/// f(begin, end) over [0, n) in blocks of `block`, split across the OpenMP threads (each
/// takes a run of consecutive blocks).
template <class F>
void parallel_blocks(std::int64_t n, std::int64_t block, F f) {
  const std::int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < blocks; ++b) f(b * block, std::min(n, (b + 1) * block));
}

/// f(begin, end, thread) on each OpenMP thread's share of [0, n): consecutive, as even as
/// can be, all threads at once when `parallel` (else thread 0 takes all of it).
template <class F>
void parallel_ranges(std::int64_t n, bool parallel, F f) {
#pragma omp parallel if (parallel)
  {
    const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    f(n * t / threads, n * (t + 1) / threads, static_cast<int>(t));
  }
}

/// f(begin, end) over [0, n) in blocks, split across the OpenMP threads from
/// kParallelElements elements.
template <class F>
void for_blocks(std::int64_t n, F f) {
  if (n >= kParallelElements) return parallel_blocks(n, kBlockElements, f);
  if (n > 0) f(std::int64_t{0}, n);
}

/// out[i] = f(x[i]) for i < n, vectorised for each x86-64 level (simd.hpp). f must be
/// branch-free to vectorise: selects (?:) are fine, the library is built with
/// -fno-trapping-math so that GCC if-converts them.
template <class T, class U, class F>
TAPEGRAD_MULTIVERSION void map_loop(const T* __restrict x, U* __restrict out, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
}

/// map_loop with streaming stores (simd.hpp), for outputs too large to stay in cache.
template <class T, class U, class F>
TAPEGRAD_MULTIVERSION void map_loop_streaming(const T* __restrict x, U* __restrict out, std::int64_t n, F f) {
  stream_map(out, n, [&](std::int64_t i) { return f(x[i]); });
  stream_fence();
}

/// out[i] = f(x[i], y[i]) for i < n (x and y may be the same array).
template <class T, class F>
TAPEGRAD_MULTIVERSION void map_loop(const T* x, const T* y, T* __restrict out, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(x[i], y[i]);
}

template <class T, class F>
TAPEGRAD_MULTIVERSION void map_loop_streaming(const T* x, const T* y, T* __restrict out, std::int64_t n, F f) {
  stream_map(out, n, [&](std::int64_t i) { return f(x[i], y[i]); });
  stream_fence();
}

/// Whether an output of n elements of T is written with streaming stores (simd.hpp).
template <class T>
bool streams(std::int64_t n) {
  return n * static_cast<std::int64_t>(sizeof(T)) >= kStreamBytes;
}

/// A block hook that does nothing (see map_unary).
struct NoFixup {
  template <class... A>
  void operator()(A&&...) const {}
};

/// out[i] = f(x[i]). fixup(x, out, n) then runs on each block while it is in cache (to
/// recompute the rare elements f is not exact for). Cheap: f is a few instructions
/// (stream_map_pays).
template <class T, bool Cheap = false, class F, class Fixup = NoFixup>
Tensor map_unary(const Tensor& x, F f, Fixup fixup = {}) {
  Tensor out = make_tensor(x.meta());
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const bool streaming = streams<T>(x.numel()) && stream_map_pays(Cheap);
  for_blocks(x.numel(), [&](std::int64_t begin, std::int64_t end) {
    if (streaming) map_loop_streaming(px + begin, po + begin, end - begin, f);
    else map_loop(px + begin, po + begin, end - begin, f);
    fixup(px + begin, po + begin, end - begin);
  });
  return out;
}

/// into[i] += f(x[i], y[i]) (see map_binary_same), computed a few KB at a time into a buffer
/// that fixup(x, y, buffer, n) amends and that is then added in.
template <class T, class F, class Fixup>
Tensor map_add_into(const Tensor& x, const Tensor& y, F f, Fixup fixup, Tensor into) {
  const T* px = x.data<T>();
  const T* py = y.data<T>();
  T* po = into.data<T>();
  for_blocks(x.numel(), [&](std::int64_t begin, std::int64_t end) {
    constexpr std::int64_t chunk = 2048;
    alignas(64) T buffer[chunk];
    for (std::int64_t at = begin; at < end; at += chunk) {
      const std::int64_t n = std::min(chunk, end - at);
      map_loop(px + at, py + at, buffer, n, f);
      fixup(px + at, py + at, buffer, n);
      add_into(po + at, buffer, n);
    }
  });
  return into;
}

/// out[i] = f(x[i], y[i]) for two tensors of one shape; fixup(x, y, out, n) as in map_unary.
/// With `into` defined (a gradient being summed, OpContext::grad_sum): into[i] += f(x[i], y[i])
/// instead (floating dtypes), and returns into.
template <class T, class F, class Fixup = NoFixup>
Tensor map_binary_same(const Tensor& x, const Tensor& y, F f, Fixup fixup = {}, Tensor into = {}) {
  if constexpr (std::is_floating_point_v<T>) {
    if (into.defined()) return map_add_into<T>(x, y, f, fixup, into);
  }
  const T* px = x.data<T>();
  const T* py = y.data<T>();
  Tensor out = make_tensor(x.meta());
  T* po = out.data<T>();
  const bool streaming = streams<T>(x.numel());
  for_blocks(x.numel(), [&](std::int64_t begin, std::int64_t end) {
    if (streaming) map_loop_streaming(px + begin, py + begin, po + begin, end - begin, f);
    else map_loop(px + begin, py + begin, po + begin, end - begin, f);
    fixup(px + begin, py + begin, po + begin, end - begin);
  });
  return out;
}

/// out = f(a, b) element-wise with broadcasting to `out_shape`.
template <class T, class F>
Tensor map_broadcast(const Tensor& a, const Tensor& b, const Shape& out_shape, F f) {
  if (a.shape() == b.shape()) return map_binary_same<T>(a, b, f);
  Tensor out = make_tensor(out_shape, a.dtype());
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  const std::int64_t n = out.numel();
  const bool streaming = streams<T>(n);
  const auto map = [&](const T* x, auto g) {
    for_blocks(n, [&](std::int64_t begin, std::int64_t end) {
      if (streaming) map_loop_streaming(x + begin, po + begin, end - begin, g);
      else map_loop(x + begin, po + begin, end - begin, g);
    });
    return out;
  };
  if (b.numel() == 1 && a.numel() == n) return map(pa, [&f, vb = pb[0]](T va) { return f(va, vb); });
  if (a.numel() == 1 && b.numel() == n) return map(pb, [&f, va = pa[0]](T vb) { return f(va, vb); });
  // General case: walk the output with a multi-index, innermost dim in a tight loop.
  const auto sa = broadcast_strides(a.shape(), out_shape);
  const auto sb = broadcast_strides(b.shape(), out_shape);
  const std::size_t rank = out_shape.size();
  const std::int64_t inner = out_shape[rank - 1];
  std::array<std::int64_t, Shape::kMaxRank> idx{};
  std::int64_t oa = 0;
  std::int64_t ob = 0;
  for (std::int64_t base = 0; base < n; base += inner) {
    for (std::int64_t j = 0; j < inner; ++j) {
      po[base + j] = f(pa[oa + j * sa[rank - 1]], pb[ob + j * sb[rank - 1]]);
    }
    for (std::size_t d = rank - 1; d-- > 0;) {  // odometer over the outer dims
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < out_shape[d]) break;
      oa -= sa[d] * out_shape[d];
      ob -= sb[d] * out_shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/// f(i, offsets) for every element i of out_shape (row-major), where offsets[k] is the
/// element of operand k (of shapes[k], which broadcast to out_shape) that i reads: for ops
/// whose operands differ in dtype (a bool condition and two values, say).
template <std::size_t N, class F>
void each_broadcast(const Shape& out_shape, const std::array<Shape, N>& shapes, F f) {
  const std::int64_t n = out_shape.numel();
  std::array<std::int64_t, N> off{};
  if (n == 0) return;
  if (out_shape.empty()) return f(std::int64_t{0}, off);
  std::array<std::array<std::int64_t, Shape::kMaxRank>, N> strides;
  for (std::size_t k = 0; k < N; ++k) strides[k] = broadcast_strides(shapes[k], out_shape);
  const std::size_t rank = out_shape.size();
  const std::int64_t inner = out_shape[rank - 1];
  std::array<std::int64_t, Shape::kMaxRank> idx{};
  for (std::int64_t base = 0; base < n; base += inner) {
    std::array<std::int64_t, N> at = off;
    for (std::int64_t j = 0; j < inner; ++j) {
      f(base + j, at);
      for (std::size_t k = 0; k < N; ++k) at[k] += strides[k][rank - 1];
    }
    for (std::size_t d = rank - 1; d-- > 0;) {  // odometer over the outer dims
      for (std::size_t k = 0; k < N; ++k) off[k] += strides[k][d];
      if (++idx[d] < out_shape[d]) break;
      for (std::size_t k = 0; k < N; ++k) off[k] -= strides[k][d] * out_shape[d];
      idx[d] = 0;
    }
  }
}

/// Sums a gradient of a broadcast result back to the shape of the operand: over the
/// leading dims the operand lacked and over dims where it had size 1.
inline Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const std::size_t lead = grad.dim() - shape.size();
  std::vector<std::int64_t> dims;
  for (std::size_t d = 0; d < grad.dim(); ++d) {
    if (d < lead || shape[d - lead] == 1) dims.push_back(static_cast<std::int64_t>(d));
  }
  return reshape(sum(grad, dims, false), shape);
}

}  // namespace tapegrad::detail

namespace tapegrad::detail {

/// Copies t into a new tensor of `shape`, repeating it along broadcast dims (t's shape
/// must broadcast to `shape`). Not recorded.
inline Tensor broadcast_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  return dispatch_all(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor zero = make_tensor(Shape{}, t.dtype());
    *zero.data<T>() = T(0);
    return map_broadcast<T>(t, zero, shape, [](T a, T) { return a; });
  });
}

/// Normalises a possibly negative dim against `rank`, or throws naming `op`.
inline std::size_t normalize_dim(std::string_view op, std::int64_t dim, std::size_t rank) {
  const auto r = static_cast<std::int64_t>(rank);
  const std::int64_t d = dim < 0 ? dim + std::max<std::int64_t>(r, 1) : dim;  // a 0-dim tensor takes 0 and -1
  if (d < 0 || d >= std::max<std::int64_t>(r, 1) || (r == 0 && d != 0)) {
    throw ValueError(fmt::format("{}: dim {} is out of range for a tensor of rank {} (valid: "
                                 "{} to {})", op, dim, rank, -std::max<std::int64_t>(r, 1),
                                 std::max<std::int64_t>(r, 1) - 1));
  }
  return static_cast<std::size_t>(d);
}

/// A shape seen as [outer, n, inner] around dim d.
struct DimSplit {
  std::int64_t outer = 1, n = 1, inner = 1;
  DimSplit(const Shape& shape, std::size_t d) {
    for (std::size_t k = 0; k < shape.size(); ++k) {
      if (k < d) outer *= shape[k];
      if (k == d) n = shape[k];
      if (k > d) inner *= shape[k];
    }
  }
};

}  // namespace tapegrad::detail
