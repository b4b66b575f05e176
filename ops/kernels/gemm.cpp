// f32: oneDNN's dnnl_sgemm, which picks its kernel from the CPU's features (AVX-512, AVX2,
// ...) rather than from a list of model names, so it runs at speed on CPUs newer than the
// library. f64 serves checking and tests, where exactness matters more than speed: a
// plain cache-friendly loop (k outside j) with the same rounding on every machine.
#include "ops/kernels/gemm.hpp"

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

#include "tapegrad/error.hpp"

namespace tapegrad::detail {

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
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k,
                                          alpha, a, lda, b, ldb, beta, c, ldc);
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
