// Tensor storage, handles, factories, element access and in-place updates.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#include <omp.h>
#include <unistd.h>

#include <fmt/format.h>

#include "autograd/block_cache.hpp"
#include "autograd/dispatch.hpp"
#include "autograd/simd.hpp"
#include "autograd/tensor_impl.hpp"
#include "tapegrad/autograd.hpp"

namespace tapegrad {
namespace detail {

namespace {
std::size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::size_t{1} << 40;
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
}

std::atomic<std::size_t>& max_bytes() {
  static std::atomic<std::size_t> bytes{physical_memory_bytes()};
  return bytes;
}
}  // namespace

Storage::Storage(std::size_t bytes) : nbytes(bytes) {
  if (bytes <= kInlineBytes) {
    data = inline_data;
    return;
  }
  try {
    data = block_acquire(nbytes);
  } catch (const std::bad_alloc&) {
    throw ValueError(fmt::format("tensor: cannot allocate {} bytes", bytes));
  }
}

Storage::~Storage() {
  if (data != inline_data) block_release(data, nbytes);
}

Tensor make_tensor(const TensorMeta& meta, std::string_view op) {
  std::int64_t numel = 1;
  for (std::int64_t s : meta.shape) {
    if (s < 0) {
      throw ShapeError(fmt::format("{}: negative size in shape {}", op, meta.shape));
    }
    if (s != 0 && numel > std::numeric_limits<std::int64_t>::max() / s) {
      throw ValueError(fmt::format("{}: shape {} has more elements than fit in int64", op,
                                   meta.shape));
    }
    numel *= s;
  }
  const auto elem = dtype_size(meta.dtype);
  const std::size_t limit = max_bytes().load(std::memory_order_relaxed);
  if (static_cast<std::uint64_t>(numel) > limit / elem) {
    throw ValueError(fmt::format(
        "{}: shape {} of {} needs {} elements * {} bytes, more than the limit of {} bytes "
        "(see tapegrad::set_max_tensor_bytes)", op, meta.shape, meta.dtype, numel, elem, limit));
  }
  auto impl = std::allocate_shared<TensorImpl>(PoolAllocator<TensorImpl>{});
  impl->storage = std::allocate_shared<Storage>(PoolAllocator<Storage>{}, static_cast<std::size_t>(numel) * elem);
  impl->shape = meta.shape;
  impl->dtype = meta.dtype;
  return Tensor(std::move(impl));
}

Tensor alias(const Tensor& t, const Shape& shape, std::int64_t offset) {
  auto impl = std::allocate_shared<TensorImpl>(PoolAllocator<TensorImpl>{});
  impl->storage = t.impl()->storage;
  impl->offset = t.impl()->offset + static_cast<std::size_t>(offset) * dtype_size(t.dtype());
  impl->shape = shape;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

void bump_version(const Tensor& t) { ++t.impl()->storage->version; }

Tensor copy_data(const Tensor& t) {
  Tensor out = make_tensor(t.meta());
  const auto bytes = [](const Tensor& x) {
    return static_cast<std::byte*>(x.impl()->storage->data) + x.impl()->offset;
  };
  const auto n = static_cast<std::int64_t>(t.numel() * dtype_size(t.dtype()));
  if (n < kStreamBytes) {
    std::memcpy(bytes(out), bytes(t), static_cast<std::size_t>(n));
    return out;
  }
  // Too large to stay in cache: streaming stores, split across the threads.
  constexpr std::int64_t kBlock = std::int64_t{1} << 18;
  const std::byte* src = bytes(t);
  std::byte* dst = bytes(out);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < (n + kBlock - 1) / kBlock; ++b) {
      stream_copy(src + b * kBlock, dst + b * kBlock, std::min(kBlock, n - b * kBlock));
    }
    stream_fence();
  }
  return out;
}

}  // namespace detail

std::size_t max_tensor_bytes() { return detail::max_bytes().load(); }
void set_max_tensor_bytes(std::size_t bytes) { detail::max_bytes().store(bytes); }

// ---- Tensor accessors ----------------------------------------------------------------------

namespace {
const detail::TensorImpl& checked(const std::shared_ptr<detail::TensorImpl>& impl,
                                  const char* what) {
  if (!impl) throw ValueError(fmt::format("Tensor::{}: the tensor is undefined", what));
  return *impl;
}
}  // namespace

const Shape& Tensor::shape() const { return checked(impl_, "shape").shape; }
DType Tensor::dtype() const { return checked(impl_, "dtype").dtype; }
std::int64_t Tensor::numel() const { return shape().numel(); }

std::int64_t Tensor::size(std::int64_t d) const {
  const auto rank = static_cast<std::int64_t>(dim());
  const std::int64_t i = d < 0 ? d + rank : d;
  if (i < 0 || i >= rank) {
    throw ValueError(fmt::format("Tensor::size: dim {} is out of range for shape {}", d, shape()));
  }
  return shape()[static_cast<std::size_t>(i)];
}

bool Tensor::requires_grad() const { return checked(impl_, "requires_grad").requires_grad; }

Tensor& Tensor::set_requires_grad(bool requires_grad) {
  checked(impl_, "set_requires_grad");
  if (requires_grad && !is_floating(impl_->dtype)) {
    throw DTypeError(fmt::format(
        "Tensor::set_requires_grad: only floating tensors can require grad, this one is {}",
        impl_->dtype));
  }
  if (!requires_grad && impl_->grad_fn) {
    throw GraphError(fmt::format(
        "Tensor::set_requires_grad: cannot switch off grad on a non-leaf tensor (made by {}); "
        "use detach() instead", impl_->grad_fn->op->name()));
  }
  impl_->requires_grad = requires_grad;
  return *this;
}

bool Tensor::is_leaf() const { return !checked(impl_, "is_leaf").grad_fn; }

Tensor Tensor::grad() const {
  return Tensor(checked(impl_, "grad").grad);
}

void Tensor::set_grad(const Tensor& grad) {
  checked(impl_, "set_grad");
  if (grad.defined() && grad.meta() != meta()) {
    throw ShapeError(fmt::format(
        "Tensor::set_grad: gradient {} {} does not match the tensor's {} {}", grad.shape(),
        grad.dtype(), shape(), dtype()));
  }
  impl_->grad = grad.impl();
}

Tensor& Tensor::set_data(const Tensor& data) {
  checked(impl_, "set_data");
  checked(data.impl(), "set_data");
  if (impl_->grad_fn) {
    throw GraphError(fmt::format("Tensor::set_data: the tensor ({} {}) was made by {}; only a "
                                 "leaf's data can be replaced", shape(), dtype(),
                                 impl_->grad_fn->op->name()));
  }
  if (impl_->requires_grad && !is_floating(data.dtype())) {
    throw DTypeError(fmt::format("Tensor::set_data: the tensor requires grad, so its new data "
                                 "must be floating, got {} {}", data.shape(), data.dtype()));
  }
  if (impl_->grad && Tensor(impl_->grad).meta() != data.meta()) impl_->grad.reset();
  impl_->storage = data.impl()->storage;
  impl_->offset = data.impl()->offset;
  impl_->shape = data.shape();
  impl_->dtype = data.dtype();
  return *this;
}

std::string Tensor::grad_fn_name() const {
  const auto& impl = checked(impl_, "grad_fn_name");
  return impl.grad_fn ? std::string(impl.grad_fn->op->name()) : std::string();
}

void Tensor::backward(const Tensor& grad_output, std::optional<bool> retain_graph,
                      bool create_graph) const {
  tapegrad::backward(*this, grad_output, retain_graph, create_graph);
}

void* Tensor::raw_data() const {
  const detail::TensorImpl& impl = checked(impl_, "data");
  return static_cast<std::byte*>(impl.storage->data) + impl.offset;
}

void Tensor::check_dtype_for(DType want, const char* what) const {
  if (dtype() != want) {
    throw DTypeError(fmt::format("Tensor::{}: requested {} data from a {} tensor", what, want,
                                 dtype()));
  }
}

std::uint64_t Tensor::version() const { return checked(impl_, "version").storage->version; }

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

Tensor Tensor::detach() const {
  checked(impl_, "detach");
  return detail::alias(*this, impl_->shape);
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  checked(impl_, "to_vector");
  return detail::dispatch_all(dtype(), [&](auto tag) {
    using S = decltype(tag);
    const S* p = static_cast<const S*>(raw_data());
    std::vector<T> out(static_cast<std::size_t>(numel()));
    std::transform(p, p + numel(), out.begin(), [](S v) { return static_cast<T>(v); });
    return out;
  });
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;
template std::vector<int> Tensor::to_vector<int>() const;

template <class T>
T Tensor::item() const {
  if (numel() != 1) {
    throw ShapeError(fmt::format("Tensor::item: needs a one-element tensor, got shape {}", shape()));
  }
  return detail::dispatch_all(dtype(), [&](auto tag) {
    return static_cast<T>(*static_cast<const decltype(tag)*>(raw_data()));
  });
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template std::int64_t Tensor::item<std::int64_t>() const;
template int Tensor::item<int>() const;

double Tensor::at(std::initializer_list<std::int64_t> index) const {
  const Shape& s = shape();
  if (index.size() != s.size()) {
    throw ShapeError(fmt::format("Tensor::at: got {} indices for shape {}", index.size(), s));
  }
  std::int64_t flat = 0;
  std::size_t d = 0;
  for (std::int64_t i : index) {
    const std::int64_t j = i < 0 ? i + s[d] : i;
    if (j < 0 || j >= s[d]) {
      throw ValueError(fmt::format("Tensor::at: index {} is out of range for dim {} of shape {}",
                                   i, d, s));
    }
    flat = flat * s[d] + j;
    ++d;
  }
  return detail::dispatch_all(dtype(), [&](auto tag) {
    return static_cast<double>(static_cast<const decltype(tag)*>(raw_data())[flat]);
  });
}

// ---- in-place updates ------------------------------------------------------------------------

namespace {
void check_inplace(const Tensor& t, const char* op) {
  checked(t.impl(), op);
  if (t.requires_grad() && is_grad_enabled()) {
    throw GraphError(fmt::format(
        "Tensor::{}: in-place change of a tensor that requires grad ({} {}) while grad mode "
        "is on; wrap optimizer updates in a NoGradGuard", op, t.shape(), t.dtype()));
  }
}

/// An i64 tensor cannot be scaled by a fraction without silently truncating.
void check_integral_factor(const Tensor& t, double factor, const char* op, const char* what) {
  if (t.dtype() == DType::i64 && factor != std::trunc(factor)) {
    throw ValueError(fmt::format("Tensor::{}: {} {} is not a whole number, and the tensor is i64 {}",
                                 op, what, factor, t.shape()));
  }
}

void check_operand(const Tensor& t, const Tensor& other, const char* op) {
  checked(other.impl(), op);
  if (other.dtype() != t.dtype()) {
    throw DTypeError(fmt::format("Tensor::{}: operand is {}, the tensor is {}", op,
                                 other.dtype(), t.dtype()));
  }
  if (other.shape() != t.shape() && other.numel() != 1) {
    throw ShapeError(fmt::format("Tensor::{}: operand shape {} does not match {} (nor is it a "
                                 "single element)", op, other.shape(), t.shape()));
  }
}

/// In-place updates of at least this many elements (the gradients the engine accumulates
/// into leaves, zero_grad, an optimizer's buffers) are split across the threads.
constexpr std::int64_t kParallelFrom = std::int64_t{1} << 16;

/// p[0, n) = v; from kParallelFrom elements up, on all threads with streaming stores, each
/// thread a share of whole cache lines: for the gradients zero_grad clears, read again only
/// by the next backward, after the forward has passed far more data through the caches.
/// ResNet-18's 45 MB of gradients on a two-CCD Zen 5, plain → streamed: 1 thread 2.1-2.5 →
/// 1.7-2.1 ms; 2 threads in a steady loop 1.0-1.3 → 0.9-1.1 ms, but in the first step after
/// a one-thread step 5.3 → 1.2 ms (every line then sits in the first core's cache, and a plain
/// store to a line the other core holds waits for it).
template <class T>
void fill_streamed(T* p, std::int64_t n, T v) {
  if (n < kParallelFrom) {
    std::fill_n(p, n, v);
    return;
  }
#pragma omp parallel
  {
    constexpr std::int64_t line = 64 / sizeof(T);
    const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t begin = n * t / threads / line * line;
    const std::int64_t end = t + 1 == threads ? n : n * (t + 1) / threads / line * line;
    detail::stream_map(p + begin, end - begin, [v](std::int64_t) { return v; });
    detail::stream_fence();
  }
}

/// Applies f(self_elem, other_elem) element-wise, broadcasting a one-element operand.
template <class T, class F>
TAPEGRAD_MULTIVERSION void update_with(Tensor& t, const Tensor& other, F f) {
  T* p = t.data<T>();
  const T* q = other.data<T>();
  const std::int64_t n = t.numel();
  if (other.numel() == 1) {
    const T v = q[0];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
    for (std::int64_t i = 0; i < n; ++i) p[i] = f(p[i], v);
    return;
  }
  // Not one loop reading q[i * step]: that one compiles to gathers.
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (std::int64_t i = 0; i < n; ++i) p[i] = f(p[i], q[i]);
}
/// dst[i] += src[i] in 32-byte vectors, also where AVX-512 is there: memory-bound, this loop
/// ran 8-12 % faster on Zen 4 with 256-bit loads and stores than with the 512-bit ones GCC
/// picks for x86-64-v4 (two accumulations into the same 32 MB, 41 interleaved rounds).
template <class T>
TAPEGRAD_MULTIVERSION void add_run(T* __restrict dst, const T* __restrict src, std::int64_t n) {
  using Vec [[gnu::vector_size(32)]] = T;
  constexpr std::int64_t kLanes = 32 / sizeof(T);
  std::int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    Vec d0, d1, s0, s1;
    std::memcpy(&d0, dst + i, 32);
    std::memcpy(&d1, dst + i + kLanes, 32);
    std::memcpy(&s0, src + i, 32);
    std::memcpy(&s1, src + i + kLanes, 32);
    d0 += s0;
    d1 += s1;
    std::memcpy(dst + i, &d0, 32);
    std::memcpy(dst + i + kLanes, &d1, 32);
  }
  for (; i < n; ++i) dst[i] += src[i];
}
}  // namespace

namespace detail {
void add_into(float* dst, const float* src, std::int64_t n) { add_run(dst, src, n); }
void add_into(double* dst, const double* src, std::int64_t n) { add_run(dst, src, n); }
}  // namespace detail

Tensor& Tensor::zero_() { return fill_(0.0); }

void Tensor::zero_grad() {
  if (!checked(impl_, "zero_grad").grad) return;
  Tensor grad(impl_->grad);
  check_inplace(grad, "zero_grad");
  detail::dispatch_all(grad.dtype(), [&](auto tag) {
    using T = decltype(tag);
    fill_streamed(grad.data<T>(), grad.numel(), T(0));
  });
  detail::bump_version(grad);
}

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  detail::dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = data<T>();
    const auto v = static_cast<T>(value);
    const std::int64_t n = numel();
#pragma omp parallel for schedule(static) if (n >= kParallelFrom)
    for (std::int64_t i = 0; i < n; ++i) p[i] = v;
  });
  detail::bump_version(*this);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_");
  check_integral_factor(*this, alpha, "add_", "alpha");
  check_operand(*this, other, "add_");
  detail::dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto a = static_cast<T>(alpha);
    update_with<T>(*this, other, [a](T x, T y) { return static_cast<T>(x + a * y); });
  });
  detail::bump_version(*this);
  return *this;
}

Tensor& Tensor::mul_(double value) {
  check_inplace(*this, "mul_");
  check_integral_factor(*this, value, "mul_", "factor");
  detail::dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = data<T>();
    const auto v = static_cast<T>(value);
    const std::int64_t n = numel();
#pragma omp parallel for schedule(static) if (n >= kParallelFrom)
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] * v);
  });
  detail::bump_version(*this);
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other) {
  check_inplace(*this, "mul_");
  check_operand(*this, other, "mul_");
  detail::dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    update_with<T>(*this, other, [](T x, T y) { return static_cast<T>(x * y); });
  });
  detail::bump_version(*this);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  check_operand(*this, src, "copy_");
  detail::dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    update_with<T>(*this, src, [](T, T y) { return y; });
  });
  detail::bump_version(*this);
  return *this;
}

// ---- factories -------------------------------------------------------------------------------

namespace {
template <class S>
Tensor from_values(const std::vector<S>& values, const Shape& shape, DType dtype) {
  Tensor t = detail::make_tensor(shape, dtype, "from_vector");
  if (static_cast<std::int64_t>(values.size()) != t.numel()) {
    throw ShapeError(fmt::format("from_vector: {} values do not fill shape {} ({} elements)",
                                 values.size(), shape, t.numel()));
  }
  detail::dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    std::transform(values.begin(), values.end(), t.data<T>(),
                   [](S v) { return static_cast<T>(v); });
  });
  return t;
}
}  // namespace

Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  return from_values(values, shape, dtype);
}
Tensor from_vector(const std::vector<float>& values, const Shape& shape, DType dtype) {
  return from_values(values, shape, dtype);
}
Tensor from_vector(const std::vector<std::int64_t>& values, const Shape& shape, DType dtype) {
  return from_values(values, shape, dtype);
}

Tensor empty(const Shape& shape, DType dtype) { return detail::make_tensor(shape, dtype, "empty"); }

namespace {
/// full, with errors naming `op` (zeros, ones, ... call it).
Tensor filled(const Shape& shape, double value, DType dtype, std::string_view op) {
  // Converting a double outside int64's range (or NaN) to int64 is undefined: refuse it, as
  // PyTorch does ("value cannot be converted to type int64_t without overflow").
  if (dtype == DType::i64 && !(value >= -0x1p63 && value < 0x1p63)) {
    throw ValueError(fmt::format("{}: value {} cannot be converted to i64 without overflow", op,
                                 value));
  }
  Tensor t = detail::make_tensor(shape, dtype, op);
  detail::dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    std::fill_n(t.data<T>(), t.numel(), static_cast<T>(value));
  });
  return t;
}
}  // namespace

Tensor full(const Shape& shape, double value, DType dtype) { return filled(shape, value, dtype, "full"); }
Tensor zeros(const Shape& shape, DType dtype) { return filled(shape, 0.0, dtype, "zeros"); }
Tensor ones(const Shape& shape, DType dtype) { return filled(shape, 1.0, dtype, "ones"); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype()); }
Tensor scalar_tensor(double value, DType dtype) { return full(Shape{}, value, dtype); }

Tensor arange(double start, double end, double step, DType dtype) {
  if (step == 0.0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step)) {
    throw ValueError(fmt::format("arange: needs finite start, end and a non-zero step, got "
                                 "start={} end={} step={}", start, end, step));
  }
  const double count = std::ceil((end - start) / step);
  if (count > 1e15) {
    throw ValueError(fmt::format("arange: start={} end={} step={} gives {} elements", start,
                                 end, step, count));
  }
  const auto n = static_cast<std::int64_t>(std::max(0.0, count));
  Tensor t = detail::make_tensor(Shape{n}, dtype, "arange");
  detail::dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  return t;
}
Tensor arange(double end, DType dtype) { return arange(0.0, end, 1.0, dtype); }

}  // namespace tapegrad
