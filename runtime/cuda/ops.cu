#include <variant>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/ops.h"
#include "runtime/functors.h"

namespace dtrain::cuda {

namespace {

template <typename F>
__global__ void for_each_kernel(size_t n, F f) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}

// The CUDA twin of cpu::for_each: the functor is the kernel body.
template <typename F>
void launch(size_t n, const F& f, cudaStream_t s) {
  if (n == 0) return;
  constexpr unsigned kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  for_each_kernel<<<blocks, kThreads, 0, s>>>(n, f);
  CUDA_LAUNCHED(s, __PRETTY_FUNCTION__);  // names the functor (its type is in the signature)
}

struct ColumnSum {
  const float* dy;
  float* db;
  size_t rows, cols;
  __device__ void operator()(size_t c) const {
    float s = 0.0f;
    for (size_t r = 0; r < rows; ++r) s += dy[r * cols + c];
    db[c] = s;
  }
};

}  // namespace

Blas::Blas(cudaStream_t stream) : stream_(stream) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  // Plain FP32 math, as the CPU reference computes.
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
}

Blas::~Blas() {
  if (handle_) cublasDestroy(handle_);
}

void Blas::gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  // cuBLAS is column-major: a row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
  // so the operands swap places and keep their leading dimensions.
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  CUBLAS_CHECK(cublasSgemm(handle_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                           static_cast<int>(m), static_cast<int>(k), &alpha, b, ldb > 0 ? ldb : 1,
                           a, lda > 0 ? lda : 1, &beta, c, static_cast<int>(n)));
  CUDA_LAUNCHED(stream_, "cublasSgemm");
}

void Blas::gemm_ld(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                   const float* a, size_t lda, const float* b, size_t ldb, float beta, float* c,
                   size_t ldc) {
  if (m == 0 || n == 0) return;
  CUBLAS_CHECK(cublasSgemm(
      handle_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
      static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
  CUDA_LAUNCHED(stream_, "cublasSgemm (leading dimensions)");
}

void broadcast_rows(float* y, const float* b, size_t rows, size_t cols, cudaStream_t s) {
  launch(rows * cols, fn::BroadcastRows{y, b, cols}, s);
}

void fill(float* p, size_t n, float v, cudaStream_t s) {
  launch(n, fn::Fill{p, v}, s);
}

void accumulate_rows(const float* loss, const unsigned char* hit, size_t rows, double* acc,
                     cudaStream_t s) {
  launch(1, fn::AccumulateRows{loss, hit, rows, acc}, s);
}

void relu(const float* x, float* y, size_t n, cudaStream_t s) {
  launch(n, fn::Relu{x, y}, s);
}

void relu_grad(const float* dy, const float* y, float* dx, size_t n, cudaStream_t s) {
  launch(n, fn::ReluGrad{dy, y, dx}, s);
}

void bias_add(float* y, const float* b, size_t rows, size_t cols, cudaStream_t s) {
  launch(rows * cols, fn::BiasAdd{y, b, cols}, s);
}

void column_sums(const float* dy, size_t rows, size_t cols, float* db, cudaStream_t s) {
  launch(cols, ColumnSum{dy, db, rows, cols}, s);
}

void softmax_xent(const float* logits, const unsigned char* labels, float* grad, float* loss,
                  unsigned char* hit, size_t rows, size_t classes, cudaStream_t s) {
  launch(
      rows,
      fn::SoftmaxXentRow{logits, labels, grad, loss, hit, classes, 1.0f / static_cast<float>(rows)},
      s);
}

void optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g, float* state,
                    size_t stride, size_t count, float gs, cudaStream_t s) {
  std::visit([&](const auto& r) { launch(count, r.step(p, g, state, stride, t, gs), s); }, rule);
}

}  // namespace dtrain::cuda
