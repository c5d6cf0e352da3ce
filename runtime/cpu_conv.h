// Convolution and max pooling on the CPU, the reference for cuDNN's. Convolution is im2col +
// GEMM: each sample's input [C x H x W] is unrolled into a [C*K*K x H*W] matrix of patches, and one
// GEMM with the weights [OUT x C*K*K] gives the output [OUT x H*W]. Stride 1, "same" zero padding
// (K odd), as the classic MNIST convnet uses.
#pragma once

#include <vector>

#include "runtime/backend.h"

namespace dtrain::cpu {

class Im2colConv : public ConvKernel {
 public:
  Im2colConv(size_t in_c, size_t h, size_t w, size_t out_c, size_t k);
  void forward(const float* x, const float* w, const float* b, float* y, size_t batch) override;
  void backward_params(const float* x, const float* dy, float* dw, float* db,
                       size_t batch) override;
  void backward_data(const float* dy, const float* w, float* dx, size_t batch) override;

 private:
  size_t patch() const { return in_c_ * k_ * k_; }
  size_t in_size() const { return in_c_ * h_ * w_; }
  size_t out_size() const { return out_c_ * h_ * w_; }
  void im2col(const float* x, float* col) const;
  void col2im(const float* col, float* dx) const;  // accumulates into dx
  size_t in_c_, h_, w_, out_c_, k_, pad_;
  std::vector<float> col_, dcol_;
};

class MaxPool2Kernel : public PoolKernel {
 public:
  MaxPool2Kernel(size_t c, size_t h, size_t w) : c_(c), h_(h), w_(w) {}
  void forward(const float* x, float* y, size_t batch) override;
  void backward(const float* x, const float* y, const float* dy, float* dx, size_t batch) override;

 private:
  size_t c_, h_, w_;
};

}  // namespace dtrain::cpu
