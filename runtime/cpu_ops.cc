#include "runtime/cpu_ops.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#if defined(__SSE3__) || defined(__x86_64__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif

#include <algorithm>

#include "runtime/error.h"

namespace dtrain::cpu {

// oneDNN's sgemm is row-major, like everything here, and picks its kernel by the CPU's features
// (JIT code for AVX2, AVX-512, AMX), so a CPU model no BLAS table knows still gets its vector
// units. With one thread the result is the same on every run (same machine, same ISA).
void gemm_ld(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
             size_t lda, const float* b, size_t ldb, float beta, float* c, size_t ldc) {
  if (m == 0 || n == 0) return;
  const dnnl_status_t st = dnnl_sgemm(
      trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', dnnl_dim_t(m), dnnl_dim_t(n), dnnl_dim_t(k), alpha,
      a, dnnl_dim_t(std::max<size_t>(lda, 1)), b, dnnl_dim_t(std::max<size_t>(ldb, 1)), beta, c,
      dnnl_dim_t(std::max<size_t>(ldc, 1)));
  if (st != dnnl_success)
    throw Error(detail::cat("oneDNN sgemm ", m, "x", n, "x", k, " failed (status ", int(st), ")"));
}

void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
          const float* b, float beta, float* c) {
  gemm_ld(trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, b, trans_b ? k : n, beta, c, n);
}

void column_sums(const float* dy, size_t rows, size_t cols, float* db) {
  std::fill(db, db + cols, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = dy + r * cols;
    for (size_t c = 0; c < cols; ++c) db[c] += row[c];
  }
}

void set_blas_threads(int n) {
  omp_set_num_threads(std::max(n, 1));
}

void flush_denormals_on_this_thread() {
#if defined(__x86_64__)
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

std::string cpu_isa() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
      return "sse41";
    case dnnl_cpu_isa_avx:
      return "avx";
    case dnnl_cpu_isa_avx2:
      return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
      return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core:
      return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other (" + std::to_string(int(dnnl_get_effective_cpu_isa())) + ")";
  }
}

}  // namespace dtrain::cpu
