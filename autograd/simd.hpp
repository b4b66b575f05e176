#pragma once
// Low-level CPU helpers shared by the tensor storage (autograd/) and the kernels (ops/).
//
// TAPEGRAD_MULTIVERSION compiles a function for several x86-64 levels (v4: AVX-512, v3:
// AVX2/FMA, and the baseline) and lets the dynamic loader pick the best one the CPU
// supports (GCC function multiversioning, resolved once through an ifunc). `flatten`
// inlines the loop templates into each version so they are vectorised for it. The library
// itself is built for the baseline, so it still runs on any x86-64. Even memory-bound loops
// gain from it: an AVX2 `a += b` on 32 MB runs 1.3x faster than the SSE2 one on Zen 3.
//
// Streaming (non-temporal) stores: a normal store to a line that is not in cache first reads
// the line from memory (write-allocate), so writing an output that cannot stay in cache
// anyway costs a read it does not need: a copy moves 3 bytes per byte instead of 2, a map
// 3 instead of 2 (x read, out read, out written). Outputs of kStreamBytes and more are
// written with streaming stores: 1.3-1.5x faster copies and maps of 64 MB on Zen 3. Below
// that size the output may still be in cache when the next op reads it, so a normal store
// is the better choice.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <cpuid.h>
#include <emmintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TAPEGRAD_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define TAPEGRAD_MULTIVERSION
#endif

namespace tapegrad::detail {

/// Outputs from this size on are written with streaming stores (half the last-level cache
/// slice of a Zen 3/4 CCD, 32 MiB).
constexpr std::int64_t kStreamBytes = std::int64_t{16} << 20;

/// Bytes a streaming loop computes into a buffer before streaming it out: four cache lines.
/// Larger buffers measured slower (the loads of the buffer compete with the write-combining).
constexpr int kStreamChunkBytes = 256;

/// Stores `bytes` (a multiple of 16) from `src` to `dst` (16-byte aligned) with streaming
/// stores where the CPU has them.
inline void stream_store(void* dst, const void* src, std::size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (std::size_t i = 0; i < bytes / 16; ++i) _mm_stream_si128(d + i, _mm_loadu_si128(s + i));
#else
  std::memcpy(dst, src, bytes);
#endif
}

/// Orders the streaming stores before whatever follows (they are weakly ordered); call once
/// at the end of a thread's share of the work, before another thread may read it.
inline void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

/// Elements of T before `p` reaches a 64-byte boundary (the head a streaming loop writes with
/// normal stores), at most n.
template <class T>
std::int64_t elements_to_line(const T* p, std::int64_t n) {
  const auto misalign = reinterpret_cast<std::uintptr_t>(p) % 64;
  if (misalign == 0) return 0;
  if (misalign % sizeof(T) != 0) return n;  // never aligned: all normal stores
  return std::min<std::int64_t>(n, static_cast<std::int64_t>((64 - misalign) / sizeof(T)));
}

/// dst[i] = src[i] for i < n with streaming stores (the source and destination must not
/// overlap). Call stream_fence() after the last one.
template <class T>
void stream_copy(const T* src, T* dst, std::int64_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  const std::int64_t head = elements_to_line(dst, n);
  std::memcpy(dst, src, static_cast<std::size_t>(head) * sizeof(T));
  const std::int64_t body = (n - head) * static_cast<std::int64_t>(sizeof(T)) / 64 * 64;
  stream_store(dst + head, src + head, static_cast<std::size_t>(body));
  const std::int64_t done = head + body / static_cast<std::int64_t>(sizeof(T));
  std::memcpy(dst + done, src + done, static_cast<std::size_t>(n - done) * sizeof(T));
}

/// Whether stream_map beats plain stores for a one-input map on this CPU; `cheap`: f is a
/// few instructions (a select, min/max, a product, a square root), so the map is bound by
/// memory, not by its arithmetic. Measured on 64 MB f32 forwards, streamed against plain:
/// - Zen 3 (AVX2): streaming pays for every map.
/// - Zen 4 (AVX-512, AMD family 0x19), 1 / 2 threads, three runs each: cheap maps gain
///   (clamp 6.8-7.3 → 4.2-4.9 / 3.4-4.6 → 2.4-4.5 ms, leaky_relu 5.5-8.1 → 3.7-6.0 /
///   4.7-5.4 → 2.7-3.1, hardtanh 5.8-8.6 → 4.3-5.1 / 4.3-4.6 → 3.2-3.7); maps that evaluate
///   a vecmath polynomial do not (gelu 12.0-14.3 → 13.1-15.3 / 5.8-6.6 → 6.6-7.2, silu and
///   elu within the noise).
/// - Zen 5 (AMD family 0x1A), 1 thread, median of two runs: reloading the buffer costs more
///   than the write-allocate it saves for both kinds (elu 7.1 → 4.5 ms, erf 10.6 → 8.3, gelu
///   10.2 → 7.4, silu 8.1 → 5.8, clamp 4.8 → 4.1 plain). Two-input maps (maximum 5.4-5.9 →
///   6.5-8.2 ms) and the norms' outputs still gain from streaming there, and stream_copy,
///   which streams what it loads, keeps memcpy's speed.
/// Other CPUs with AVX-512 (not measured) follow Zen 4.
inline bool stream_map_pays(bool cheap) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool zen5_or_later = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__builtin_cpu_is("amd") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const unsigned base = (eax >> 8) & 0xf, extended = (eax >> 20) & 0xff;
    return (base == 0xf ? base + extended : base) >= 0x1a;
  }();
  if (!avx512) return true;
  return cheap && !zen5_or_later;
#else
  (void)cheap;
  return true;
#endif
}

/// out[i] = f(i) for i < n, computed kStreamChunkBytes at a time into a buffer (a loop the
/// compiler vectorises) and streamed out. f(i) reads the op's inputs at i. Call
/// stream_fence() after the last one.
template <class U, class F>
inline void stream_map(U* out, std::int64_t n, F f) {
  constexpr std::int64_t chunk = kStreamChunkBytes / static_cast<std::int64_t>(sizeof(U));
  std::int64_t i = elements_to_line(out, n);
  for (std::int64_t j = 0; j < i; ++j) out[j] = f(j);
  for (; i + chunk <= n; i += chunk) {  // out + i is on a line boundary (or i == n)
    alignas(64) U buffer[chunk];
    for (std::int64_t j = 0; j < chunk; ++j) buffer[j] = f(i + j);
    stream_store(out + i, buffer, kStreamChunkBytes);
  }
  for (; i < n; ++i) out[i] = f(i);
}

/// dst[i] += src[i] for i < n on this thread, vectorised for the CPU (TAPEGRAD_MULTIVERSION;
/// defined in autograd/tensor.cpp beside Tensor::add_): a gradient added where it belongs.
void add_into(float* dst, const float* src, std::int64_t n);
void add_into(double* dst, const double* src, std::int64_t n);

}  // namespace tapegrad::detail
