#include "runtime/conv2d.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace dtrain {

Conv2D::Conv2D(size_t in_c, size_t h, size_t w, size_t out_c, size_t k)
    : in_c_(in_c), h_(h), w_(w), out_c_(out_c), k_(k) {
  if (k % 2 == 0) throw InputError("conv2d: kernel size must be odd for same padding");
  if (!in_c || !h || !w || !out_c || !k) throw InputError("conv2d: zero-sized shape");
}

nlohmann::json Conv2D::spec() const {
  return {{"kind", "conv2d"}, {"in_channels", in_c_},   {"height", h_},
          {"width", w_},      {"out_channels", out_c_}, {"kernel", k_}};
}

void Conv2D::init_params(float* params, Rng& rng) const {
  const float fan_in = float(patch()), fan_out = float(out_c_ * k_ * k_);
  const float bound = std::sqrt(6.0f / (fan_in + fan_out));
  for (size_t i = 0; i < out_c_ * patch(); ++i) params[i] = rng.uniform(-bound, bound);
  std::fill(params + out_c_ * patch(), params + param_count(), 0.0f);
}

void Conv2D::bind(Backend& be, float* params, float* grads, size_t offset) {
  Layer::bind(be, params, grads, offset);
  kernel_ = be.make_conv(in_c_, h_, w_, out_c_, k_);
}

void Conv2D::forward(const float* x, float* y, size_t batch) {
  const float* wt = params_ + offset_;
  kernel_->forward(x, wt, wt + out_c_ * patch(), y, batch);
}

void Conv2D::backward(const float* x, const float* /*y*/, float* dy, float* dx, size_t batch,
                      const GradReady& ready) {
  float* gw = grads_ + offset_;
  kernel_->backward_params(x, dy, gw, gw + out_c_ * patch(), batch);
  // Bias first: the region of final gradients grows downward through the flat buffer.
  ready(offset_ + out_c_ * patch(), out_c_);
  ready(offset_, out_c_ * patch());
  if (dx) kernel_->backward_data(dy, params_ + offset_, dx, batch);
}

MaxPool2::MaxPool2(size_t c, size_t h, size_t w) : c_(c), h_(h), w_(w) {
  if (h % 2 || w % 2) throw InputError("maxpool2: height and width must be even");
}

nlohmann::json MaxPool2::spec() const {
  return {{"kind", "maxpool2"}, {"channels", c_}, {"height", h_}, {"width", w_}};
}

void MaxPool2::bind(Backend& be, float* params, float* grads, size_t offset) {
  Layer::bind(be, params, grads, offset);
  kernel_ = be.make_pool(c_, h_, w_);
}

void MaxPool2::forward(const float* x, float* y, size_t batch) {
  kernel_->forward(x, y, batch);
}

void MaxPool2::backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                        const GradReady& /*ready*/) {
  if (dx) kernel_->backward(x, y, dy, dx, batch);
}

}  // namespace dtrain
