// The seam between the model code and the hardware (design decision 2: one kernel body, two
// executors). Layers, the model and the optimizer allocate their memory and do their math through
// a Backend; they never touch OpenBLAS, cuBLAS or cuDNN themselves. CpuBackend (cpu_backend.cc)
// runs the shared functors of runtime/functors.h in loops and GEMMs through OpenBLAS; CudaBackend
// (runtime/cuda/cuda_backend.h) launches the same functors as kernels on one stream and uses
// cuBLAS and cuDNN. Because the CPU model runs through this same interface, everything above it
// (the layer and model orchestration, the trainer) is exercised by every CPU test.
//
// Pointers a Backend takes and returns are in its own memory (device memory for CUDA) unless a
// name says host. Work may be queued: to_host() and stats reads wait for it; nothing else does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/optimizers.h"

namespace dtrain {

// Convolution, stride 1, "same" padding: activations NCHW, weights [OUT x C x K x K], bias [OUT].
class ConvKernel {
 public:
  virtual ~ConvKernel() = default;
  virtual void forward(const float* x, const float* w, const float* b, float* y, size_t batch) = 0;
  // dw and db (overwritten) from x and dy.
  virtual void backward_params(const float* x, const float* dy, float* dw, float* db,
                               size_t batch) = 0;
  // dx (overwritten) from dy and w.
  virtual void backward_data(const float* dy, const float* w, float* dx, size_t batch) = 0;
};

// 2x2 max pooling, stride 2, over NCHW.
class PoolKernel {
 public:
  virtual ~PoolKernel() = default;
  virtual void forward(const float* x, float* y, size_t batch) = 0;
  // dx (overwritten): each window's gradient goes to its (first) maximum.
  virtual void backward(const float* x, const float* y, const float* dy, float* dx,
                        size_t batch) = 0;
};

// A batch as the backend sees it: pointers into its own memory.
struct StagedBatch {
  const float* x;
  const unsigned char* y;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)".
  virtual std::string name() const = 0;
  // True when the backend's pointers are ordinary host pointers.
  virtual bool host_memory() const = 0;

  // ---- memory ----
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  // host -> backend; the host memory may be reused when it returns.
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;
  // backend -> host; waits for the work queued before it.
  virtual void download(void* host, const void* src, size_t bytes) = 0;
  virtual void fill(float* p, size_t n, float value) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  // Waits for all queued work.
  virtual void synchronize() {}

  // The next training or evaluation batch, from host memory. The CPU backend hands the host
  // pointers back; a device backend copies them through pinned, double-buffered staging memory so
  // the copy of this batch overlaps the compute still queued for the previous one.
  virtual StagedBatch stage_batch(const float* x, const unsigned char* y, size_t rows,
                                  size_t features) = 0;

  // ---- math ----
  // Row-major C[m x n] = alpha op(A) op(B) + beta C with explicit leading dimensions.
  virtual void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float* a, size_t lda, const float* b, size_t ldb, float beta, float* c,
                    size_t ldc) = 0;
  // Leading dimensions of the dense matrices.
  void gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float* a,
            const float* b, float beta, float* c) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, b, trans_b ? k : n, beta, c, n);
  }
  // y[r, :] = b for every row of a [rows x cols] matrix.
  virtual void broadcast_rows(float* y, const float* b, size_t rows, size_t cols) = 0;
  virtual void copy(float* dst, const float* src, size_t n) = 0;
  // y = max(x, 0) (x == y allowed): one pass, no copy first.
  virtual void relu(const float* x, float* y, size_t n) = 0;
  // dx = dy * (y > 0) (dx == dy allowed).
  virtual void relu_grad(const float* dy, const float* y, float* dx, size_t n) = 0;
  // db[c] = sum_r dy[r, c].
  virtual void column_sums(const float* dy, size_t rows, size_t cols, float* db) = 0;
  // Fused softmax cross-entropy over rows: grad (may be null) = d(mean loss)/d(logits); the
  // rows' loss sum and hit count are added to acc[0] and acc[1] (backend memory, doubles), so a
  // device backend never waits for the host between steps. row_loss/row_hit: scratch of `rows`.
  virtual void softmax_xent(const float* logits, const unsigned char* labels, float* grad,
                            float* row_loss, unsigned char* row_hit, size_t rows, size_t classes,
                            double* acc) = 0;
  // One optimizer step over n elements as step number t (from 1): p -= update(g * grad_scale),
  // by the rule the Optimizer resolved once. State slot k of element i is at
  // state[k * state_stride + i].
  virtual void optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g,
                              float* state, size_t state_stride, size_t n, float grad_scale) = 0;
  // The same with the gradient the sum of ng buffers, added element by element in order inside
  // the update's pass (g[0][i] + g[1][i] + ...). Backends that cannot throw.
  virtual void optimizer_step_sum(const UpdateRule& rule, uint64_t t, float* p,
                                  const float* const* g, size_t ng, float* state,
                                  size_t state_stride, size_t n, float grad_scale);

  virtual std::unique_ptr<ConvKernel> make_conv(size_t in_c, size_t h, size_t w, size_t out_c,
                                                size_t k) = 0;
  virtual std::unique_ptr<PoolKernel> make_pool(size_t c, size_t h, size_t w) = 0;
};

// The process's CPU backend (stateless, shared).
Backend& cpu_backend();

// An owned array in a backend's memory, zero-initialized.
template <typename T>
class BackendArray {
 public:
  explicit BackendArray(Backend& be) : be_(&be) {}
  BackendArray(Backend& be, size_t n) : be_(&be) { assign_zero(n); }
  ~BackendArray() { release(); }
  BackendArray(const BackendArray&) = delete;
  BackendArray& operator=(const BackendArray&) = delete;
  BackendArray(BackendArray&& o) noexcept : be_(o.be_), p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  BackendArray& operator=(BackendArray&& o) noexcept {
    if (this != &o) {
      release();
      be_ = o.be_;
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }

  // n zeroed elements (contents are not kept).
  void assign_zero(size_t n) {
    if (n != n_) {
      release();
      if (n) p_ = static_cast<T*>(be_->allocate(n * sizeof(T)));
      n_ = n;
    }
    if (n_) be_->zero(p_, n_ * sizeof(T));
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  Backend& backend() const { return *be_; }
  void to_host(T* host, size_t offset, size_t n) const {
    if (n) be_->download(host, p_ + offset, n * sizeof(T));
  }
  void from_host(const T* host, size_t offset, size_t n) {
    if (n) be_->upload(p_ + offset, host, n * sizeof(T));
  }
  std::vector<T> to_vector() const {
    std::vector<T> v(n_);
    to_host(v.data(), 0, n_);
    return v;
  }

 private:
  void release() {
    if (p_) be_->deallocate(p_);
    p_ = nullptr;
    n_ = 0;
  }
  Backend* be_;
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace dtrain
