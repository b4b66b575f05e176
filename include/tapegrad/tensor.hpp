#pragma once
/// \file
/// Tensor: a dense, contiguous, row-major array of f32, f64, i64 or bool values that can record
/// the ops applied to it for reverse-mode differentiation.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tapegrad/error.hpp"
#include "tapegrad/shape.hpp"

namespace tapegrad {

namespace detail {
struct TensorImpl;
}

/// Shape and dtype of a tensor, without its data.
struct TensorMeta {
  Shape shape;
  DType dtype = DType::f32;
  friend bool operator==(const TensorMeta&, const TensorMeta&) = default;
};

/// A handle to tensor data. Copies share the data (like PyTorch); `clone()` copies it.
/// A default-constructed Tensor is undefined: `defined()` is false and most calls throw.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<detail::TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  DType dtype() const;
  TensorMeta meta() const { return {shape(), dtype()}; }
  std::int64_t numel() const;
  /// Rank (number of dims).
  std::size_t dim() const { return shape().size(); }
  /// Size of dim `d`; negative `d` counts from the end.
  std::int64_t size(std::int64_t d) const;

  // ---- autograd -------------------------------------------------------------------------
  bool requires_grad() const;
  /// Marks a leaf tensor as a parameter whose gradient is accumulated into grad().
  /// Only floating tensors can require grad; a non-leaf cannot be switched off.
  Tensor& set_requires_grad(bool requires_grad = true);
  /// True for tensors not produced by a recorded op.
  bool is_leaf() const;
  /// Accumulated gradient of a leaf (undefined Tensor if backward never reached it).
  Tensor grad() const;
  /// Replaces the accumulated gradient (undefined to clear it).
  void set_grad(const Tensor& grad);
  /// Makes this tensor object hold `data`'s values, shape and dtype (sharing its storage), as
  /// libtorch's `set_data` / PyTorch's `t.data = new`: every handle to this tensor (a
  /// module's member, an optimizer's list, a copy kept anywhere) sees the change, which is how
  /// Module::to converts in place. Only for leaves (GraphError otherwise); requires_grad is
  /// kept, so `data` must then be floating (DTypeError). The accumulated gradient is dropped
  /// when its shape or dtype no longer matches. `data`'s own graph is not kept. A graph
  /// recorded before a change of shape or dtype can no longer accumulate into this tensor:
  /// its backward throws GraphError.
  Tensor& set_data(const Tensor& data);
  /// Sets the accumulated gradient to zero (if there is one), like optimizer.zero_grad().
  void zero_grad();
  /// Name of the op that produced this tensor ("" for leaves), e.g. "conv2d".
  std::string grad_fn_name() const;
  /// Backpropagates from this tensor. Without `grad_output` the tensor must hold one
  /// element; otherwise `grad_output` must have this tensor's shape and dtype.
  /// Saved tensors are freed afterwards unless `retain_graph` is true (by default, unless
  /// `create_graph`). With `create_graph` the VJPs are recorded, so the gradients
  /// accumulated into grad() carry a graph and can be differentiated again.
  void backward(const Tensor& grad_output = Tensor(), std::optional<bool> retain_graph = {},
                bool create_graph = false) const;

  // ---- data -----------------------------------------------------------------------------
  /// Copies the values out, converting from any dtype.
  template <class T>
  std::vector<T> to_vector() const;
  /// The single value of a one-element tensor, converted to T.
  template <class T>
  T item() const;
  /// Typed pointer to the data; throws DTypeError when T does not match dtype().
  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  /// Element at a multi-index (one index per dim, negative counts from the end), as double.
  double at(std::initializer_list<std::int64_t> index) const;
  /// Counter bumped by every in-place change of the underlying storage.
  std::uint64_t version() const;
  /// True when both handles share one storage (views, copies of the handle).
  bool shares_storage(const Tensor& other) const;

  // ---- copies, conversions and views ------------------------------------------------------
  /// A new tensor with a copy of the data, recorded (its gradient flows back to this).
  Tensor clone() const;
  /// The same data, cut from the graph: never requires grad.
  Tensor detach() const;
  /// Converts to another dtype; differentiable between f32 and f64.
  Tensor to(DType dtype) const;
  /// Same data, new shape (one size may be -1). Shares storage; recorded.
  Tensor reshape(const Shape& shape) const;
  /// Alias of reshape (all tensors are contiguous).
  Tensor view(const Shape& shape) const { return reshape(shape); }
  /// Merges dims start..end (inclusive; negative counts from the end) into one.
  Tensor flatten(std::int64_t start_dim = 0, std::int64_t end_dim = -1) const;

  // ---- in-place updates (for optimizers; they bump version()) -----------------------------
  // Allowed on tensors that require grad only inside a NoGradGuard, as in PyTorch.
  Tensor& zero_();
  Tensor& fill_(double value);
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);
  Tensor& mul_(const Tensor& other);
  Tensor& copy_(const Tensor& src);

  /// Internal handle; stable but not part of the documented API.
  const std::shared_ptr<detail::TensorImpl>& impl() const { return impl_; }

 private:
  void* raw_data() const;
  void check_dtype_for(DType want, const char* what) const;
  std::shared_ptr<detail::TensorImpl> impl_;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <>
constexpr DType dtype_of<bool>() { return DType::boolean; }

template <class T>
T* Tensor::data() {
  check_dtype_for(dtype_of<T>(), "data");
  return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data() const {
  check_dtype_for(dtype_of<T>(), "data");
  return static_cast<const T*>(raw_data());
}

/// Tensors with names, in order: a model's state ("features.0.weight", ...), an
/// optimizer's state, the content of a checkpoint.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// ---- factories ---------------------------------------------------------------------------
/// A tensor holding `values` (converted to `dtype`), which must have shape.numel() elements.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32);
Tensor from_vector(const std::vector<float>& values, const Shape& shape, DType dtype = DType::f32);
Tensor from_vector(const std::vector<std::int64_t>& values, const Shape& shape,
                   DType dtype = DType::i64);
/// A 0-dim tensor.
Tensor scalar_tensor(double value, DType dtype = DType::f32);
Tensor empty(const Shape& shape, DType dtype = DType::f32);
Tensor zeros(const Shape& shape, DType dtype = DType::f32);
Tensor ones(const Shape& shape, DType dtype = DType::f32);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
/// 1-D tensor start, start+step, ... < end.
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::f32);
Tensor arange(double end, DType dtype = DType::f32);
/// Uniform in [0, 1) from the global generator (see manual_seed).
Tensor rand(const Shape& shape, DType dtype = DType::f32);
/// Uniform in [low, high).
Tensor uniform(const Shape& shape, double low, double high, DType dtype = DType::f32);
/// Standard normal from the global generator.
Tensor randn(const Shape& shape, DType dtype = DType::f32);
/// Uniform integers in [low, high), i64.
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape);

/// Seeds the global generator used by rand, randn, randint, dropout and init.
void manual_seed(std::uint64_t seed);

/// Largest total size in bytes one tensor may have (default: the machine's physical
/// memory). Larger requests throw ValueError instead of meeting the OOM killer.
std::size_t max_tensor_bytes();
void set_max_tensor_bytes(std::size_t bytes);
/// Gives back to the system the free memory that tapegrad keeps for reuse: freed tensors and
/// workspaces of 64 KiB and more stay mapped (so a training loop makes no page faults), up
/// to 1 GiB of them.
void empty_cache();

/// PyTorch-like text: "tensor([[1., 2.], [3., 4.]], shape=[2, 2], dtype=f32)".
std::string to_string(const Tensor& t);

}  // namespace tapegrad

template <>
struct fmt::formatter<tapegrad::Tensor> : fmt::formatter<std::string_view> {
  auto format(const tapegrad::Tensor& t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(tapegrad::to_string(t), ctx);
  }
};
