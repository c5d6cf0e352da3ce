// The CPU executor behind the Backend seam: host memory, the shared functors run in loops,
// GEMMs through OpenBLAS (single-threaded in the distributed modes: one process per core). It is
// the reference every other backend is tested against.
#include <cstdlib>
#include <cstring>
#include <variant>

#include "runtime/backend.h"
#include "runtime/cpu_conv.h"
#include "runtime/cpu_ops.h"
#include "runtime/dnnl_conv.h"
#include "runtime/error.h"
#include "runtime/functors.h"

namespace dtrain {

namespace {

// The optimizer passes run over the whole flat buffer every step: each rule's functor is
// compiled for each SIMD width, with one gradient and with two ranks' gradients summed inside the
// pass (shared-memory allreduce); more inputs take the plain loop.
DTRAIN_SIMD_CLONES void update_loop(const fn::SgdUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::MomentumUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::AdamUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::RmspropUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::SgdUpdateT<fn::GradSum2>& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::MomentumUpdateT<fn::GradSum2>& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::AdamUpdateT<fn::GradSum2>& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void update_loop(const fn::RmspropUpdateT<fn::GradSum2>& f, size_t n) {
  cpu::for_each(n, f);
}
template <typename F>
void update_loop(const F& f, size_t n) {
  cpu::for_each(n, f);
}

// One step of `rule` with the gradient from g (a pointer or a sum).
template <typename G>
void run_update(const UpdateRule& rule, uint64_t t, float* p, G g, float* s, size_t stride,
                size_t n, float gs) {
  std::visit([&](const auto& r) { update_loop(r.step(p, g, s, stride, t, gs), n); }, rule);
}

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool host_memory() const override { return true; }

  void* allocate(size_t bytes) override {
    // Cache-line aligned, rounded up as aligned_alloc requires.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw Error(detail::cat("out of host memory allocating ", bytes, " bytes"));
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void upload(void* dst, const void* host, size_t bytes) override {
    if (dst != host) std::memmove(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (host != src) std::memmove(host, src, bytes);
  }
  void fill(float* p, size_t n, float value) override {
    for (size_t i = 0; i < n; ++i) p[i] = value;
  }
  void zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  StagedBatch stage_batch(const float* x, const unsigned char* y, size_t, size_t) override {
    return {x, y};
  }

  void gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float* a, size_t lda,
            const float* b, size_t ldb, float beta, float* c, size_t ldc) override {
    cpu::gemm_ld(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void broadcast_rows(float* y, const float* b, size_t rows, size_t cols) override {
    for (size_t r = 0; r < rows; ++r) std::memcpy(y + r * cols, b, cols * sizeof(float));
  }
  void copy(float* dst, const float* src, size_t n) override {
    if (dst != src) std::memmove(dst, src, n * sizeof(float));
  }
  void relu(const float* x, float* y, size_t n) override { cpu::for_each(n, fn::Relu{x, y}); }
  void relu_grad(const float* dy, const float* y, float* dx, size_t n) override {
    cpu::for_each(n, fn::ReluGrad{dy, y, dx});
  }
  void column_sums(const float* dy, size_t rows, size_t cols, float* db) override {
    cpu::column_sums(dy, rows, cols, db);
  }
  void softmax_xent(const float* logits, const unsigned char* labels, float* grad, float* row_loss,
                    unsigned char* row_hit, size_t rows, size_t classes, double* acc) override {
    cpu::for_each(rows, fn::SoftmaxXentRow{logits, labels, grad, row_loss, row_hit, classes,
                                           1.0f / static_cast<float>(rows)});
    cpu::for_each(1, fn::AccumulateRows{row_loss, row_hit, rows, acc});
  }
  void optimizer_step(const UpdateRule& rule, uint64_t t, float* p, const float* g, float* s,
                      size_t stride, size_t n, float gs) override {
    run_update(rule, t, p, g, s, stride, n, gs);
  }
  void optimizer_step_sum(const UpdateRule& rule, uint64_t t, float* p, const float* const* g,
                          size_t ng, float* s, size_t stride, size_t n, float gs) override {
    if (ng == 1) return run_update(rule, t, p, g[0], s, stride, n, gs);
    if (ng == 2) return run_update(rule, t, p, fn::GradSum2{g[0], g[1]}, s, stride, n, gs);
    run_update(rule, t, p, fn::GradSumN{g, ng}, s, stride, n, gs);
  }

  std::unique_ptr<ConvKernel> make_conv(size_t in_c, size_t h, size_t w, size_t out_c,
                                        size_t k) override {
    return std::make_unique<cpu::DnnlConv>(in_c, h, w, out_c, k);
  }
  std::unique_ptr<PoolKernel> make_pool(size_t c, size_t h, size_t w) override {
    return std::make_unique<cpu::MaxPool2Kernel>(c, h, w);
  }
};

}  // namespace

void Backend::optimizer_step_sum(const UpdateRule&, uint64_t, float*, const float* const*, size_t,
                                 float*, size_t, size_t, float) {
  throw Error(name() + ": summing gradients inside the optimizer step is not supported here");
}

Backend& cpu_backend() {
  static CpuBackend be;
  return be;
}

}  // namespace dtrain
