#pragma once
// Internal representation of tensors and graph nodes. Included by autograd/ and ops/.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "autograd/pool.hpp"
#include "tapegrad/op.hpp"
#include "tapegrad/tensor.hpp"

namespace tapegrad::detail {

/// A block of 64-byte aligned memory shared by a tensor and its views.
struct Storage {
  /// Data of at most this many bytes lives inside the Storage object itself: a scalar or a
  /// few values then cost no allocation of their own (and a record stays small).
  static constexpr std::size_t kInlineBytes = 16;

  explicit Storage(std::size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  std::size_t nbytes = 0;  ///< capacity, at least the requested size
  std::uint64_t version = 0;  ///< bumped by every in-place change
  alignas(alignof(std::max_align_t)) std::byte inline_data[kInlineBytes];
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  /// Where the data starts in the storage, in bytes: nonzero for a view of a contiguous block
  /// of another tensor (a narrow along its first dim, say). The data is always contiguous.
  std::size_t offset = 0;
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;      ///< the record that produced this tensor, if any
  std::shared_ptr<TensorImpl> grad;   ///< accumulated gradient of a leaf
  /// An op that made a tensor from inputs requiring grad while recording was off
  /// (NoGradGuard): its name and those inputs, for explain_no_grad.
  struct Untracked {
    std::string_view op;
    std::vector<std::weak_ptr<TensorImpl>> from;
  };
  std::unique_ptr<Untracked> untracked;  ///< rare: kept out of line
};

/// A tensor saved for backward with the storage version it had then.
struct SavedTensor {
  Tensor tensor;  ///< a detached handle on the saved values
  std::uint64_t version = 0;
  /// The input as passed to save(), when it requires grad: a VJP that is recorded
  /// (create_graph) sees it with its graph.
  std::shared_ptr<TensorImpl> source;
  /// For the op's own output, the node (not owned: it owns this): a recorded VJP sees the
  /// output with it as its producer.
  std::weak_ptr<Node> output_of;
};

/// One recorded op application: a vertex of the tape's graph.
struct Node {
  struct Input {
    std::shared_ptr<Node> producer;        ///< set when the input came from a recorded op
    std::shared_ptr<TensorImpl> leaf;      ///< set when the input is a leaf requiring grad
    TensorMeta meta;
    bool needs_grad = false;
    /// For an input that did not require grad (where explain_no_grad looks for a cut): the
    /// tensor passed in, and its storage (which outlives a temporary detach()).
    struct Unrecorded {
      std::weak_ptr<TensorImpl> source;
      std::weak_ptr<Storage> storage;
    };
    std::unique_ptr<Unrecorded> unrecorded;  ///< out of line: most inputs require grad
    std::shared_ptr<TensorImpl> source() const { return unrecorded ? unrecorded->source.lock() : nullptr; }
  };

  Node();
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  std::unique_ptr<OpHolder> op;
  std::vector<Input, PoolAllocator<Input>> inputs;
  std::vector<SavedTensor, PoolAllocator<SavedTensor>> saved;
  TensorMeta out_meta;
  /// Copies of the input values, kept only under a RecordInputsGuard (for check_graph).
  std::vector<Tensor> kept_inputs;
  bool released = false;  ///< saved tensors freed by a backward without retain_graph
  /// For a view op (OpHolder::view) whose output shares input 0's storage: where the output
  /// starts in input 0, in elements; -1 otherwise.
  std::int64_t view_offset = -1;
  std::int64_t vertex = -1;  ///< scratch: vertex id while a graph walk is under way
};

/// Whether record() keeps copies of the inputs on this thread; returns the previous value.
bool set_keep_inputs(bool keep);

/// Checks sizes (non-negative, byte count within limits) and allocates uninitialised data;
/// a bad size is an error naming `op`, the function the user called.
Tensor make_tensor(const TensorMeta& meta, std::string_view op = "tensor");
inline Tensor make_tensor(const Shape& shape, DType dtype, std::string_view op = "tensor") {
  return make_tensor({shape, dtype}, op);
}
/// A new handle on t's storage with another shape (numel must match).
/// A tensor of `shape` on t's storage, starting `offset` elements into t's data (the caller
/// guarantees that shape's elements fit).
Tensor alias(const Tensor& t, const Shape& shape, std::int64_t offset = 0);
void bump_version(const Tensor& t);
/// A new tensor with a copy of t's data; not recorded, never requires grad.
Tensor copy_data(const Tensor& t);

}  // namespace tapegrad::detail
