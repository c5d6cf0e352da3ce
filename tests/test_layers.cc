// Finite-difference gradient checks: each layer alone and the whole MLP with its loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "runtime/functors.h"
#include "runtime/model.h"
#include "runtime/rng.h"

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

}  // namespace
}  // namespace dtrain
