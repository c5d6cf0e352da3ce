// The CUDA executor: the same functors as the CPU backend (runtime/functors.h) launched as
// kernels, GEMMs through cuBLAS, the optimizers' updates fused into one kernel each. All pointers
// are device pointers; work is queued on the given stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/optimizers.h"

namespace dtrain::cuda {

// One cuBLAS handle bound to a stream, per process.
class Blas {
 public:
  explicit Blas(cudaStream_t stream);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  // Row-major C[m x n] = alpha op(A) op(B) + beta C, as cpu::gemm.
  void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
            const float* b, float beta, float* c);
  // The same with explicit (row-major) leading dimensions, as cpu::gemm_ld.
  void gemm_ld(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
               const float* a, size_t lda, const float* b, size_t ldb, float beta, float* c,
               size_t ldc);
  cudaStream_t stream() const { return stream_; }

 private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_;
};

void relu(const float* x, float* y, size_t n, cudaStream_t s);
void relu_grad(const float* dy, const float* y, float* dx, size_t n, cudaStream_t s);
void bias_add(float* y, const float* b, size_t rows, size_t cols, cudaStream_t s);
void broadcast_rows(float* y, const float* b, size_t rows, size_t cols, cudaStream_t s);
void fill(float* p, size_t n, float v, cudaStream_t s);
// acc[0] += sum(loss), acc[1] += sum(hit), in row order (one thread).
void accumulate_rows(const float* loss, const unsigned char* hit, size_t rows, double* acc,
                     cudaStream_t s);
void column_sums(const float* dy, size_t rows, size_t cols, float* db, cudaStream_t s);
// Fused softmax cross-entropy: per-row loss and hit, and (when grad is not null) the gradient of
// the mean loss.
void softmax_xent(const float* logits, const unsigned char* labels, float* grad, float* loss,
                  unsigned char* hit, size_t rows, size_t classes, cudaStream_t s);
// One optimizer step over count elements, the Optimizer's math (t: the step number, from 1).
// State slot k of element i is at state[k * stride + i].
void optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g, float* state,
                    size_t stride, size_t count, float grad_scale, cudaStream_t s);

}  // namespace dtrain::cuda
