// The CUDA executor behind the Backend seam (runtime/backend.h): device memory from cudaMalloc
// (never managed memory), the shared functors launched as kernels, cuBLAS GEMMs and cuDNN
// convolution and pooling, all queued on one compute stream per process. Nothing waits for the
// GPU between steps: the loss and accuracy sums stay on the device until the trainer reads them.
//
// Batches: stage_batch copies each batch into one of two pinned host buffers and from there to
// the device on a separate copy stream. The compute stream waits for that copy with an event; the
// copy waits only for the compute that read the same slot two batches ago. So while the GPU
// computes batch s, the host gathers batch s+1 and its copy runs beside the compute.
#pragma once

#include <cuda_runtime.h>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/ops.h"

namespace dtrain::cuda {

class CudaBackend : public Backend {
 public:
  // Uses `device` (see select_device) from the calling thread on.
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }
  bool host_memory() const override { return false; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void upload(void* dst, const void* host, size_t bytes) override;
  void download(void* host, const void* src, size_t bytes) override;
  void fill(float* p, size_t n, float value) override;
  void zero(void* p, size_t bytes) override;
  void synchronize() override;
  StagedBatch stage_batch(const float* x, const unsigned char* y, size_t rows,
                          size_t features) override;

  void gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float* a, size_t lda,
            const float* b, size_t ldb, float beta, float* c, size_t ldc) override;
  using Backend::gemm;
  void broadcast_rows(float* y, const float* b, size_t rows, size_t cols) override;
  void copy(float* dst, const float* src, size_t n) override;
  void relu(const float* x, float* y, size_t n) override;
  void relu_grad(const float* dy, const float* y, float* dx, size_t n) override;
  void column_sums(const float* dy, size_t rows, size_t cols, float* db) override;
  void softmax_xent(const float* logits, const unsigned char* labels, float* grad, float* row_loss,
                    unsigned char* row_hit, size_t rows, size_t classes, double* acc) override;
  void optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g, float* state,
                      size_t state_stride, size_t n, float grad_scale) override;
  std::unique_ptr<ConvKernel> make_conv(size_t in_c, size_t h, size_t w, size_t out_c,
                                        size_t k) override;
  std::unique_ptr<PoolKernel> make_pool(size_t c, size_t h, size_t w) override;

 private:
  struct Slot {
    float* host_x = nullptr;  // pinned
    unsigned char* host_y = nullptr;
    float* dev_x = nullptr;
    unsigned char* dev_y = nullptr;
    size_t rows = 0, features = 0;   // capacity
    cudaEvent_t copied = nullptr;    // the H2D copy out of host_* has finished
    cudaEvent_t consumed = nullptr;  // the compute that read dev_* has finished
  };
  void free_slot(Slot& s);

  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr, copy_stream_ = nullptr;
  std::unique_ptr<Blas> blas_;
  cudnnHandle_t cudnn_ = nullptr;
  Slot slots_[2];
  int next_slot_ = 0;
};

}  // namespace dtrain::cuda
