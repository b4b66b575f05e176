// The caching allocator behind tensor storage and kernel workspaces (block_cache.hpp).
//
// Why: a training step frees and re-allocates the same multi-MB activations, gradients and
// workspaces every iteration. Returned to the system, each would come back as fresh pages,
// a page fault per 4 KiB, which dominates big convolutions and pools. Kept as whole blocks
// and handed out only to requests of about their size, a step's peak memory grows by every
// size mismatch: ResNet-18's step kept 30-60 MB more that way.
//
// How: blocks of 64 KiB and more are carved, best fit, out of segments of address space
// mapped from the system (256 MiB each, or the request's size when larger; pages become
// resident when first written). A freed block merges with the free blocks beside it, so the
// memory of the 8 MB activations a backward frees serves its 9 MB workspace, and resident
// memory follows the largest total in use at one time. Free memory stays resident, so a
// steady loop makes no page faults, up to kResidentFreeBound; beyond that, and on
// empty_cache(), free ranges are given back (madvise) and whole free segments unmapped.
// Smaller blocks come from operator new, 64-byte aligned from 512 bytes (an aligned
// allocation costs several times more, which shows when a program runs many tiny ops).
//
// Under AddressSanitizer every block comes from operator new (kBlocksCached), so that the
// sanitizer stage sees each tensor's and workspace's bounds.
#include "autograd/block_cache.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <tuple>
#include <utility>

#include <sys/mman.h>

#include "tapegrad/tensor.hpp"

namespace tapegrad::detail {
namespace {

constexpr std::align_val_t kAlign{64};
constexpr std::size_t kAlignFrom = 512;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kSegmentBytes = std::size_t{256} << 20;
constexpr std::size_t kResidentFreeBound = std::size_t{1} << 30;

constexpr std::size_t kArenaFrom = kBlocksCached ? std::size_t{64} << 10 : ~std::size_t{0};

class Arena {
 public:
  void* acquire(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    auto it = by_size_.lower_bound({bytes, 0, nullptr});
    if (it == by_size_.end()) {
      add_segment(std::max(bytes, kSegmentBytes));
      it = by_size_.lower_bound({bytes, 0, nullptr});
    }
    const auto [size, age, start] = *it;
    erase_free(start);
    if (size > bytes) insert_free_or_drop(start + bytes, size - bytes, age);
    resident_free_ -= std::min(resident_free_, bytes);
    return start;
  }

  void release(void* p, std::size_t bytes) noexcept {
    std::lock_guard lock(mutex_);
    char* start = static_cast<char*>(p);
    std::size_t size = bytes;
    // merge with the free ranges after and before it, within its segment
    if (auto next = by_address_.find(start + size); next != by_address_.end() && !segments_.contains(next->first)) {
      size += next->second.bytes;
      erase_free(next->first);
    }
    if (auto prev = by_address_.lower_bound(start);
        prev != by_address_.begin() && !segments_.contains(start)) {
      --prev;
      if (prev->first + prev->second.bytes == start) {
        start = prev->first;
        size += prev->second.bytes;
        erase_free(start);
      }
    }
    insert_free_or_drop(start, size, --age_);
    resident_free_ += bytes;
    if (resident_free_ > kResidentFreeBound) give_back();
  }

  void empty() {
    std::lock_guard lock(mutex_);
    give_back();
  }

 private:
  void add_segment(std::size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    char* start = static_cast<char*>(p);
    try {
      segments_.emplace(start, bytes);
      try {
        insert_free(start, bytes, ~std::uint64_t{0});
      } catch (...) {
        segments_.erase(start);
        throw;
      }
    } catch (...) {
      munmap(p, bytes);
      throw;
    }
  }

  /// Unmaps the segments that are wholly free and gives the pages of other free ranges back.
  void give_back() noexcept {
    for (auto it = segments_.begin(); it != segments_.end();) {
      const auto [start, bytes] = *it;
      const auto free = by_address_.find(start);
      if (free != by_address_.end() && free->second.bytes == bytes) {
        erase_free(start);
        munmap(start, bytes);
        it = segments_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [start, range] : by_address_) madvise(start, range.bytes, MADV_DONTNEED);
    resident_free_ = 0;
  }

  struct Range {
    std::size_t bytes;
    std::uint64_t age;  ///< smaller: freed more recently
  };

  /// Records a free range in both trees, or in neither (std::bad_alloc for a tree node).
  void insert_free(char* start, std::size_t bytes, std::uint64_t age) {
    const auto it = by_address_.emplace(start, Range{bytes, age}).first;
    try {
      by_size_.emplace(bytes, age, start);
    } catch (...) {
      by_address_.erase(it);
      throw;
    }
  }
  /// insert_free where a failure must not escape (release is noexcept, and acquire has its
  /// block): out of memory for the two tree nodes (tens of bytes), the range (with the free
  /// neighbours it merged) stays mapped but leaves the cache for good, instead of
  /// std::terminate (tests/autograd/test_alloc_faults.cpp).
  void insert_free_or_drop(char* start, std::size_t bytes, std::uint64_t age) noexcept {
    try {
      insert_free(start, bytes, age);
    } catch (const std::bad_alloc&) {
    }
  }
  void erase_free(char* start) {
    const auto it = by_address_.find(start);
    by_size_.erase({it->second.bytes, it->second.age, start});
    by_address_.erase(it);
  }

  std::mutex mutex_;
  std::map<char*, std::size_t> segments_;  ///< start -> bytes
  std::map<char*, Range> by_address_;      ///< the free ranges
  /// The same ranges, smallest first and, of one size, the most recently freed first (its
  /// memory is likeliest still in a cache).
  std::set<std::tuple<std::size_t, std::uint64_t, char*>> by_size_;
  std::uint64_t age_ = ~std::uint64_t{0} - 1;  ///< counts down at every release
  std::size_t resident_free_ = 0;  ///< free bytes written since the last give_back (about)
};

Arena& arena() {
  // Never destroyed: tensors in other static objects may be freed after it would be.
  static Arena& a = *new Arena;
  return a;
}

}  // namespace

void* block_acquire(std::size_t& bytes) {
  if (bytes >= kArenaFrom) {
    bytes = (bytes + kPage - 1) / kPage * kPage;
    return arena().acquire(bytes);
  }
  bytes = std::max<std::size_t>(bytes, 1);
  return bytes < kAlignFrom ? ::operator new(bytes) : ::operator new(bytes, kAlign);
}

void block_release(void* p, std::size_t bytes) noexcept {
  if (bytes >= kArenaFrom) {
    arena().release(p, bytes);
  } else if (bytes < kAlignFrom) {
    ::operator delete(p);
  } else {
    ::operator delete(p, kAlign);
  }
}

}  // namespace tapegrad::detail

void tapegrad::empty_cache() { detail::arena().empty(); }
