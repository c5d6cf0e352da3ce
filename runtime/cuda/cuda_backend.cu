#include <cstring>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cudnn_conv.h"
#include "runtime/cuda/device.h"

namespace dtrain::cuda {

namespace {

class CudnnConvKernel : public ConvKernel {
 public:
  CudnnConvKernel(cudnnHandle_t h, size_t in_c, size_t hh, size_t w, size_t out_c, size_t k)
      : conv_(h, in_c, hh, w, out_c, k) {}
  void forward(const float* x, const float* w, const float* b, float* y, size_t batch) override {
    conv_.forward(x, w, b, y, batch);
  }
  void backward_params(const float* x, const float* dy, float* dw, float* db,
                       size_t batch) override {
    conv_.backward_params(x, dy, dw, db, batch);
  }
  void backward_data(const float* dy, const float* w, float* dx, size_t batch) override {
    conv_.backward_data(dy, w, dx, batch);
  }

 private:
  CudnnConv2D conv_;
};

class CudnnPoolKernel : public PoolKernel {
 public:
  CudnnPoolKernel(cudnnHandle_t h, size_t c, size_t hh, size_t w) : pool_(h, c, hh, w) {}
  void forward(const float* x, float* y, size_t batch) override { pool_.forward(x, y, batch); }
  void backward(const float* x, const float* y, const float* dy, float* dx, size_t batch) override {
    pool_.backward(x, y, dy, dx, batch);
  }

 private:
  CudnnMaxPool2 pool_;
};

}  // namespace

CudaBackend::CudaBackend(int device) : device_(device) {
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  name_ = detail::cat("cuda:", device_, " (", prop.name, ")");
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  blas_ = std::make_unique<Blas>(stream_);
  CUDNN_CHECK(cudnnCreate(&cudnn_));
  CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  for (auto& s : slots_) {
    CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.consumed, cudaEventDisableTiming));
  }
}

CudaBackend::~CudaBackend() {
  // Destructors never throw: errors here are ignored (the process is ending or already failed).
  if (stream_) cudaStreamSynchronize(stream_);
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);
  for (auto& s : slots_) {
    free_slot(s);
    if (s.copied) cudaEventDestroy(s.copied);
    if (s.consumed) cudaEventDestroy(s.consumed);
  }
  if (cudnn_) cudnnDestroy(cudnn_);
  blas_.reset();
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::free_slot(Slot& s) {
  if (s.host_x) cudaFreeHost(s.host_x);
  if (s.host_y) cudaFreeHost(s.host_y);
  if (s.dev_x) cudaFree(s.dev_x);
  if (s.dev_y) cudaFree(s.dev_y);
  s.host_x = nullptr;
  s.host_y = nullptr;
  s.dev_x = nullptr;
  s.dev_y = nullptr;
  s.rows = s.features = 0;
}

void* CudaBackend::allocate(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  return p;
}

void CudaBackend::deallocate(void* p) {
  // cudaFree waits for the device, so no queued kernel still uses the memory.
  cudaFree(p);
}

void CudaBackend::upload(void* dst, const void* host, size_t bytes) {
  // From pageable memory cudaMemcpyAsync returns once the source has been staged, so the caller
  // may reuse it; the copy itself stays ordered on the compute stream.
  CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::download(void* host, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::fill(float* p, size_t n, float value) {
  cuda::fill(p, n, value, stream_);
}

void CudaBackend::zero(void* p, size_t bytes) {
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
}

void CudaBackend::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

StagedBatch CudaBackend::stage_batch(const float* x, const unsigned char* y, size_t rows,
                                     size_t features) {
  const int i = next_slot_;
  next_slot_ = 1 - i;
  Slot& s = slots_[i];
  // All work of the batch in the other slot is queued by now: mark where it ends, so that slot's
  // next copy waits for exactly that.
  CUDA_CHECK(cudaEventRecord(slots_[1 - i].consumed, stream_));
  if (rows > s.rows || features != s.features) {
    // A bigger batch (evaluation): wait for everything, then grow this slot.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    CUDA_CHECK(cudaStreamSynchronize(copy_stream_));
    free_slot(s);
    CUDA_CHECK(
        cudaMallocHost(reinterpret_cast<void**>(&s.host_x), rows * features * sizeof(float)));
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&s.host_y), rows));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.dev_x), rows * features * sizeof(float)));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.dev_y), rows));
    s.rows = rows;
    s.features = features;
  }
  // The pinned buffer is free once its last copy to the device has finished.
  CUDA_CHECK(cudaEventSynchronize(s.copied));
  std::memcpy(s.host_x, x, rows * features * sizeof(float));
  std::memcpy(s.host_y, y, rows);
  // The device buffer is free once the compute that read it (two batches ago) has finished.
  CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, s.consumed, 0));
  CUDA_CHECK(cudaMemcpyAsync(s.dev_x, s.host_x, rows * features * sizeof(float),
                             cudaMemcpyHostToDevice, copy_stream_));
  CUDA_CHECK(cudaMemcpyAsync(s.dev_y, s.host_y, rows, cudaMemcpyHostToDevice, copy_stream_));
  CUDA_CHECK(cudaEventRecord(s.copied, copy_stream_));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, s.copied, 0));
  return {s.dev_x, s.dev_y};
}

void CudaBackend::gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float* a,
                       size_t lda, const float* b, size_t ldb, float beta, float* c, size_t ldc) {
  blas_->gemm_ld(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void CudaBackend::broadcast_rows(float* y, const float* b, size_t rows, size_t cols) {
  cuda::broadcast_rows(y, b, rows, cols, stream_);
}

void CudaBackend::copy(float* dst, const float* src, size_t n) {
  if (dst != src && n)
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::relu(const float* x, float* y, size_t n) {
  cuda::relu(x, y, n, stream_);
}

void CudaBackend::relu_grad(const float* dy, const float* y, float* dx, size_t n) {
  cuda::relu_grad(dy, y, dx, n, stream_);
}

void CudaBackend::column_sums(const float* dy, size_t rows, size_t cols, float* db) {
  cuda::column_sums(dy, rows, cols, db, stream_);
}

void CudaBackend::softmax_xent(const float* logits, const unsigned char* labels, float* grad,
                               float* row_loss, unsigned char* row_hit, size_t rows, size_t classes,
                               double* acc) {
  cuda::softmax_xent(logits, labels, grad, row_loss, row_hit, rows, classes, stream_);
  cuda::accumulate_rows(row_loss, row_hit, rows, acc, stream_);
}

void CudaBackend::optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g,
                                 float* state, size_t stride, size_t n, float gs) {
  cuda::optimizer_step(rule, t, p, g, state, stride, n, gs, stream_);
}

std::unique_ptr<ConvKernel> CudaBackend::make_conv(size_t in_c, size_t h, size_t w, size_t out_c,
                                                   size_t k) {
  return std::make_unique<CudnnConvKernel>(cudnn_, in_c, h, w, out_c, k);
}

std::unique_ptr<PoolKernel> CudaBackend::make_pool(size_t c, size_t h, size_t w) {
  return std::make_unique<CudnnPoolKernel>(cudnn_, c, h, w);
}

}  // namespace dtrain::cuda
