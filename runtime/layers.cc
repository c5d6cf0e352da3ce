#include "runtime/layers.h"

#include <algorithm>
#include <cmath>

namespace dtrain {

nlohmann::json Dense::spec() const {
  return {{"kind", "dense"}, {"in", in_}, {"out", out_}};
}

// Glorot-uniform weights and zero biases, as Keras' Dense does by default.
void Dense::init_params(float* params, Rng& rng) const {
  const float bound = std::sqrt(6.0f / static_cast<float>(in_ + out_));
  for (size_t i = 0; i < in_ * out_; ++i) params[i] = rng.uniform(-bound, bound);
  std::fill(params + in_ * out_, params + in_ * out_ + out_, 0.0f);
}

void Dense::forward(const float* x, float* y, size_t batch) {
  const float* w = params_ + offset_;
  const float* b = w + in_ * out_;
  // y = x W with the bias broadcast in as the initial C: one pass over y instead of two.
  be_->broadcast_rows(y, b, batch, out_);
  be_->gemm(false, false, batch, out_, in_, 1.0f, x, w, 1.0f, y);
}

void Dense::backward(const float* x, const float* /*y*/, float* dy, float* dx, size_t batch,
                     const GradReady& ready) {
  const float* w = params_ + offset_;
  float* gw = grads_ + offset_;
  float* gb = gw + in_ * out_;
  // Parameter gradients before the input gradient: the allreduce waits on the former, so they are
  // reported as early as possible and reduce while dx and the layers below are computed.
  be_->column_sums(dy, batch, out_, gb);
  ready(offset_ + in_ * out_, out_);
  // dW = x^T dy, computed in row blocks from the last row up so each finished block can be
  // reduced while the rest is still being computed.
  const size_t rows_per_chunk =
      grad_chunk_ == 0 ? in_ : std::max<size_t>(1, std::min(in_, grad_chunk_ / out_));
  size_t hi = in_;
  while (hi > 0) {
    const size_t lo = hi > rows_per_chunk ? hi - rows_per_chunk : 0;
    be_->gemm(true, false, hi - lo, out_, batch, 1.0f, x + lo, in_, dy, out_, 0.0f, gw + lo * out_,
              out_);
    ready(offset_ + lo * out_, (hi - lo) * out_);
    hi = lo;
  }
  if (dx) be_->gemm(false, true, batch, in_, out_, 1.0f, dy, w, 0.0f, dx);
}

nlohmann::json Relu::spec() const {
  return {{"kind", "relu"}, {"size", size_}};
}

void Relu::forward(const float* x, float* y, size_t batch) {
  const size_t n = batch * size_;
  be_->relu(x, y, n);
}

void Relu::backward(const float* /*x*/, const float* y, float* dy, float* dx, size_t batch,
                    const GradReady& /*ready*/) {
  const size_t n = batch * size_;
  // A ReLU first in the model has no input gradient to give.
  if (dx) be_->relu_grad(dy, y, dx, n);
}

}  // namespace dtrain
