// Each optimizer against steps computed by hand (in double) from its textbook definition.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/error.h"
#include "runtime/optimizer.h"

namespace dtrain {
namespace {

OptimizerOptions opts(const std::string& name, float lr) {
  OptimizerOptions o;
  o.name = name;
  o.learning_rate = lr;
  return o;
}

TEST(Optimizer, Sgd) {
  Optimizer opt(opts("sgd", 0.1f), 2);
  float p[2] = {1.0f, -2.0f};
  const float g[2] = {0.5f, -1.0f};
  opt.step(p, g);
  EXPECT_FLOAT_EQ(p[0], 0.95f);
  EXPECT_FLOAT_EQ(p[1], -1.9f);
}

TEST(Optimizer, Momentum) {
  Optimizer opt(opts("momentum", 0.1f), 1);
  float p[1] = {1.0f};
  const float g1[1] = {1.0f}, g2[1] = {2.0f};
  opt.step(p, g1);  // v = 1, p = 1 - 0.1
  EXPECT_FLOAT_EQ(p[0], 0.9f);
  opt.step(p, g2);  // v = 0.9 + 2 = 2.9, p = 0.9 - 0.29
  EXPECT_NEAR(p[0], 0.61f, 1e-6);
}

TEST(Optimizer, AdamTwoSteps) {
  Optimizer opt(opts("adam", 0.01f), 1);
  float p[1] = {0.5f};
  const double gs[2] = {0.3, -0.2};
  double m = 0, v = 0, pd = 0.5;
  for (int t = 1; t <= 2; ++t) {
    const float g[1] = {float(gs[t - 1])};
    opt.step(p, g);
    m = 0.9 * m + 0.1 * gs[t - 1];
    v = 0.999 * v + 0.001 * gs[t - 1] * gs[t - 1];
    const double mhat = m / (1 - std::pow(0.9, t)), vhat = v / (1 - std::pow(0.999, t));
    pd -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    EXPECT_NEAR(p[0], pd, 1e-6) << "step " << t;
  }
  EXPECT_EQ(opt.steps(), 2u);
  EXPECT_EQ(opt.slots(), 2u);
}

TEST(Optimizer, Rmsprop) {
  Optimizer opt(opts("rmsprop", 0.01f), 1);
  float p[1] = {1.0f};
  const float g[1] = {2.0f};
  opt.step(p, g);
  const double v = 0.01 * 4.0;
  EXPECT_NEAR(p[0], 1.0 - 0.01 * 2.0 / (std::sqrt(v) + 1e-8), 1e-6);
}

TEST(Optimizer, LongVectorUsesSameMathEverywhere) {
  // The SIMD clones must round exactly like the scalar formula: compare element by element.
  const size_t n = 1037;
  Optimizer opt(opts("adam", 0.001f), n);
  std::vector<float> p(n), g(n);
  for (size_t i = 0; i < n; ++i) {
    p[i] = float(i) * 0.01f;
    g[i] = std::sin(float(i));
  }
  std::vector<float> p0 = p;
  opt.step(p.data(), g.data());
  // Bias corrections are computed in double from the float hyperparameters.
  const float bc1 = float(1.0 / (1.0 - double(0.9f)));
  const float isb2 = float(1.0 / std::sqrt(1.0 - double(0.999f)));
  for (size_t i = 0; i < n; ++i) {
    const float mi = 0.9f * 0.0f + (1.0f - 0.9f) * g[i];
    const float vi = 0.999f * 0.0f + (1.0f - 0.999f) * g[i] * g[i];
    const float want = p0[i] - (0.001f * bc1) * mi / (std::sqrt(vi) * isb2 + 1e-8f);
    ASSERT_EQ(p[i], want) << "element " << i;
  }
}

TEST(Optimizer, RejectsBadOptions) {
  EXPECT_THROW(Optimizer(opts("adagrad", 0.1f), 1), InputError);
  EXPECT_THROW(Optimizer(opts("sgd", 0.0f), 1), InputError);
  EXPECT_THROW(Optimizer(opts("sgd", -1.0f), 1), InputError);
}

}  // namespace
}  // namespace dtrain

namespace dtrain {
namespace {

TEST(Optimizer, StepInPiecesEqualsOneStep) {
  for (const char* name : {"sgd", "momentum", "adam", "rmsprop"}) {
    OptimizerOptions o;
    o.name = name;
    const size_t n = 1000;
    Optimizer whole(o, n), pieces(o, n);
    std::vector<float> p1(n), p2, g(n);
    for (size_t i = 0; i < n; ++i) {
      p1[i] = std::cos(float(i));
      g[i] = std::sin(float(i) * 0.3f);
    }
    p2 = p1;
    for (int t = 1; t <= 3; ++t) {
      whole.step(p1.data(), g.data(), 0.5f);
      for (size_t off = 0; off < n; off += 300)
        pieces.step_range(p2.data(), g.data(), off, std::min<size_t>(300, n - off), 0.5f,
                          uint64_t(t));
    }
    EXPECT_EQ(p1, p2) << name;
    EXPECT_EQ(whole.state_vector(), pieces.state_vector()) << name;
  }
}

}  // namespace
}  // namespace dtrain
