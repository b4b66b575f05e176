// f32: oneDNN's dnnl_sgemm, which picks its kernel from the CPU's features (AVX-512, AVX2,
// ...) rather than from a list of model names, so it runs at speed on CPUs newer than the
// library. f64 serves checking and tests, where exactness matters more than speed: a
// plain cache-friendly loop (k outside j) with the same rounding on every machine.
//
// oneDNN packs a transposed A (C = Aᵀ·B, A stored [k, m]) by walking its columns: with a row
// stride that is a multiple of 256 floats (1 KiB) those loads fall into the same few L1 sets,
// and the product runs at under half speed (m=1024, n=256, k=64 or 2048, lda=1024: 40 against
// 90 GFLOP/s on one AVX2 core with lda=1040). Such an A is first copied with its rows padded
// by 16 floats (a row-by-row copy, a few percent of the product). This is every linear
// layer's weight gradient grad_yᵀ·x with a power-of-two output width (the LSTM's 4·hidden).
//
// oneDNN's own threads share a product of few rows badly: C = A·Bᵀ (every linear layer's
// forward) with m = 16-128 rows ran 0.8-1.6× faster at two threads than at one (m = 64,
// n = 1024, k = 256: 1.20-1.46; n = 4096, k = 1024: 0.89-0.94), where each thread computing
// its share of C's columns, oneDNN single-threaded inside the parallel region, gives 1.8-2.05.
// With more rows and a deep enough sum the columns split measured as fast or faster at two
// threads (Zen 5, ms, oneDNN's threads → columns): conv weight gradient m=256 n=1152 k=2048
// 5.6 → 3.7, m=4096 n=512 k=512 7.2 → 6.1, the whole-batch conv forward m=256 n=2048
// k=1152 3.7-3.9 → 3.5, m=512 n=512 k=2304 3.2-3.3 → 3.3-3.4, m=2048 n=1024 k=256
// 0.97-0.99x; but the LSTM's W_hh gradient, m=1024 n=256 k=64, made its fwd+bwd 5 % slower.
// So products of at most kSplitRows rows, or of a sum over at least kSplitDepth terms, with
// at least kSplitColumns columns per thread are split by columns, when not already inside a
// parallel region. (A thread's columns of a whole-batch conv are its images.)
#include "ops/kernels/gemm.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

#include "autograd/block_cache.hpp"
#include "tapegrad/error.hpp"

namespace tapegrad::detail {
namespace {

/// Whether a transposed A with row stride lda aliases in the cache while oneDNN packs it (and
/// the product is big enough for a copy of A to pay off).
bool pad_transposed_a(bool trans_a, std::int64_t lda, std::int64_t n) {
  return trans_a && lda >= 256 && lda % 256 == 0 && n >= 32;
}

constexpr std::int64_t kSplitRows = 128, kSplitDepth = 256, kSplitColumns = 128;

/// The threads that share C's n columns (C m × n, sums of k terms): 1 inside a parallel
/// region, or for many rows and a shallow sum; else one per kSplitColumns columns.
int column_threads(std::int64_t m, std::int64_t n, std::int64_t k) {
  if (omp_in_parallel() || (m > kSplitRows && k < kSplitDepth)) return 1;
  return static_cast<int>(std::clamp<std::int64_t>(n / kSplitColumns, 1, omp_get_max_threads()));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C = beta * C (beta = 0 overwrites, NaN included)
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    }
    return;
  }
  Scratch<float> padded;  // a weight gradient's A is MBs: from the block cache
  if (pad_transposed_a(trans_a, lda, n)) {
    const std::int64_t ld = m + 16;
    padded.get(k * ld);
    for (std::int64_t r = 0; r < k; ++r) std::copy_n(a + r * lda, m, padded.data() + r * ld);
    a = padded.data();
    lda = ld;
  }
  // Columns [j0, j1) of C: op(B)'s columns are B's rows when B is transposed.
  const auto columns = [&](std::int64_t j0, std::int64_t j1) {
    return dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, j1 - j0, k, alpha, a, lda,
                      b + (trans_b ? j0 * ldb : j0), ldb, beta, c + j0, ldc);
  };
  dnnl_status_t status = dnnl_success;
  if (const int threads = column_threads(m, n, k); threads == 1) {
    status = columns(0, n);
  } else {
    std::atomic<int> failed{dnnl_success};
#pragma omp parallel num_threads(threads)
    {
      // shares of whole 16-column vectors, the last one taking the rest, among the threads
      // the team got (fewer than asked for under a thread limit)
      const std::int64_t team = omp_get_num_threads(), t = omp_get_thread_num(), vectors = n / 16;
      const std::int64_t j0 = vectors * t / team * 16, j1 = t + 1 == team ? n : vectors * (t + 1) / team * 16;
      if (const dnnl_status_t s = columns(j0, j1); s != dnnl_success) failed = s;
    }
    status = static_cast<dnnl_status_t>(failed.load());
  }
  if (status != dnnl_success) {
    throw Error(fmt::format("gemm: dnnl_sgemm failed with status {} for m={} n={} k={}",
                            static_cast<int>(status), m, n, k));
  }
}

void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
          double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb,
          double beta, double* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i) {
    double* row = c + i * ldc;
    for (std::int64_t j = 0; j < n; ++j) row[j] = beta == 0.0 ? 0.0 : beta * row[j];
    for (std::int64_t p = 0; p < k; ++p) {
      const double av = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
      if (trans_b) {
        for (std::int64_t j = 0; j < n; ++j) row[j] += av * b[j * ldb + p];
      } else {
        const double* brow = b + p * ldb;
        for (std::int64_t j = 0; j < n; ++j) row[j] += av * brow[j];
      }
    }
  }
}

}  // namespace tapegrad::detail
