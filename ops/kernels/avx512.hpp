#pragma once
// AVX-512 building blocks of the window kernels (max pool, depthwise conv): a block of 16
// consecutive outputs of a row, and for each kernel column the input elements those
// outputs read, loaded with masks so that row ends and padding cost no branches.
// Functions here are compiled for AVX-512 whatever the library's baseline; callers check
// avx512::available() first and keep a portable path for other CPUs.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TAPEGRAD_HAVE_AVX512 1

#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "ops/kernels/window.hpp"

#define TAPEGRAD_AVX512 __attribute__((target("avx512f")))

namespace tapegrad::detail::avx512 {

inline bool available() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

/// Lanes [a, b) of a 16-lane mask, 0 <= a <= b <= 16.
inline __mmask16 lanes(std::int64_t a, std::int64_t b) {
  if (a >= b) return 0;
  return static_cast<__mmask16>(((1u << b) - 1) & ~((1u << a) - 1));
}

/// What one block of 16 outputs reads at one kernel column: lane l reads input column
/// offset + l * stride, for the lanes in mask (inside the input and inside the row).
struct LaneTap {
  std::int64_t offset;
  __mmask16 mask;
  __mmask16 even_lo, even_hi;  ///< stride 2: the elements of the two 16-float loads needed
};

/// Whether lane_taps(a) stays a small table (at most 65,536 entries, 1.5 MiB): kernels
/// fall back to their portable loops for the rare axes (huge kernels over huge rows) where
/// it would not.
inline bool small_lane_table(const Axis& a) {
  return a.kernel <= (std::int64_t{1} << 16) && (a.out + 15) / 16 <= (std::int64_t{1} << 16) / a.kernel;
}

/// The LaneTaps of a row along axis a, indexed [block * a.kernel + tap]; blocks of 16
/// outputs, the last one partial.
inline void lane_taps(const Axis& a, std::vector<LaneTap>& out) {
  const std::int64_t blocks = (a.out + 15) / 16;
  out.resize(static_cast<std::size_t>(blocks * a.kernel));
  for (std::int64_t kj = 0; kj < a.kernel; ++kj) {
    const TapRange r = tap_range(a, kj);
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::int64_t o0 = blk * 16, n = std::min<std::int64_t>(16, a.out - o0);
      const std::int64_t lo = std::max(r.lo, o0) - o0, hi = std::max(lo, std::min(r.hi, o0 + n) - o0);
      // Stride 2: lanes [lo, hi) need elements 2 lo .. 2 hi - 2 of 32 consecutive floats.
      const std::uint64_t even = lo == hi ? 0 : ((std::uint64_t{1} << (2 * hi - 1)) - 1) & ~((std::uint64_t{1} << (2 * lo)) - 1);
      out[static_cast<std::size_t>(blk * a.kernel + kj)] = {
          o0 * a.stride + r.offset, lanes(lo, hi), static_cast<__mmask16>(even),
          static_cast<__mmask16>(even >> 16)};
    }
  }
}

/// lane_taps(a) in this thread's reusable table; the pointer holds until the next call on
/// this thread. (A plain pointer for the kernels' loops: with -fPIC every access to a
/// thread_local can be a call to __tls_get_addr that spills the vector registers.)
inline const LaneTap* lane_table(const Axis& a) {
  thread_local std::vector<LaneTap> table;
  lane_taps(a, table);
  return table.data();
}

/// lane l = l * stride (wraps only for lanes that no mask lets through).
TAPEGRAD_AVX512 inline __m512i lane_offsets(std::int64_t stride) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<std::int32_t>(stride)));
}

/// Lane l = row[t.offset + l * stride] for the lanes of t.mask, 0 elsewhere; all 0 when
/// `keep` is 0 (a row outside the input: nothing is read). row + t.offset may lie outside
/// the row (padding): masked-off lanes are never read. S is the stride when it is 1 or 2
/// (contiguous loads), 0 for any stride (a gather through `offsets` = lane_offsets(stride)).
template <int S>
TAPEGRAD_AVX512 inline __m512 load_tap(const float* row, const LaneTap& t, __m512i offsets,
                                       __mmask16 keep = 0xFFFF) {
  const float* p = row + t.offset;
  if constexpr (S == 1) {
    return _mm512_maskz_loadu_ps(t.mask & keep, p);
  } else if constexpr (S == 2) {
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(t.even_lo & keep, p), evens,
                                  _mm512_maskz_loadu_ps(t.even_hi & keep, p + 16));
  } else {
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), t.mask & keep, offsets, p, 4);
  }
}

}  // namespace tapegrad::detail::avx512
#endif
