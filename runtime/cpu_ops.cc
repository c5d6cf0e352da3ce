#include "runtime/cpu_ops.h"

#include <cblas.h>

#include <algorithm>

namespace dtrain::cpu {

void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
          const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, std::max(lda, 1), b, std::max(ldb, 1), beta, c,
              static_cast<int>(n));
}

void gemm_ld(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
             size_t lda, const float* b, size_t ldb, float beta, float* c, size_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

void column_sums(const float* dy, size_t rows, size_t cols, float* db) {
  std::fill(db, db + cols, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = dy + r * cols;
    for (size_t c = 0; c < cols; ++c) db[c] += row[c];
  }
}

void set_blas_threads(int n) {
  openblas_set_num_threads(n);
}

}  // namespace dtrain::cpu
