#pragma once
// One caching allocator for tensor storage and kernel workspaces (block_cache.cpp). A
// workspace an op frees becomes the next tensor's storage and a freed tensor the next
// workspace, so a training step's peak memory is its tensors plus the workspace of the op
// that is running, not plus every workspace an op ever grew to.
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tapegrad::detail {

/// TAPEGRAD_ASAN is defined when building under AddressSanitizer (GCC defines
/// __SANITIZE_ADDRESS__, Clang answers __has_feature).
#if defined(__SANITIZE_ADDRESS__)
#define TAPEGRAD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TAPEGRAD_ASAN 1
#endif
#endif

/// Whether blocks are cached at all. Not under AddressSanitizer: every block then comes from
/// operator new, so that the sanitizer sees each tensor's and workspace's bounds.
#ifdef TAPEGRAD_ASAN
inline constexpr bool kBlocksCached = false;
#else
inline constexpr bool kBlocksCached = true;
#endif

/// A block of at least `bytes` (64-byte aligned from 512 bytes); `bytes` becomes the block's
/// capacity, which block_release needs. Throws std::bad_alloc.
void* block_acquire(std::size_t& bytes);
/// Gives a block back for reuse.
void block_release(void* p, std::size_t bytes) noexcept;

/// An uninitialised buffer of Ts from the block cache, given back when destroyed.
template <class T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(std::int64_t count) { get(count); }
  ~Scratch() { release(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  Scratch& operator=(Scratch&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }

  /// At least `count` elements (a new block when the current one is smaller: contents lost).
  T* get(std::int64_t count) {
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    if (data_ == nullptr || bytes > bytes_) {
      release();
      std::size_t capacity = bytes;
      data_ = block_acquire(capacity);
      bytes_ = capacity;
    }
    return data();
  }
  T* data() const { return static_cast<T*>(data_); }

 private:
  void release() noexcept {
    if (data_ != nullptr) block_release(data_, bytes_);
    data_ = nullptr;
    bytes_ = 0;
  }

  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace tapegrad::detail
