// Convolution (stride 1, "same" padding) and 2x2 max-pooling on the GPU through cuDNN: the GPU
// side of runtime/conv2d.h, with the same layouts (NCHW activations, weights [OUT x C x K x K],
// bias [OUT]), so the CPU layers are their reference.
#pragma once

#include <cudnn.h>

#include "runtime/cuda/device.h"

namespace dtrain::cuda {

class CudnnConv2D {
 public:
  CudnnConv2D(cudnnHandle_t handle, size_t in_c, size_t h, size_t w, size_t out_c, size_t k);
  ~CudnnConv2D();
  CudnnConv2D(const CudnnConv2D&) = delete;
  CudnnConv2D& operator=(const CudnnConv2D&) = delete;
  // y = conv(x, w) + b
  void forward(const float* x, const float* w, const float* b, float* y, size_t batch);
  // dw, db from dy (overwritten); dx when not null.
  void backward(const float* x, const float* dy, const float* w, float* dw, float* db, float* dx,
                size_t batch);
  // The two halves of backward.
  void backward_params(const float* x, const float* dy, float* dw, float* db, size_t batch);
  void backward_data(const float* dy, const float* w, float* dx, size_t batch);

 private:
  void set_batch(size_t batch);
  cudnnHandle_t handle_;
  size_t in_c_, h_, w_, out_c_, k_, batch_ = 0;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr, b_desc_ = nullptr;
  cudnnFilterDescriptor_t w_desc_ = nullptr;
  cudnnConvolutionDescriptor_t conv_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo_{};
  DeviceBuffer<float> workspace_;
};

class CudnnMaxPool2 {
 public:
  CudnnMaxPool2(cudnnHandle_t handle, size_t c, size_t h, size_t w);
  ~CudnnMaxPool2();
  CudnnMaxPool2(const CudnnMaxPool2&) = delete;
  CudnnMaxPool2& operator=(const CudnnMaxPool2&) = delete;
  void forward(const float* x, float* y, size_t batch);
  void backward(const float* x, const float* y, const float* dy, float* dx, size_t batch);

 private:
  void set_batch(size_t batch);
  cudnnHandle_t handle_;
  size_t c_, h_, w_, batch_ = 0;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnPoolingDescriptor_t pool_desc_ = nullptr;
};

}  // namespace dtrain::cuda
