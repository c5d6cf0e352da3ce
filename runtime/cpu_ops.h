// The CPU executor: runs the shared functors in loops, and GEMMs through oneDNN. It is the
// reference every other backend is tested against.
#pragma once

#include <cstddef>
#include <string>

namespace dtrain::cpu {

template <typename F>
inline void for_each(size_t n, const F& fn) {
  // A local copy keeps the functor's fields in registers: read through the reference, they might
  // alias the stores, and GCC then leaves loops such as the two-gradient Adam scalar (10x slower).
  const F f = fn;
  for (size_t i = 0; i < n; ++i) f(i);
}

// Hot elementwise loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time
// (GCC function multiversioning), so one portable binary runs its optimizer at full width. The
// build turns off FMA contraction, so every clone rounds exactly as the baseline does and ranks on
// different CPUs stay bitwise identical.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define DTRAIN_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DTRAIN_SIMD_CLONES
#endif

// C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major.
void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
          const float* b, float beta, float* c);

// The same with explicit leading dimensions, for sub-blocks of a matrix.
void gemm_ld(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
             size_t lda, const float* b, size_t ldb, float beta, float* c, size_t ldc);

// db[c] = sum_r dy[r, c].
void column_sums(const float* dy, size_t rows, size_t cols, float* db);

// Threads oneDNN may use (1 in the distributed modes: one process per core).
void set_blas_threads(int n);

// Flushes denormal floats to zero in this thread's arithmetic (x86 FTZ and DAZ; elsewhere a
// no-op). Adam's and RMSprop's moments of weights whose gradient stays 0 (dead ReLUs, pixels that
// are always blank) decay into the denormal range below 1.2e-38, where every operation takes a
// microcode assist: measured, the MLP's Adam pass went from 0.19 to 1.77 ms, 70% of a training
// step. Values that small change no parameter visibly; results stay deterministic. Called by
// every thread that trains or reduces (run_job, the MPI background thread, dtrain_bench), as
// PyTorch's torch.set_flush_denormal(True) does for its users.
void flush_denormals_on_this_thread();

// The instruction set oneDNN's kernels run with on this CPU ("avx512_core", "avx2", ...):
// what dtrain_bench and --verbose print, so a slow path is never silent. DNNL_MAX_CPU_ISA caps
// it (oneDNN's own variable).
std::string cpu_isa();

}  // namespace dtrain::cpu
