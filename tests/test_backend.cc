// The Backend seam without a GPU. FencedBackend runs the CPU math but behaves like a device: it
// says its memory is not host memory, hands out its own allocations, copies batches into its own
// double-buffered staging memory, and fails the test whenever an op gets a pointer that is not
// inside one of its allocations. Training through it must give bitwise the CPU backend's
// parameters. A host pointer reaching a device op (a batch not staged, a host buffer passed to
// the optimizer, a checkpoint read straight from device memory) is the bug class this catches:
// on a GPU it is an illegal-address crash; here it is a failed assertion naming the op.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "dtrain/device.h"
#include "runtime/checkpoint.h"
#include "runtime/cpu_conv.h"
#include "runtime/dnnl_conv.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

class FencedBackend : public Backend {
 public:
  ~FencedBackend() override {
    for (auto& s : slots_) s.reset();
    EXPECT_TRUE(live_.empty()) << live_.size() << " allocations leaked";
  }
  std::string name() const override { return "fenced-cpu"; }
  bool host_memory() const override { return false; }
  void* allocate(size_t bytes) override {
    void* p = cpu().allocate(bytes ? bytes : 1);
    live_[static_cast<const char*>(p)] = bytes;
    return p;
  }
  void deallocate(void* p) override {
    EXPECT_EQ(live_.erase(static_cast<const char*>(p)), 1u) << "freeing a pointer not allocated";
    cpu().deallocate(p);
  }
  void upload(void* dst, const void* host, size_t bytes) override {
    mine(dst, bytes, "upload destination");
    notmine(host, "upload source");
    std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    mine(src, bytes, "download source");
    notmine(host, "download destination");
    std::memcpy(host, src, bytes);
  }
  void fill(float* p, size_t n, float v) override {
    mine(p, n * 4, "fill");
    cpu().fill(p, n, v);
  }
  void zero(void* p, size_t bytes) override {
    mine(p, bytes, "zero");
    cpu().zero(p, bytes);
  }
  StagedBatch stage_batch(const float* x, const unsigned char* y, size_t rows,
                          size_t features) override {
    notmine(x, "batch images");
    notmine(y, "batch labels");
    auto& s = slots_[next_ ^= 1];
    if (!s || s->x.size() < rows * features)
      s = std::make_unique<Slot>(Slot{BackendArray<float>(*this, rows * features),
                                      BackendArray<unsigned char>(*this, rows)});
    std::memcpy(s->x.data(), x, rows * features * sizeof(float));
    std::memcpy(s->y.data(), y, rows);
    ++staged_;
    return {s->x.data(), s->y.data()};
  }
  void gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float* a, size_t lda,
            const float* b, size_t ldb, float beta, float* c, size_t ldc) override {
    mine(a, 0, "gemm A");
    mine(b, 0, "gemm B");
    mine(c, 0, "gemm C");
    cpu().gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void broadcast_rows(float* y, const float* b, size_t rows, size_t cols) override {
    mine(y, rows * cols * 4, "broadcast_rows y");
    mine(b, cols * 4, "broadcast_rows b");
    cpu().broadcast_rows(y, b, rows, cols);
  }
  void copy(float* dst, const float* src, size_t n) override {
    mine(dst, n * 4, "copy dst");
    mine(src, n * 4, "copy src");
    cpu().copy(dst, src, n);
  }
  void relu(const float* x, float* y, size_t n) override {
    mine(x, n * 4, "relu x");
    mine(y, n * 4, "relu y");
    cpu().relu(x, y, n);
  }
  void relu_grad(const float* dy, const float* y, float* dx, size_t n) override {
    mine(dy, n * 4, "relu_grad dy");
    mine(y, n * 4, "relu_grad y");
    mine(dx, n * 4, "relu_grad dx");
    cpu().relu_grad(dy, y, dx, n);
  }
  void column_sums(const float* dy, size_t rows, size_t cols, float* db) override {
    mine(dy, rows * cols * 4, "column_sums dy");
    mine(db, cols * 4, "column_sums db");
    cpu().column_sums(dy, rows, cols, db);
  }
  void softmax_xent(const float* z, const unsigned char* labels, float* grad, float* loss,
                    unsigned char* hit, size_t rows, size_t classes, double* acc) override {
    mine(z, rows * classes * 4, "softmax logits");
    mine(labels, rows, "softmax labels");
    if (grad) mine(grad, rows * classes * 4, "softmax grad");
    mine(loss, rows * 4, "softmax row loss");
    mine(hit, rows, "softmax row hit");
    mine(acc, 16, "softmax sums");
    cpu().softmax_xent(z, labels, grad, loss, hit, rows, classes, acc);
  }
  void optimizer_step(const UpdateRule& o, uint64_t t, float* p, const float* g, float* s,
                      size_t stride, size_t n, float gs) override {
    mine(p, n * 4, "optimizer params");
    mine(g, n * 4, "optimizer grads");
    if (s) mine(s, n * 4, "optimizer state");
    cpu().optimizer_step(o, t, p, g, s, stride, n, gs);
  }
  // Convolution and pooling check their pointers and run the CPU kernels.
  std::unique_ptr<ConvKernel> make_conv(size_t in_c, size_t h, size_t w, size_t out_c,
                                        size_t k) override {
    return std::make_unique<Conv>(*this, in_c, h, w, out_c, k);
  }
  std::unique_ptr<PoolKernel> make_pool(size_t c, size_t h, size_t w) override {
    return std::make_unique<Pool>(*this, c, h, w);
  }

  size_t staged() const { return staged_; }
  // Fails unless [p, p + bytes) lies inside one live allocation.
  void mine(const void* p, size_t bytes, const char* what) const {
    const char* c = static_cast<const char*>(p);
    auto it = live_.upper_bound(c);
    const bool ok = it != live_.begin() && (--it, c + bytes <= it->first + it->second);
    EXPECT_TRUE(ok) << what << ": pointer is not in backend memory";
  }
  void notmine(const void* p, const char* what) const {
    const char* c = static_cast<const char*>(p);
    auto it = live_.upper_bound(c);
    const bool inside = it != live_.begin() && (--it, c < it->first + it->second);
    EXPECT_FALSE(inside) << what << ": expected host memory, got backend memory";
  }

 private:
  static Backend& cpu() { return cpu_backend(); }
  struct Slot {
    BackendArray<float> x;
    BackendArray<unsigned char> y;
  };
  struct Conv : ConvKernel {
    Conv(FencedBackend& be, size_t in_c, size_t h, size_t w, size_t out_c, size_t k)
        : be(be), k(in_c, h, w, out_c, k) {}
    void forward(const float* x, const float* w, const float* b, float* y, size_t n) override {
      be.mine(x, 0, "conv x");
      be.mine(w, 0, "conv w");
      be.mine(b, 0, "conv b");
      be.mine(y, 0, "conv y");
      k.forward(x, w, b, y, n);
    }
    void backward_params(const float* x, const float* dy, float* dw, float* db, size_t n) override {
      be.mine(x, 0, "conv x");
      be.mine(dy, 0, "conv dy");
      be.mine(dw, 0, "conv dw");
      be.mine(db, 0, "conv db");
      k.backward_params(x, dy, dw, db, n);
    }
    void backward_data(const float* dy, const float* w, float* dx, size_t n) override {
      be.mine(dy, 0, "conv dy");
      be.mine(w, 0, "conv w");
      be.mine(dx, 0, "conv dx");
      k.backward_data(dy, w, dx, n);
    }
    FencedBackend& be;
    cpu::DnnlConv k;
  };
  struct Pool : PoolKernel {
    Pool(FencedBackend& be, size_t c, size_t h, size_t w) : be(be), k(c, h, w) {}
    void forward(const float* x, float* y, size_t n) override {
      be.mine(x, 0, "pool x");
      be.mine(y, 0, "pool y");
      k.forward(x, y, n);
    }
    void backward(const float* x, const float* y, const float* dy, float* dx, size_t n) override {
      be.mine(x, 0, "pool x");
      be.mine(y, 0, "pool y");
      be.mine(dy, 0, "pool dy");
      be.mine(dx, 0, "pool dx");
      k.backward(x, y, dy, dx, n);
    }
    FencedBackend& be;
    cpu::MaxPool2Kernel k;
  };

  std::map<const char*, size_t> live_;
  std::unique_ptr<Slot> slots_[2];
  int next_ = 0;
  size_t staged_ = 0;
};

// Trains `steps` steps on the given backend and returns the parameters (host copy).
std::vector<float> train(Backend& be, const std::string& kind, size_t steps, BatchStats* stats,
                         BatchStats* eval) {
  auto m = build_model(kind, 28, 28, 32, 16, 10, be);
  m->init(3);
  Optimizer opt(OptimizerOptions{}, m->param_count(), &be);
  Rng rng(4);
  const size_t batch = 6;
  std::vector<float> x(3 * batch * 784);
  std::vector<uint8_t> y(3 * batch);
  for (auto& v : x) v = rng.uniform();
  for (auto& v : y) v = uint8_t(rng.below(10));
  for (size_t s = 0; s < steps; ++s) {
    m->train_step(x.data() + (s % 3) * batch * 784, y.data() + (s % 3) * batch, batch,
                  [](size_t, size_t) {});
    opt.step(m->params(), m->grads());
  }
  *stats = m->take_train_stats();
  *eval = m->evaluate(x.data(), y.data(), 3 * batch, 5);  // uneven chunks: 5, 5, 5, 3
  std::vector<float> p(m->param_count());
  m->read_params(p.data());
  return p;
}

class BackendSeam : public ::testing::TestWithParam<std::string> {};

TEST_P(BackendSeam, FencedDeviceTrainsBitwiseLikeTheCpu) {
  FencedBackend fenced;
  BatchStats cs, ce, fs, fe;
  const auto want = train(cpu_backend(), GetParam(), 5, &cs, &ce);
  const auto got = train(fenced, GetParam(), 5, &fs, &fe);
  EXPECT_EQ(got, want);
  EXPECT_EQ(fs.loss_sum, cs.loss_sum);
  EXPECT_EQ(fs.correct, cs.correct);
  EXPECT_EQ(fs.count, 30u);
  EXPECT_EQ(fe.loss_sum, ce.loss_sum);
  EXPECT_EQ(fe.count, 18u);
  EXPECT_EQ(fenced.staged(), 5u + 4u) << "every training and evaluation batch is staged";
}

TEST(BackendSeam, TheFenceCatchesHostPointers) {
  FencedBackend be;
  BackendArray<float> a(be, 8);
  std::vector<float> host(8);
  be.mine(a.data() + 2, 6 * sizeof(float), "inside");  // passes
  EXPECT_NONFATAL_FAILURE(be.mine(host.data(), 4, "host"), "not in backend memory");
  EXPECT_NONFATAL_FAILURE(be.mine(a.data() + 4, 8 * sizeof(float), "overrun"),
                          "not in backend memory");
  EXPECT_NONFATAL_FAILURE(be.notmine(a.data(), "dev"), "expected host memory");
}

INSTANTIATE_TEST_SUITE_P(Models, BackendSeam, ::testing::Values("mlp", "cnn"));

TEST(BackendSeam, TakeTrainStatsResetsAndEvaluateLeavesThemAlone) {
  FencedBackend be;
  auto m = build_model("mlp", 28, 28, 8, 8, 10, be);
  m->init(1);
  std::vector<float> x(4 * 784, 0.5f);
  std::vector<uint8_t> y = {1, 2, 3, 4};
  m->forward_train(x.data(), y.data(), 4);
  m->evaluate(x.data(), y.data(), 4);
  const BatchStats a = m->peek_train_stats();
  EXPECT_EQ(a.count, 4u);
  EXPECT_GT(a.loss_sum, 0.0);
  const BatchStats b = m->take_train_stats();
  EXPECT_EQ(b.loss_sum, a.loss_sum);
  const BatchStats c = m->take_train_stats();
  EXPECT_EQ(c.count, 0u);
  EXPECT_EQ(c.loss_sum, 0.0);
}

TEST(BackendSeam, CheckpointRoundTripThroughDeviceMemory) {
  testing::TempDir dir;
  const std::string path = dir / "ck.bin";
  FencedBackend be;
  auto m = build_model("mlp", 28, 28, 8, 8, 10, be);
  m->init(5);
  Optimizer opt(OptimizerOptions{}, m->param_count(), &be);
  std::vector<float> x(2 * 784, 0.25f);
  std::vector<uint8_t> y = {7, 1};
  m->train_step(x.data(), y.data(), 2, [](size_t, size_t) {});
  opt.step(m->params(), m->grads());
  save_checkpoint(path, *m, opt, CheckpointMeta{});
  auto m2 = build_model("mlp", 28, 28, 8, 8, 10, be);
  Optimizer opt2(OptimizerOptions{}, m2->param_count(), &be);
  load_checkpoint(path, *m2, opt2);
  std::vector<float> p1(m->param_count()), p2(m2->param_count());
  m->read_params(p1.data());
  m2->read_params(p2.data());
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(opt.state_vector(), opt2.state_vector());
  EXPECT_EQ(opt2.steps(), 1u);
}

TEST(BackendSeam, TrainerRunsOnADeviceBackend) {
  // The whole loop (staging, device-side sums read once per epoch, evaluation, outputs) through
  // the fenced device, against the CPU backend: identical metrics.
  testing::TempDir dir;
  const Dataset d = make_synthetic(600, 200, 8);
  auto run = [&](Backend& be, const std::string& out) {
    auto m = build_model("mlp", d.rows, d.cols, 32, 16, d.classes, be);
    Optimizer opt(OptimizerOptions{}, m->param_count(), &be);
    LocalSync sync;
    JobSpec o;
    o.epochs = 2;
    o.batch_size = 20;
    o.print = false;
    o.output_dir = dir / out;
    Trainer t(*m, opt, sync, d, o);
    return t.run();
  };
  FencedBackend fenced;
  const TrainResult a = run(cpu_backend(), "cpu"), b = run(fenced, "fenced");
  ASSERT_EQ(a.epochs.size(), b.epochs.size());
  for (size_t e = 0; e < a.epochs.size(); ++e) {
    EXPECT_EQ(b.epochs[e].loss, a.epochs[e].loss);
    EXPECT_EQ(b.epochs[e].test_accuracy, a.epochs[e].test_accuracy);
  }
  EXPECT_EQ(b.summary["device"], "fenced-cpu");
  EXPECT_TRUE(std::filesystem::exists(dir / "fenced/model/checkpoint.bin"));
}

// NCCL's one-GPU-per-rank rule by GPU identity, not by counting: ranks that each see one GPU
// through CUDA_VISIBLE_DEVICES are fine; two ranks on one physical GPU are named.
TEST(DeviceChoice, GpuSharingIsRefusedOnlyWhenRanksReallyShare) {
  EXPECT_EQ(gpu_sharing_problem({"aa01", "bb02"}), "");
  EXPECT_EQ(gpu_sharing_problem({"aa01"}), "");
  const std::string e = gpu_sharing_problem({"aa01", "bb02", "aa01"});
  EXPECT_NE(e.find("ranks 0 and 2 would share GPU aa01"), std::string::npos) << e;
  EXPECT_NE(e.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << e;
}

// The ranks' device kinds agree, or the first that differs is named (a hang before: --device auto
// picked the CPU on a machine whose GPU was unusable, the others the GPUs' collectives).
TEST(DeviceChoice, RanksOnDifferentKindsOfDeviceAreNamed) {
  EXPECT_EQ(device_kind_problem({"cuda", "cuda", "cuda"}), "");
  EXPECT_EQ(device_kind_problem({"cpu"}), "");
  const std::string e = device_kind_problem({"cuda", "cuda", "cpu", "cuda"});
  EXPECT_NE(e.find("rank 2 trains on the cpu where rank 0 trains on the cuda"), std::string::npos)
      << e;
  EXPECT_NE(e.find("--device auto decides per machine"), std::string::npos) << e;
}

TEST(DeviceChoice, CpuAutoAndCuda) {
  DeviceChoice cpu = choose_device("cpu", 0);
  EXPECT_EQ(cpu.backend, &cpu_backend());
  EXPECT_FALSE(cpu.cuda);
  DeviceChoice any = choose_device("auto", 3);
  EXPECT_NE(any.backend, nullptr);
  EXPECT_FALSE(any.note.empty());
  if (!any.cuda) {
    // No GPU here (or no CUDA in this build): --device cuda must say so, not fall back silently.
    try {
      choose_device("cuda", 0);
      FAIL() << "--device cuda without a GPU did not throw";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(choose_device("tpu", 0), InputError);
}

}  // namespace
}  // namespace dtrain
