// Every CUDA op against the CPU reference (DESIGN.md decision 2). Skipped, saying why, when no
// GPU is present. Tolerances: elementwise ops and optimizer updates 1e-6 relative (the same
// functors, compiled with --fmad=false as the CPU's are with -ffp-contract=off, so a*b+c rounds
// twice on both; only expf may differ in the last bit), softmax 1e-5, GEMM 1e-4 relative to the
// row's magnitude, convolution and pooling 1e-3.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/conv2d.h"
#include "runtime/cpu_ops.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cudnn_algo.h"
#include "runtime/cuda/cudnn_conv.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"
#include "runtime/functors.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/rng.h"
#include "tests/gpu_skip.h"

namespace dtrain::cuda {
namespace {

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (device_count(&why) == 0)
      DTRAIN_SKIP_WITHOUT_GPU("no CUDA device on this machine (" << why << ")");
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaStreamCreate(&s_));
  }
  void TearDown() override {
    if (s_) cudaStreamDestroy(s_);
  }
  static std::vector<float> random(size_t n, uint64_t seed, float lo = -1, float hi = 1) {
    Rng r(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = r.uniform(lo, hi);
    return v;
  }
  std::vector<float> down(const DeviceBuffer<float>& b) {
    std::vector<float> h(b.size());
    b.download(h.data(), h.size(), s_);
    return h;
  }
  static void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                           double rel, const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], rel * (1.0 + std::fabs(want[i]))) << what << " at " << i;
  }
  cudaStream_t s_ = nullptr;
};

TEST_F(CudaOps, ReluBiasAndColumnSums) {
  const size_t rows = 37, cols = 19;
  auto y = random(rows * cols, 1), b = random(cols, 2);
  DeviceBuffer<float> dy(rows * cols), db(cols), dout(cols);
  dy.upload(y.data(), y.size(), s_);
  db.upload(b.data(), b.size(), s_);
  bias_add(dy.data(), db.data(), rows, cols, s_);
  relu(dy.data(), dy.data(), rows * cols, s_);
  std::vector<float> ref = y;
  cpu::for_each(ref.size(), fn::BiasAdd{ref.data(), b.data(), cols});
  cpu::for_each(ref.size(), fn::Relu{ref.data(), ref.data()});
  expect_close(down(dy), ref, 1e-6, "bias+relu");
  column_sums(dy.data(), rows, cols, dout.data(), s_);
  std::vector<float> sums(cols);
  cpu::column_sums(ref.data(), rows, cols, sums.data());
  expect_close(down(dout), sums, 1e-5, "column sums");
}

TEST_F(CudaOps, SoftmaxCrossEntropy) {
  const size_t rows = 50, classes = 10;
  auto z = random(rows * classes, 3, -5, 5);
  std::vector<unsigned char> labels(rows);
  for (size_t r = 0; r < rows; ++r) labels[r] = static_cast<unsigned char>(r % classes);
  DeviceBuffer<float> dz(z.size()), dg(z.size()), dl(rows);
  DeviceBuffer<unsigned char> dlab(rows), dhit(rows);
  dz.upload(z.data(), z.size(), s_);
  dlab.upload(labels.data(), rows, s_);
  softmax_xent(dz.data(), dlab.data(), dg.data(), dl.data(), dhit.data(), rows, classes, s_);
  std::vector<float> g(z.size()), l(rows);
  std::vector<unsigned char> hit(rows);
  cpu::for_each(rows, fn::SoftmaxXentRow{z.data(), labels.data(), g.data(), l.data(), hit.data(),
                                         classes, 1.0f / float(rows)});
  expect_close(down(dg), g, 1e-5, "softmax gradient");
  expect_close(down(dl), l, 1e-5, "softmax loss");
  std::vector<unsigned char> dh(rows);
  dhit.download(dh.data(), rows, s_);
  EXPECT_EQ(dh, hit);
}

TEST_F(CudaOps, GemmAllTranspositions) {
  Blas blas(s_);
  const size_t m = 33, n = 17, k = 29;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto a = random(m * k, 4), b = random(k * n, 5), c = random(m * n, 6);
      DeviceBuffer<float> da(a.size()), dbuf(b.size()), dc(c.size());
      da.upload(a.data(), a.size(), s_);
      dbuf.upload(b.data(), b.size(), s_);
      dc.upload(c.data(), c.size(), s_);
      blas.gemm(ta, tb, m, n, k, 0.5f, da.data(), dbuf.data(), 2.0f, dc.data());
      cpu::gemm(ta, tb, m, n, k, 0.5f, a.data(), b.data(), 2.0f, c.data());
      expect_close(down(dc), c, 1e-4,
                   ta ? (tb ? "gemm TT" : "gemm TN") : (tb ? "gemm NT" : "gemm NN"));
    }
}

// cuDNN's ranking is taken only where an entry succeeded in plain FP32; no GPU needed.
TEST(CudnnAlgo, FirstSuccessfulFp32EntryElseTheFallback) {
  cudnnConvolutionFwdAlgoPerf_t ranked[3] = {};
  ranked[0].algo = CUDNN_CONVOLUTION_FWD_ALGO_FFT;
  ranked[0].status = CUDNN_STATUS_NOT_SUPPORTED;
  ranked[1].algo = CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
  ranked[1].status = CUDNN_STATUS_SUCCESS;
  ranked[1].mathType = CUDNN_TENSOR_OP_MATH;
  ranked[2].algo = CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
  ranked[2].status = CUDNN_STATUS_SUCCESS;
  ranked[2].mathType = CUDNN_DEFAULT_MATH;
  const auto fallback = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  EXPECT_EQ(choose_cudnn_algo(ranked, 3, fallback), CUDNN_CONVOLUTION_FWD_ALGO_GEMM);
  EXPECT_EQ(choose_cudnn_algo(ranked, 2, fallback), fallback) << "none usable";
  EXPECT_EQ(choose_cudnn_algo(ranked, 0, fallback), fallback) << "cuDNN found nothing";
  ranked[0].status = CUDNN_STATUS_SUCCESS;
  ranked[0].mathType = CUDNN_FMA_MATH;
  EXPECT_EQ(choose_cudnn_algo(ranked, 3, fallback), CUDNN_CONVOLUTION_FWD_ALGO_FFT);
}

TEST_F(CudaOps, EveryOptimizerMatchesTheCpu) {
  const size_t n = 1031;
  for (const char* name : {"sgd", "momentum", "adam", "rmsprop"}) {
    OptimizerOptions o;
    o.name = name;
    o.learning_rate = 0.01f;
    Optimizer cpu_opt(o, n);
    auto p = random(n, 7), g = random(n, 8);
    DeviceBuffer<float> dp(n), dg(n), ds(std::max<size_t>(cpu_opt.state_size(), 1));
    dp.upload(p.data(), n, s_);
    dg.upload(g.data(), n, s_);
    CUDA_CHECK(cudaMemsetAsync(ds.data(), 0, ds.size() * sizeof(float), s_));
    for (uint64_t t = 1; t <= 3; ++t) {
      optimizer_step(make_update_rule(o), t, dp.data(), dg.data(), ds.data(), n, n, 0.5f, s_);
      cpu_opt.step(p.data(), g.data(), 0.5f);
    }
    expect_close(down(dp), p, 1e-6, name);
  }
}

TEST_F(CudaOps, CudnnConvolutionAndPoolingMatchTheCpu) {
  cudnnHandle_t h;
  CUDNN_CHECK(cudnnCreate(&h));
  CUDNN_CHECK(cudnnSetStream(h, s_));
  const size_t batch = 3, c = 2, hw = 8, out = 4, k = 5;
  Conv2D ref(c, hw, hw, out, k);
  std::vector<float> params(ref.param_count()), grads(ref.param_count());
  Rng rng(9);
  ref.init_params(params.data(), rng);
  ref.bind(cpu_backend(), params.data(), grads.data(), 0);
  auto x = random(batch * ref.in_size(), 10), dy = random(batch * ref.out_size(), 11);
  std::vector<float> y(batch * ref.out_size()), dx(batch * ref.in_size());
  ref.forward(x.data(), y.data(), batch);
  std::vector<float> dy_cpu = dy;
  ref.backward(x.data(), y.data(), dy_cpu.data(), dx.data(), batch, [](size_t, size_t) {});

  CudnnConv2D conv(h, c, hw, hw, out, k);
  DeviceBuffer<float> dX(x.size()), dW(params.size()), dY(y.size()), dDY(dy.size()),
      dGW(params.size()), dDX(dx.size());
  dX.upload(x.data(), x.size(), s_);
  dW.upload(params.data(), params.size(), s_);
  dDY.upload(dy.data(), dy.size(), s_);
  const size_t nw = out * c * k * k;
  conv.forward(dX.data(), dW.data(), dW.data() + nw, dY.data(), batch);
  expect_close(down(dY), y, 1e-3, "conv forward");
  conv.backward(dX.data(), dDY.data(), dW.data(), dGW.data(), dGW.data() + nw, dDX.data(), batch);
  expect_close(down(dGW), grads, 1e-3, "conv weight and bias gradients");
  expect_close(down(dDX), dx, 1e-3, "conv input gradient");

  MaxPool2 pref(c, hw, hw);
  pref.bind(cpu_backend(), nullptr, nullptr, 0);
  std::vector<float> py(batch * pref.out_size()), pdx(x.size());
  auto pdy = random(py.size(), 12);
  pref.forward(x.data(), py.data(), batch);
  pref.backward(x.data(), py.data(), pdy.data(), pdx.data(), batch, [](size_t, size_t) {});
  CudnnMaxPool2 pool(h, c, hw, hw);
  DeviceBuffer<float> dPY(py.size()), dPDY(pdy.size()), dPDX(pdx.size());
  dPDY.upload(pdy.data(), pdy.size(), s_);
  pool.forward(dX.data(), dPY.data(), batch);
  expect_close(down(dPY), py, 1e-6, "max-pool forward");
  pool.backward(dX.data(), dPY.data(), dPDY.data(), dPDX.data(), batch);
  expect_close(down(dPDX), pdx, 1e-6, "max-pool backward");
  cudnnDestroy(h);
}

// The whole model on the CUDA backend against the same model on the CPU backend: the layer and
// model code is shared, so this checks the backend's ops in their real sequence, the staging of
// batches through the pinned double buffer (more steps than slots, batches of two sizes), and the
// device-side loss/accuracy sums. Tolerance 2e-3 after 6 Adam steps (GEMM summation order
// differs between OpenBLAS and cuBLAS; Adam normalizes small gradient differences).
void expect_model_matches_cpu(const std::string& kind, size_t batch) {
  CudaBackend gpu(0);
  auto cpu_model = build_model(kind, 28, 28, 64, 32, 10);
  auto gpu_model = build_model(kind, 28, 28, 64, 32, 10, gpu);
  cpu_model->init(7);
  gpu_model->init(7);
  Optimizer cpu_opt(OptimizerOptions{}, cpu_model->param_count());
  Optimizer gpu_opt(OptimizerOptions{}, gpu_model->param_count(), &gpu);
  Rng rng(11);
  std::vector<float> x(4 * batch * 784);
  std::vector<unsigned char> y(4 * batch);
  for (auto& v : x) v = rng.uniform();
  for (auto& v : y) v = static_cast<unsigned char>(rng.below(10));
  std::vector<std::pair<size_t, size_t>> cpu_ready, gpu_ready;
  for (size_t s = 0; s < 6; ++s) {
    const float* xs = x.data() + (s % 4) * batch * 784;
    const unsigned char* ys = y.data() + (s % 4) * batch;
    cpu_model->train_step(xs, ys, batch, [&](size_t o, size_t n) { cpu_ready.push_back({o, n}); });
    gpu_model->train_step(xs, ys, batch, [&](size_t o, size_t n) { gpu_ready.push_back({o, n}); });
    cpu_opt.step(cpu_model->params(), cpu_model->grads());
    gpu_opt.step(gpu_model->params(), gpu_model->grads());
  }
  EXPECT_EQ(gpu_ready, cpu_ready) << "the same gradient ranges, in the same order";
  const BatchStats cs = cpu_model->take_train_stats(), gs = gpu_model->take_train_stats();
  EXPECT_EQ(gs.count, cs.count);
  EXPECT_NEAR(gs.loss_sum, cs.loss_sum, 1e-3 * cs.loss_sum);
  std::vector<float> want(cpu_model->param_count()), got(gpu_model->param_count());
  cpu_model->read_params(want.data());
  gpu_model->read_params(got.data());
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i])));
  EXPECT_LT(worst, 2e-3) << kind << ": parameters after 6 steps";
  const BatchStats ce = cpu_model->evaluate(x.data(), y.data(), 4 * batch, 3 * batch);
  const BatchStats ge = gpu_model->evaluate(x.data(), y.data(), 4 * batch, 3 * batch);
  EXPECT_EQ(ge.count, ce.count);
  EXPECT_NEAR(ge.loss_sum, ce.loss_sum, 1e-3 * ce.loss_sum);
  EXPECT_LE(std::max(ge.correct, ce.correct) - std::min(ge.correct, ce.correct), 2u);
}

TEST_F(CudaOps, MlpModelOnTheGpuMatchesTheCpu) {
  expect_model_matches_cpu("mlp", 50);
}

TEST_F(CudaOps, CnnModelOnTheGpuMatchesTheCpu) {
  expect_model_matches_cpu("cnn", 8);
}

TEST(CudaDevice, ReportsWhyThereIsNoDevice) {
  std::string why;
  const int n = device_count(&why);
  if (n == 0) {
    EXPECT_FALSE(why.empty());
    EXPECT_THROW(select_device(0), InputError);
  } else {
    EXPECT_EQ(select_device(size_t(n)), 0) << "local rank n maps to device 0";
  }
}

}  // namespace
}  // namespace dtrain::cuda
