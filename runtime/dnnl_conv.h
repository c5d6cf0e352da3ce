// Convolution on the CPU through oneDNN primitives (forward, backward data, backward weights and
// bias), replacing im2col + GEMM: oneDNN's direct convolutions run JIT code for the CPU's vector
// units on blocked layouts (nChw16c on AVX-512), the way cuDNN does on a GPU.
//
// The model keeps plain NCHW activations and OIHW weights in its flat buffers, so each call
// reorders into the layouts the primitive chose and back, only where they differ: activations are
// memory-bound copies next to the convolution's arithmetic. Primitives are created once per batch
// size (training, evaluation and the last short batch differ) and reused; nothing is created per
// step. With one thread the results are deterministic on a machine; across instruction sets
// (DNNL_MAX_CPU_ISA) they differ by rounding only.
#pragma once

#include <map>
#include <memory>

#include "runtime/backend.h"

namespace dtrain::cpu {

class DnnlConv : public ConvKernel {
 public:
  DnnlConv(size_t in_c, size_t h, size_t w, size_t out_c, size_t k);
  ~DnnlConv() override;
  void forward(const float* x, const float* w, const float* b, float* y, size_t batch) override;
  void backward_params(const float* x, const float* dy, float* dw, float* db,
                       size_t batch) override;
  void backward_data(const float* dy, const float* w, float* dx, size_t batch) override;

 private:
  struct Prims;
  Prims& prims(size_t batch);
  size_t in_c_, h_, w_, out_c_, k_;
  std::map<size_t, std::unique_ptr<Prims>> by_batch_;
};

}  // namespace dtrain::cpu
