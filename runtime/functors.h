// The elementwise math of the runtime, written once. Each functor is a plain struct with a
// __host__ __device__ call operator: the CPU backend (cpu_ops.cc) runs it in a loop, the CUDA
// backend launches it as a kernel body. Keep them free of anything either side lacks (no std::,
// no exceptions, no allocation).
#pragma once

#include <cmath>
#include <cstddef>

#if defined(__CUDACC__)
#define DTRAIN_HD __host__ __device__ __forceinline__
#else
#define DTRAIN_HD inline
#endif

namespace dtrain::fn {

DTRAIN_HD float fsqrt(float x) {
#if defined(__CUDA_ARCH__)
  return ::sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
DTRAIN_HD float fexp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return std::exp(x);
#endif
}
DTRAIN_HD float flog(float x) {
#if defined(__CUDA_ARCH__)
  return ::logf(x);
#else
  return std::log(x);
#endif
}

// y[r, c] += b[c] for a row-major [rows x cols] matrix; i indexes the matrix.
struct BiasAdd {
  float* y;
  const float* b;
  size_t cols;
  DTRAIN_HD void operator()(size_t i) const { y[i] += b[i % cols]; }
};

// y[r, c] = b[c]: a bias as the initial value of a GEMM's output.
struct BroadcastRows {
  float* y;
  const float* b;
  size_t cols;
  DTRAIN_HD void operator()(size_t i) const { y[i] = b[i % cols]; }
};

struct Fill {
  float* p;
  float v;
  DTRAIN_HD void operator()(size_t i) const { p[i] = v; }
};

// y = max(x, 0); x == y is fine (in place).
struct Relu {
  const float* x;
  float* y;
  DTRAIN_HD void operator()(size_t i) const { y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
};

// dx = dy * (y > 0): the ReLU gradient, taken through its output; dx == dy is fine.
struct ReluGrad {
  const float* dy;
  const float* y;
  float* dx;
  DTRAIN_HD void operator()(size_t i) const {
    // Both loads unconditional: a load only on one side of the branch keeps the loop scalar.
    const float g = dy[i];
    dx[i] = y[i] > 0.0f ? g : 0.0f;
  }
};

// One row of softmax cross-entropy, fused: reads logits, writes d(mean loss)/d(logits) into
// grad, returns the row's loss and whether argmax hit the label. `scale` is 1/batch.
struct SoftmaxXentRow {
  const float* logits;
  const unsigned char* labels;
  float* grad;  // may be null when only the loss is wanted
  float* loss;  // per-row loss out
  unsigned char* hit;
  size_t classes;
  float scale;
  DTRAIN_HD void operator()(size_t r) const {
    const float* z = logits + r * classes;
    float mx = z[0];
    size_t arg = 0;
    for (size_t c = 1; c < classes; ++c)
      if (z[c] > mx) {
        mx = z[c];
        arg = c;
      }
    float sum = 0.0f;
    for (size_t c = 0; c < classes; ++c) sum += fexp(z[c] - mx);
    const size_t y = labels[r];
    loss[r] = flog(sum) - (z[y] - mx);
    hit[r] = arg == y ? 1 : 0;
    if (grad) {
      float* g = grad + r * classes;
      const float inv = 1.0f / sum;
      for (size_t c = 0; c < classes; ++c)
        g[c] = (fexp(z[c] - mx) * inv - (c == y ? 1.0f : 0.0f)) * scale;
    }
  }
};

// Adds rows' loss sum and hit count to acc[0] and acc[1] in row order (double, so the sums are
// the same on every executor). Run with n = 1: one thread walks the rows.
struct AccumulateRows {
  const float* loss;
  const unsigned char* hit;
  size_t rows;
  double* acc;
  DTRAIN_HD void operator()(size_t) const {
    double l = acc[0], h = acc[1];
    for (size_t r = 0; r < rows; ++r) {
      l += loss[r];
      h += hit[r];
    }
    acc[0] = l;
    acc[1] = h;
  }
};

// ---- optimizer updates: one element of the flat parameter buffer each ----

// Every update takes gs, a gradient scale folded into its one pass: 1/world when the gradients
// are an allreduce's sum (x * 1.0f is exact, so gs = 1 changes nothing).
//
// G is where the gradient comes from: a plain pointer, or GradSum2/GradSumN, which add the ranks'
// gradients element by element in rank order inside the update's own pass (SharedMemoryAllreduce's
// shared-memory reduction), rounding exactly as a sum computed first would.
struct GradSum2 {
  const float* a;
  const float* b;
  DTRAIN_HD float operator[](size_t i) const { return a[i] + b[i]; }
};
struct GradSumN {
  const float* const* g;
  size_t n;
  DTRAIN_HD float operator[](size_t i) const {
    float s = g[0][i];
    for (size_t k = 1; k < n; ++k) s += g[k][i];
    return s;
  }
};

template <typename G>
struct SgdUpdateT {
  float* p;
  G g;
  float lr, gs;
  DTRAIN_HD void operator()(size_t i) const { p[i] -= lr * (g[i] * gs); }
};

// PyTorch's form: v = mu*v + g; p -= lr*v.
template <typename G>
struct MomentumUpdateT {
  float* p;
  G g;
  float* v;
  float lr, mu, gs;
  DTRAIN_HD void operator()(size_t i) const {
    const float vi = mu * v[i] + g[i] * gs;
    v[i] = vi;
    p[i] -= lr * vi;
  }
};

// Adam (Kingma & Ba) as PyTorch computes it: step = lr / (1 - b1^t),
// denom = sqrt(v) / sqrt(1 - b2^t) + eps. bc1 = 1/(1-b1^t), inv_sqrt_bc2 = 1/sqrt(1-b2^t).
template <typename G>
struct AdamUpdateT {
  float* p;
  G g;
  float* m;
  float* v;
  float lr, b1, b2, eps, bc1, inv_sqrt_bc2, gs;
  DTRAIN_HD void operator()(size_t i) const {
    const float gi = g[i] * gs;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= (lr * bc1) * mi / (fsqrt(vi) * inv_sqrt_bc2 + eps);
  }
};

// RMSprop: v = a*v + (1-a) g^2; p -= lr * g / (sqrt(v) + eps).
template <typename G>
struct RmspropUpdateT {
  float* p;
  G g;
  float* v;
  float lr, alpha, eps, gs;
  DTRAIN_HD void operator()(size_t i) const {
    const float gi = g[i] * gs;
    const float vi = alpha * v[i] + (1.0f - alpha) * gi * gi;
    v[i] = vi;
    p[i] -= lr * gi / (fsqrt(vi) + eps);
  }
};

using SgdUpdate = SgdUpdateT<const float*>;
using MomentumUpdate = MomentumUpdateT<const float*>;
using AdamUpdate = AdamUpdateT<const float*>;
using RmspropUpdate = RmspropUpdateT<const float*>;

// x *= s (gradient averaging after a sum-allreduce).
struct Scale {
  float* x;
  float s;
  DTRAIN_HD void operator()(size_t i) const { x[i] *= s; }
};

}  // namespace dtrain::fn
