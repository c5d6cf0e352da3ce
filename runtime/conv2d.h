// The convnet's layers: 2-D convolution (stride 1, "same" zero padding, K odd) and 2x2 max
// pooling. The math is the backend's (runtime/cpu_conv.h on the CPU, cuDNN on the GPU); these
// layers own the shapes, the parameter layout in the flat buffer and the order in which gradients
// are reported.
#pragma once

#include <memory>

#include "runtime/layers.h"

namespace dtrain {

class Conv2D : public Layer {
 public:
  Conv2D(size_t in_c, size_t h, size_t w, size_t out_c, size_t k);
  std::string kind() const override { return "conv2d"; }
  nlohmann::json spec() const override;
  size_t in_size() const override { return in_c_ * h_ * w_; }
  size_t out_size() const override { return out_c_ * h_ * w_; }
  size_t param_count() const override { return out_c_ * patch() + out_c_; }
  void init_params(float* params, Rng& rng) const override;
  void bind(Backend& be, float* params, float* grads, size_t offset) override;
  void forward(const float* x, float* y, size_t batch) override;
  void backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                const GradReady& ready) override;

 private:
  size_t patch() const { return in_c_ * k_ * k_; }
  size_t in_c_, h_, w_, out_c_, k_;
  std::unique_ptr<ConvKernel> kernel_;
};

// 2x2 max pooling, stride 2, over [C x H x W] (H and W even).
class MaxPool2 : public Layer {
 public:
  MaxPool2(size_t c, size_t h, size_t w);
  std::string kind() const override { return "maxpool2"; }
  nlohmann::json spec() const override;
  size_t in_size() const override { return c_ * h_ * w_; }
  size_t out_size() const override { return c_ * (h_ / 2) * (w_ / 2); }
  void bind(Backend& be, float* params, float* grads, size_t offset) override;
  void forward(const float* x, float* y, size_t batch) override;
  // The gradient goes to the first input of each window that holds the maximum.
  void backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                const GradReady& ready) override;

 private:
  size_t c_, h_, w_;
  std::unique_ptr<PoolKernel> kernel_;
};

}  // namespace dtrain
