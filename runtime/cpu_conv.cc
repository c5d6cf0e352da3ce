#include "runtime/cpu_conv.h"

#include <algorithm>

#include "runtime/cpu_ops.h"

namespace dtrain::cpu {

Im2colConv::Im2colConv(size_t in_c, size_t h, size_t w, size_t out_c, size_t k)
    : in_c_(in_c), h_(h), w_(w), out_c_(out_c), k_(k), pad_(k / 2) {}

void Im2colConv::im2col(const float* x, float* col) const {
  const size_t hw = h_ * w_;
  for (size_t c = 0; c < in_c_; ++c)
    for (size_t ki = 0; ki < k_; ++ki)
      for (size_t kj = 0; kj < k_; ++kj) {
        float* row = col + ((c * k_ + ki) * k_ + kj) * hw;
        const float* xc = x + c * hw;
        for (size_t oy = 0; oy < h_; ++oy) {
          const long iy = long(oy) + long(ki) - long(pad_);
          float* out = row + oy * w_;
          if (iy < 0 || iy >= long(h_)) {
            std::fill(out, out + w_, 0.0f);
            continue;
          }
          const float* xr = xc + size_t(iy) * w_;
          for (size_t ox = 0; ox < w_; ++ox) {
            const long ix = long(ox) + long(kj) - long(pad_);
            out[ox] = (ix < 0 || ix >= long(w_)) ? 0.0f : xr[ix];
          }
        }
      }
}

void Im2colConv::col2im(const float* col, float* dx) const {
  const size_t hw = h_ * w_;
  for (size_t c = 0; c < in_c_; ++c)
    for (size_t ki = 0; ki < k_; ++ki)
      for (size_t kj = 0; kj < k_; ++kj) {
        const float* row = col + ((c * k_ + ki) * k_ + kj) * hw;
        float* dc = dx + c * hw;
        for (size_t oy = 0; oy < h_; ++oy) {
          const long iy = long(oy) + long(ki) - long(pad_);
          if (iy < 0 || iy >= long(h_)) continue;
          float* dr = dc + size_t(iy) * w_;
          const float* in = row + oy * w_;
          for (size_t ox = 0; ox < w_; ++ox) {
            const long ix = long(ox) + long(kj) - long(pad_);
            if (ix >= 0 && ix < long(w_)) dr[ix] += in[ox];
          }
        }
      }
}

void Im2colConv::forward(const float* x, const float* wt, const float* b, float* y, size_t batch) {
  const size_t hw = h_ * w_;
  col_.resize(patch() * hw);
  for (size_t n = 0; n < batch; ++n) {
    im2col(x + n * in_size(), col_.data());
    float* yn = y + n * out_size();
    for (size_t o = 0; o < out_c_; ++o) std::fill(yn + o * hw, yn + (o + 1) * hw, b[o]);
    gemm(false, false, out_c_, hw, patch(), 1.0f, wt, col_.data(), 1.0f, yn);
  }
}

void Im2colConv::backward_params(const float* x, const float* dy, float* gw, float* gb,
                                 size_t batch) {
  const size_t hw = h_ * w_;
  std::fill(gb, gb + out_c_, 0.0f);
  for (size_t n = 0; n < batch; ++n) {
    const float* dyn = dy + n * out_size();
    for (size_t o = 0; o < out_c_; ++o) {
      float s = 0;
      for (size_t i = 0; i < hw; ++i) s += dyn[o * hw + i];
      gb[o] += s;
    }
  }
  col_.resize(patch() * hw);
  for (size_t n = 0; n < batch; ++n) {
    im2col(x + n * in_size(), col_.data());
    // dW += dy_n [OUT x HW] * col^T [HW x CKK]
    gemm(false, true, out_c_, patch(), hw, 1.0f, dy + n * out_size(), col_.data(),
         n == 0 ? 0.0f : 1.0f, gw);
  }
  if (batch == 0) std::fill(gw, gw + out_c_ * patch(), 0.0f);
}

void Im2colConv::backward_data(const float* dy, const float* wt, float* dx, size_t batch) {
  const size_t hw = h_ * w_;
  dcol_.resize(patch() * hw);
  for (size_t n = 0; n < batch; ++n) {
    // dcol = W^T [CKK x OUT] * dy_n [OUT x HW], folded back onto the input
    gemm(true, false, patch(), hw, out_c_, 1.0f, wt, dy + n * out_size(), 0.0f, dcol_.data());
    float* dxn = dx + n * in_size();
    std::fill(dxn, dxn + in_size(), 0.0f);
    col2im(dcol_.data(), dxn);
  }
}

void MaxPool2Kernel::forward(const float* x, float* y, size_t batch) {
  const size_t oh = h_ / 2, ow = w_ / 2;
  for (size_t p = 0; p < batch * c_; ++p) {
    const float* xp = x + p * h_ * w_;
    float* yp = y + p * oh * ow;
    for (size_t i = 0; i < oh; ++i)
      for (size_t j = 0; j < ow; ++j) {
        const float* a = xp + (2 * i) * w_ + 2 * j;
        yp[i * ow + j] = std::max(std::max(a[0], a[1]), std::max(a[w_], a[w_ + 1]));
      }
  }
}

void MaxPool2Kernel::backward(const float* x, const float* y, const float* dy, float* dx,
                              size_t batch) {
  // Windows tile the input exactly (H and W even), so every dx element is written once: the
  // window's first maximum gets dy, the others 0, without branches or a zeroing pass first.
  const size_t oh = h_ / 2, ow = w_ / 2;
  for (size_t p = 0; p < batch * c_; ++p) {
    const float* xp = x + p * h_ * w_;
    float* dxp = dx + p * h_ * w_;
    const float* yp = y + p * oh * ow;
    const float* dyp = dy + p * oh * ow;
    for (size_t i = 0; i < oh; ++i)
      for (size_t j = 0; j < ow; ++j) {
        const float m = yp[i * ow + j], g = dyp[i * ow + j];
        const size_t b = (2 * i) * w_ + 2 * j;
        const bool a0 = xp[b] == m;
        const bool a1 = !a0 && xp[b + 1] == m;
        const bool a2 = !a0 && !a1 && xp[b + w_] == m;
        const bool a3 = !a0 && !a1 && !a2 && xp[b + w_ + 1] == m;
        dxp[b] = a0 ? g : 0.0f;
        dxp[b + 1] = a1 ? g : 0.0f;
        dxp[b + w_] = a2 ? g : 0.0f;
        dxp[b + w_ + 1] = a3 ? g : 0.0f;
      }
  }
}

}  // namespace dtrain::cpu
