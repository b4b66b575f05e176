#pragma once
// The one internal interface to the GEMM library (see bench/README.md for why oneDNN):
//   C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, all row-major,
// where op(X) is X or Xᵀ and ld* are the row strides of the matrices as stored.
#include <cstdint>

namespace tapegrad::detail {

void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc);
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
          double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb,
          double beta, double* c, std::int64_t ldc);

}  // namespace tapegrad::detail
