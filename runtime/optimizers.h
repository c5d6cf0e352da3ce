// The optimizers, one small type each: its hyperparameters, how many state slots it keeps per
// parameter, and the shared functor (runtime/functors.h) of one step. An Optimizer resolves the
// user's OptimizerOptions into one of these once (make_update_rule); a backend executes the rule
// it is handed through std::visit, so nothing is picked by name per step, and the CPU and CUDA
// executors run the same functor. A new optimizer is a functor in functors.h, a type here, a
// line in make_update_rule (optimizer.cc), and on the CPU its vectorized loop (cpu_backend.cc).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "runtime/functors.h"

namespace dtrain {

// What a user asks for (flags, a checkpoint's description).
struct OptimizerOptions {
  std::string name = "adam";  // sgd, momentum, adam, rmsprop
  float learning_rate = 0.001f;
  float momentum = 0.9f;  // momentum
  float beta1 = 0.9f;     // adam
  float beta2 = 0.999f;   // adam
  float epsilon = 1e-8f;  // adam, rmsprop
  float rho = 0.99f;      // rmsprop's decay (PyTorch's alpha)
};

// Each rule: kSlots state floats per parameter (slot k of element i at s[k * stride + i]), and
// step(), the functor that updates p with the gradient g (a pointer, or a sum of several) scaled
// by gs, as step number t (from 1).
struct Sgd {
  static constexpr size_t kSlots = 0;
  float lr;
  template <typename G>
  fn::SgdUpdateT<G> step(float* p, G g, float* /*s*/, size_t /*stride*/, uint64_t /*t*/,
                         float gs) const {
    return {p, g, lr, gs};
  }
};

struct Momentum {
  static constexpr size_t kSlots = 1;
  float lr, mu;
  template <typename G>
  fn::MomentumUpdateT<G> step(float* p, G g, float* s, size_t /*stride*/, uint64_t /*t*/,
                              float gs) const {
    return {p, g, s, lr, mu, gs};
  }
};

struct Adam {
  static constexpr size_t kSlots = 2;
  float lr, beta1, beta2, eps;
  // The bias corrections of step t, in double once per step: bc1 = 1/(1-b1^t) and
  // inv_sqrt_bc2 = 1/sqrt(1-b2^t), the same on every executor.
  void corrections(uint64_t t, float* bc1, float* inv_sqrt_bc2) const {
    const double td = static_cast<double>(t);
    *bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double(beta1), td)));
    *inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(double(beta2), td)));
  }
  template <typename G>
  fn::AdamUpdateT<G> step(float* p, G g, float* s, size_t stride, uint64_t t, float gs) const {
    float bc1 = 0, isb2 = 0;
    corrections(t, &bc1, &isb2);
    return {p, g, s, s + stride, lr, beta1, beta2, eps, bc1, isb2, gs};
  }
};

struct Rmsprop {
  static constexpr size_t kSlots = 1;
  float lr, rho, eps;
  template <typename G>
  fn::RmspropUpdateT<G> step(float* p, G g, float* s, size_t /*stride*/, uint64_t /*t*/,
                             float gs) const {
    return {p, g, s, lr, rho, eps, gs};
  }
};

using UpdateRule = std::variant<Sgd, Momentum, Adam, Rmsprop>;

// Throws InputError for an unknown name or a learning rate that is not a positive number.
UpdateRule make_update_rule(const OptimizerOptions& o);

inline size_t state_slots(const UpdateRule& r) {
  return std::visit([](const auto& rule) { return rule.kSlots; }, r);
}

}  // namespace dtrain
