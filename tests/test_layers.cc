// Finite-difference gradient checks: each layer alone and the whole MLP with its loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "runtime/functors.h"
#include "runtime/model.h"
#include "runtime/rng.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

// Loss of a model on a batch (mean cross-entropy).
double loss_of(Model& m, const std::vector<float>& x, const std::vector<uint8_t>& y) {
  BatchStats s = m.evaluate(x.data(), y.data(), y.size());
  return s.loss_sum / double(s.count);
}

void check_model_gradient(Model& m, size_t batch, uint64_t seed, size_t probes) {
  Rng rng(seed);
  std::vector<float> x(batch * m.input_size());
  std::vector<uint8_t> y(batch);
  for (auto& v : x) v = rng.uniform(-1, 1);
  for (auto& v : y) v = uint8_t(rng.below(m.classes()));
  std::vector<std::pair<size_t, size_t>> reported;
  m.train_step(x.data(), y.data(), batch, [&](size_t o, size_t n) { reported.push_back({o, n}); });
  // Every parameter is reported exactly once.
  std::vector<int> seen(m.param_count(), 0);
  for (auto [o, n] : reported)
    for (size_t i = o; i < o + n; ++i) seen[i]++;
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "parameter " << i;
  std::vector<float> g(m.grads(), m.grads() + m.param_count());
  for (size_t k = 0; k < probes; ++k) {
    const size_t i = (k * 7919 + 13) % m.param_count();
    const float saved = m.params()[i];
    const float h = 1e-3f;
    m.params()[i] = saved + h;
    const double lp = loss_of(m, x, y);
    m.params()[i] = saved - h;
    const double lm = loss_of(m, x, y);
    m.params()[i] = saved;
    const double fd = (lp - lm) / (2.0 * h);
    EXPECT_NEAR(g[i], fd, 2e-3 + 2e-2 * std::fabs(fd)) << "parameter " << i;
  }
}

TEST(GradCheck, DenseAlone) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Dense>(7, 5));
  Model m(7, 5, std::move(layers));
  m.init(3);
  check_model_gradient(m, 4, 1, 40);
}

TEST(GradCheck, DenseReluDense) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Dense>(6, 9));
  layers.push_back(std::make_unique<Relu>(9));
  layers.push_back(std::make_unique<Dense>(9, 4));
  Model m(6, 4, std::move(layers));
  m.init(5);
  check_model_gradient(m, 3, 2, 60);
}

TEST(GradCheck, WholeMlpWithChunkedGradients) {
  auto m = build_mlp(30, {17, 11}, 10);
  m->init(7);
  m->set_grad_chunk(40);  // reported in many pieces, still exactly once each
  check_model_gradient(*m, 5, 3, 120);
}

TEST(GradCheck, BatchOfOne) {
  auto m = build_mlp(8, {5, 3}, 10);
  m->init(9);
  check_model_gradient(*m, 1, 4, 50);
}

TEST(Functors, SoftmaxXentMatchesDirectFormula) {
  const float z[3] = {1.0f, 2.0f, 0.5f};
  const unsigned char y[1] = {1};
  float grad[3], loss[1];
  unsigned char hit[1];
  fn::SoftmaxXentRow{z, y, grad, loss, hit, 3, 1.0f}(0);
  const double e0 = std::exp(1.0), e1 = std::exp(2.0), e2 = std::exp(0.5), s = e0 + e1 + e2;
  EXPECT_NEAR(loss[0], -std::log(e1 / s), 1e-6);
  EXPECT_NEAR(grad[0], e0 / s, 1e-6);
  EXPECT_NEAR(grad[1], e1 / s - 1.0, 1e-6);
  EXPECT_NEAR(grad[2], e2 / s, 1e-6);
  EXPECT_EQ(hit[0], 1);
}

TEST(Functors, ReluAndItsGradient) {
  const float x[4] = {-1.0f, 0.0f, 2.0f, -0.5f};
  float y[4];
  for (size_t i = 0; i < 4; ++i) fn::Relu{x, y}(i);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[2], 2.0f);
  EXPECT_EQ(y[3], 0.0f);
  float dy[4] = {1, 1, 1, 1}, dx[4];
  for (size_t i = 0; i < 4; ++i) fn::ReluGrad{dy, y, dx}(i);
  EXPECT_EQ(dx[0], 0.0f);
  EXPECT_EQ(dx[1], 0.0f);
  EXPECT_EQ(dx[2], 1.0f);
  EXPECT_EQ(dy[0], 1.0f) << "dy is not written when dx is separate";
  for (size_t i = 0; i < 4; ++i) fn::ReluGrad{dy, y, dy}(i);  // in place
  EXPECT_EQ(dy[0], 0.0f);
  EXPECT_EQ(dy[2], 1.0f);
}

TEST(Model, RejectsMismatchedLayers) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Dense>(6, 9));
  layers.push_back(std::make_unique<Dense>(8, 4));
  EXPECT_THROW(Model(6, 4, std::move(layers)), InputError);
}

TEST(Model, SameSeedSameParameters) {
  auto a = build_mlp(784, {300, 100}, 10), b = build_mlp(784, {300, 100}, 10);
  a->init(11);
  b->init(11);
  ASSERT_EQ(a->param_count(), 266610u);
  EXPECT_EQ(0, std::memcmp(a->params(), b->params(), a->param_count() * sizeof(float)));
  b->init(12);
  EXPECT_NE(0, std::memcmp(a->params(), b->params(), a->param_count() * sizeof(float)));
}

// A layer of your own, written as docs/custom-model.md's "A layer of your own" says: y = x * s + t
// per feature, parameters [s (size), t (size)] in its view. The CPU backend's memory is the host's.
class Scale : public Layer {
 public:
  explicit Scale(size_t size, bool forget_offset = false, bool accumulate = false)
      : size_(size), forget_offset_(forget_offset), accumulate_(accumulate) {}
  std::string kind() const override { return "scale"; }
  nlohmann::json spec() const override { return {{"kind", "scale"}, {"size", size_}}; }
  size_t in_size() const override { return size_; }
  size_t out_size() const override { return size_; }
  size_t param_count() const override { return 2 * size_; }
  bool accumulates_grads() const override { return accumulate_; }
  void init_params(float* p, Rng& rng) const override {
    for (size_t j = 0; j < size_; ++j) p[j] = rng.uniform(0.5f, 1.5f);
    for (size_t j = 0; j < size_; ++j) p[size_ + j] = rng.uniform(-0.1f, 0.1f);
  }
  void forward(const float* x, float* y, size_t batch) override {
    const float *s = param_view(), *t = s + size_;
    for (size_t r = 0; r < batch; ++r)
      for (size_t j = 0; j < size_; ++j) y[r * size_ + j] = x[r * size_ + j] * s[j] + t[j];
  }
  void backward(const float* x, const float* /*y*/, float* dy, float* dx, size_t batch,
                const GradReady& ready) override {
    const float* s = param_view();
    float *gs = grad_view(), *gt = gs + size_;
    if (!accumulate_) std::fill(gs, gs + 2 * size_, 0.0f);  // this layer overwrites its view
    for (size_t r = 0; r < batch; ++r)
      for (size_t j = 0; j < size_; ++j) {
        gs[j] += dy[r * size_ + j] * x[r * size_ + j];
        gt[j] += dy[r * size_ + j];
      }
    if (forget_offset_) {
      ready(0, 2 * size_);  // the mistake: offsets are the model's, not the view's
    } else {
      report_ready(ready, size_, size_);  // t first (last first), then s
      report_ready(ready, 0, size_);
    }
    if (dx)
      for (size_t r = 0; r < batch; ++r)
        for (size_t j = 0; j < size_; ++j) dx[r * size_ + j] = dy[r * size_ + j] * s[j];
  }

 private:
  size_t size_;
  bool forget_offset_, accumulate_;
};

std::unique_ptr<Model> model_with_scale(bool forget_offset = false, bool accumulate = false) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Dense>(6, 5));  // the scale layer's view starts at 35
  layers.push_back(std::make_unique<Scale>(5, forget_offset, accumulate));
  layers.push_back(std::make_unique<Relu>(5));
  layers.push_back(std::make_unique<Dense>(5, 4));
  auto m = std::make_unique<Model>(6, 4, std::move(layers));
  m->init(21);
  return m;
}

TEST(YourOwnLayer, TrainsThroughItsViewWithTheRightGradients) {
  auto m = model_with_scale();
  check_model_gradient(*m, 5, 2, 64);
}

TEST(YourOwnLayer, AReadyRangeOutsideItsViewIsNamed) {
  // Forgetting the offset handed the first layer's unfinished gradients to the allreduce.
  auto m = model_with_scale(/*forget_offset=*/true);
  std::vector<float> x(3 * 6, 0.25f);
  std::vector<uint8_t> y = {0, 1, 2};
  testing::expect_input_error(
      [&] { m->train_step(x.data(), y.data(), 3, [](size_t, size_t) {}); },
      "layer 1 (scale) reported gradients [0, 10) ready, outside its own [35, 45)");
}

TEST(YourOwnLayer, AnAccumulatingLayerStartsEachStepFromZero) {
  // The gradient buffer holds the last step's values: a layer that adds into it is zeroed first
  // when it says so, so a second step on the same batch gives the same gradient, not twice it.
  auto m = model_with_scale(false, /*accumulate=*/true);
  std::vector<float> x(4 * 6);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) / 7.0f - 0.4f;
  std::vector<uint8_t> y = {0, 1, 2, 3};
  m->train_step(x.data(), y.data(), 4, nullptr);  // an empty GradReady is allowed
  const std::vector<float> once(m->grads(), m->grads() + m->param_count());
  m->train_step(x.data(), y.data(), 4, nullptr);
  const std::vector<float> twice(m->grads(), m->grads() + m->param_count());
  EXPECT_EQ(once, twice);
  EXPECT_NE(once[35], 0.0f);
}

TEST(Model, MisuseIsAClearErrorNotACrash) {
  auto m = model_with_scale();
  std::vector<float> x(4 * 6, 0.1f);
  std::vector<uint8_t> y = {0, 1, 2, 3};
  auto what = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(what([&] {
              m->train_step(x.data(), y.data(), 0, nullptr);
            }).find("a batch needs at least one sample"),
            std::string::npos);
  EXPECT_NE(what([&] {
              m->evaluate(x.data(), y.data(), 4, 0);
            }).find("an evaluation batch needs at least one sample"),
            std::string::npos);
  EXPECT_NE(what([&] {
              m->evaluate_pixels(nullptr, y.data(), 4, 0);
            }).find("an evaluation batch needs at least one sample"),
            std::string::npos);
  // evaluate() between the halves of a step overwrote the activations backward used (and a
  // larger evaluation batch reallocated them): backward then trained on garbage.
  m->forward_train(x.data(), y.data(), 4);
  m->evaluate(x.data(), y.data(), 4);
  EXPECT_NE(what([&] { m->backward(nullptr); }).find("no forward_train() since the last"),
            std::string::npos);
  m->forward_train(x.data(), y.data(), 4);
  m->backward(nullptr);
  EXPECT_NE(what([&] { m->backward(nullptr); }).find("no forward_train() since the last"),
            std::string::npos);
  // Layers without inputs or outputs, and null layers.
  auto build = [](std::unique_ptr<Layer> l, size_t in, size_t out) {
    std::vector<std::unique_ptr<Layer>> layers;
    layers.push_back(std::move(l));
    Model model(in, out, std::move(layers));
  };
  EXPECT_NE(what([&] {
              build(std::make_unique<Dense>(0, 4), 0, 4);
            }).find("a model needs inputs and classes"),
            std::string::npos);
  EXPECT_NE(what([&] {
              build(std::make_unique<Relu>(0), 3, 3);
            }).find("layer 0 (relu) has size 0 -> 0: a layer needs at least one input"),
            std::string::npos);
  EXPECT_NE(what([&] { build(nullptr, 3, 3); }).find("layer 0 is null"), std::string::npos);
}

TEST(Model, HoldsParamsOnceWrittenOrNotZero) {
  auto fresh = [] { return build_mlp(6, {5}, 4); };
  EXPECT_FALSE(fresh()->holds_params());
  auto a = fresh();
  a->init(3);
  EXPECT_TRUE(a->holds_params());
  auto b = fresh();
  b->params()[7] = 0.5f;  // a factory writing weights through params()
  EXPECT_TRUE(b->holds_params());
  auto c = fresh();
  std::vector<float> zeros(c->param_count(), 0.0f);
  c->write_params(zeros.data());  // all zero, but written on purpose
  EXPECT_TRUE(c->holds_params());
}

}  // namespace
}  // namespace dtrain
