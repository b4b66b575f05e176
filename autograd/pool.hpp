#pragma once
// Per-thread caches of small freed blocks for the objects every recorded op allocates
// (records, tensor handles, storages, op holders). A chain of thousands of ops allocates
// all of them before backward frees any, which overflows malloc's own small per-thread
// cache and sends each call through its slow paths; these caches keep up to a bounded
// number of blocks per size class instead. Blocks come from malloc; one freed on another
// thread joins that thread's cache, and beyond the bound (or after the thread's cache is
// gone) blocks go back to free().
#include <cstddef>
#include <new>

namespace tapegrad::detail {

void* pool_allocate(std::size_t bytes);
void pool_deallocate(void* p, std::size_t bytes) noexcept;

/// A std allocator over pool_allocate, for std::allocate_shared and containers.
template <class T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() = default;
  template <class U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}  // NOLINT: rebinding is implicit
  T* allocate(std::size_t n) { return static_cast<T*>(pool_allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { pool_deallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const PoolAllocator<U>&) const noexcept { return true; }
};

}  // namespace tapegrad::detail
