#include <algorithm>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cudnn_algo.h"
#include "runtime/cuda/cudnn_conv.h"

namespace dtrain::cuda {

namespace {
// The launch check of a cuDNN call (CUDA_LAUNCHED on the handle's stream).
void launched(cudnnHandle_t handle, const char* what, const char* file, int line) {
  cudaStream_t s = nullptr;
  CUDNN_CHECK(cudnnGetStream(handle, &s));
  check_launch(s, what, file, line);
}
}  // namespace

namespace {
int I(size_t v) {
  return static_cast<int>(v);
}
}  // namespace

CudnnConv2D::CudnnConv2D(cudnnHandle_t handle, size_t in_c, size_t h, size_t w, size_t out_c,
                         size_t k)
    : handle_(handle), in_c_(in_c), h_(h), w_(w), out_c_(out_c), k_(k) {
  if (k % 2 == 0) throw InputError("conv2d: kernel size must be odd for same padding");
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc_));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_desc_));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&b_desc_));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_desc_));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc_));
  CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(b_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, I(out_c), 1, 1));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, I(out_c),
                                         I(in_c), I(k), I(k)));
  // Cross-correlation, as the CPU im2col computes (and as every framework calls "convolution").
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc_, I(k / 2), I(k / 2), 1, 1, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  // FP32 throughout, no TF32 tensor-core rounding: results stay comparable to the CPU reference.
  CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_, CUDNN_FMA_MATH));
}

CudnnConv2D::~CudnnConv2D() {
  cudnnDestroyConvolutionDescriptor(conv_desc_);
  cudnnDestroyFilterDescriptor(w_desc_);
  cudnnDestroyTensorDescriptor(b_desc_);
  cudnnDestroyTensorDescriptor(y_desc_);
  cudnnDestroyTensorDescriptor(x_desc_);
}

void CudnnConv2D::set_batch(size_t batch) {
  if (batch == batch_) return;
  batch_ = batch;
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, I(batch),
                                         I(in_c_), I(h_), I(w_)));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(y_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, I(batch),
                                         I(out_c_), I(h_), I(w_)));
  int found = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[8];
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle_, x_desc_, w_desc_, conv_desc_, y_desc_,
                                                     8, &found, fwd));
  fwd_algo_ = choose_cudnn_algo(fwd, found, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
  cudnnConvolutionBwdDataAlgoPerf_t bd[8];
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle_, w_desc_, y_desc_, conv_desc_,
                                                          x_desc_, 8, &found, bd));
  bwd_data_algo_ = choose_cudnn_algo(bd, found, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);
  cudnnConvolutionBwdFilterAlgoPerf_t bf[8];
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle_, x_desc_, y_desc_, conv_desc_,
                                                            w_desc_, 8, &found, bf));
  bwd_filter_algo_ = choose_cudnn_algo(bf, found, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
  size_t a = 0, b = 0, c = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_, w_desc_, conv_desc_,
                                                      y_desc_, fwd_algo_, &a));
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(handle_, w_desc_, y_desc_, conv_desc_,
                                                           x_desc_, bwd_data_algo_, &b));
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle_, x_desc_, y_desc_, conv_desc_,
                                                             w_desc_, bwd_filter_algo_, &c));
  workspace_.resize((std::max({a, b, c, size_t(4)}) + 3) / 4);
}

void CudnnConv2D::forward(const float* x, const float* w, const float* b, float* y, size_t batch) {
  set_batch(batch);
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionForward(handle_, &one, x_desc_, x, w_desc_, w, conv_desc_, fwd_algo_,
                                      workspace_.data(), workspace_.size() * 4, &zero, y_desc_, y));
  launched(handle_, "cudnnConvolutionForward", __FILE__, __LINE__);
  CUDNN_CHECK(cudnnAddTensor(handle_, &one, b_desc_, b, &one, y_desc_, y));
}

void CudnnConv2D::backward(const float* x, const float* dy, const float* w, float* dw, float* db,
                           float* dx, size_t batch) {
  backward_params(x, dy, dw, db, batch);
  if (dx) backward_data(dy, w, dx, batch);
}

void CudnnConv2D::backward_params(const float* x, const float* dy, float* dw, float* db,
                                  size_t batch) {
  set_batch(batch);
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionBackwardBias(handle_, &one, y_desc_, dy, &zero, b_desc_, db));
  launched(handle_, "cudnnConvolutionBackwardBias", __FILE__, __LINE__);
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle_, &one, x_desc_, x, y_desc_, dy, conv_desc_,
                                             bwd_filter_algo_, workspace_.data(),
                                             workspace_.size() * 4, &zero, w_desc_, dw));
  launched(handle_, "cudnnConvolutionBackwardFilter", __FILE__, __LINE__);
}

void CudnnConv2D::backward_data(const float* dy, const float* w, float* dx, size_t batch) {
  set_batch(batch);
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionBackwardData(handle_, &one, w_desc_, w, y_desc_, dy, conv_desc_,
                                           bwd_data_algo_, workspace_.data(), workspace_.size() * 4,
                                           &zero, x_desc_, dx));
  launched(handle_, "cudnnConvolutionBackwardData", __FILE__, __LINE__);
}

CudnnMaxPool2::CudnnMaxPool2(cudnnHandle_t handle, size_t c, size_t h, size_t w)
    : handle_(handle), c_(c), h_(h), w_(w) {
  if (h % 2 || w % 2) throw InputError("maxpool2: height and width must be even");
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc_));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_desc_));
  CUDNN_CHECK(cudnnCreatePoolingDescriptor(&pool_desc_));
  CUDNN_CHECK(cudnnSetPooling2dDescriptor(pool_desc_, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2,
                                          2, 0, 0, 2, 2));
}

CudnnMaxPool2::~CudnnMaxPool2() {
  cudnnDestroyPoolingDescriptor(pool_desc_);
  cudnnDestroyTensorDescriptor(y_desc_);
  cudnnDestroyTensorDescriptor(x_desc_);
}

void CudnnMaxPool2::set_batch(size_t batch) {
  if (batch == batch_) return;
  batch_ = batch;
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, I(batch),
                                         I(c_), I(h_), I(w_)));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(y_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, I(batch),
                                         I(c_), I(h_ / 2), I(w_ / 2)));
}

void CudnnMaxPool2::forward(const float* x, float* y, size_t batch) {
  set_batch(batch);
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnPoolingForward(handle_, pool_desc_, &one, x_desc_, x, &zero, y_desc_, y));
  launched(handle_, "cudnnPoolingForward", __FILE__, __LINE__);
}

void CudnnMaxPool2::backward(const float* x, const float* y, const float* dy, float* dx,
                             size_t batch) {
  set_batch(batch);
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnPoolingBackward(handle_, pool_desc_, &one, y_desc_, y, y_desc_, dy, x_desc_, x,
                                   &zero, x_desc_, dx));
  launched(handle_, "cudnnPoolingBackward", __FILE__, __LINE__);
}

}  // namespace dtrain::cuda
