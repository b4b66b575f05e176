// The per-thread small-block caches of pool.hpp: size classes of 32 bytes up to 512 bytes,
// each a singly linked list of freed blocks threaded through the blocks themselves.
#include "autograd/pool.hpp"

#include <array>
#include <cstdlib>

#include "tapegrad/op.hpp"

namespace tapegrad::detail {
namespace {

constexpr std::size_t kGranule = 32;
constexpr std::size_t kMaxBytes = 512;
constexpr std::size_t kClasses = kMaxBytes / kGranule;
constexpr std::size_t kMaxCached = 8192;  ///< blocks kept per class (at most 4 MiB in all)

struct FreeBlock {
  FreeBlock* next;
};

struct Cache {
  std::array<FreeBlock*, kClasses> head{};
  std::array<std::size_t, kClasses> count{};
  Cache() { alive() = true; }
  ~Cache() {
    alive() = false;
    for (FreeBlock* b : head) {
      while (b != nullptr) {
        FreeBlock* next = b->next;
        std::free(b);
        b = next;
      }
    }
  }
  /// False once this thread's cache is destroyed (thread_local bools outlive it): later
  /// frees from other thread_local destructors go straight to free().
  static bool& alive() {
    thread_local bool flag = false;
    return flag;
  }
};

Cache* cache() {
  thread_local Cache c;
  return Cache::alive() ? &c : nullptr;
}

std::size_t size_class(std::size_t bytes) { return (bytes + kGranule - 1) / kGranule - 1; }

}  // namespace

void* pool_allocate(std::size_t bytes) {
  if (bytes > 0 && bytes <= kMaxBytes) {
    const std::size_t k = size_class(bytes);
    if (Cache* c = cache(); c != nullptr && c->head[k] != nullptr) {
      FreeBlock* b = c->head[k];
      c->head[k] = b->next;
      --c->count[k];
      return b;
    }
    bytes = (k + 1) * kGranule;  // so that the block can serve its whole class later
  }
  if (void* p = std::malloc(bytes)) return p;
  throw std::bad_alloc();
}

void pool_deallocate(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes > 0 && bytes <= kMaxBytes) {
    const std::size_t k = size_class(bytes);
    if (!Cache::alive()) return std::free(p);
    Cache* c = cache();
    if (c->count[k] < kMaxCached) {
      c->head[k] = new (p) FreeBlock{c->head[k]};
      ++c->count[k];
      return;
    }
  }
  std::free(p);
}

void* OpHolder::operator new(std::size_t bytes) { return pool_allocate(bytes); }
void OpHolder::operator delete(void* p, std::size_t bytes) noexcept { pool_deallocate(p, bytes); }

}  // namespace tapegrad::detail
