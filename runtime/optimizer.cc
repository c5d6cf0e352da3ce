#include "runtime/optimizer.h"

#include <cmath>

#include "runtime/cpu_ops.h"
#include "runtime/error.h"
#include "runtime/functors.h"

namespace dtrain {

namespace {
DTRAIN_SIMD_CLONES void sgd_loop(const fn::SgdUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void momentum_loop(const fn::MomentumUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void adam_loop(const fn::AdamUpdate& f, size_t n) {
  cpu::for_each(n, f);
}
DTRAIN_SIMD_CLONES void rmsprop_loop(const fn::RmspropUpdate& f, size_t n) {
  cpu::for_each(n, f);
}

size_t slots_for(const std::string& name) {
  if (name == "sgd") return 0;
  if (name == "momentum" || name == "rmsprop") return 1;
  if (name == "adam") return 2;
  throw InputError("unknown optimizer '" + name + "' (expected sgd, momentum, adam or rmsprop)");
}
}  // namespace

void adam_corrections(const OptimizerOptions& o, uint64_t t, float* bc1, float* inv_sqrt_bc2) {
  const double td = static_cast<double>(t);
  *bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double(o.beta1), td)));
  *inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(double(o.beta2), td)));
}

Optimizer::Optimizer(const OptimizerOptions& opts, size_t count) : opts_(opts), count_(count) {
  if (!(opts.learning_rate > 0) || !std::isfinite(opts.learning_rate))
    throw InputError(
        detail::cat("learning rate must be a positive number, got ", opts.learning_rate));
  state_.assign(slots_for(opts.name) * count, 0.0f);
}

void Optimizer::step(float* p, const float* g, float gs) {
  ++t_;
  step_range(p, g, 0, count_, gs, t_);
}

void Optimizer::step_range(float* p, const float* g, size_t offset, size_t n, float gs,
                           uint64_t t) {
  DTRAIN_CHECK_LE(offset + n, count_);
  const auto& o = opts_;
  p += offset;
  g += offset;
  float* s0 = state_.data() + offset;  // first state slot of this piece
  if (o.name == "sgd") {
    sgd_loop(fn::SgdUpdate{p, g, o.learning_rate, gs}, n);
  } else if (o.name == "momentum") {
    momentum_loop(fn::MomentumUpdate{p, g, s0, o.learning_rate, o.momentum, gs}, n);
  } else if (o.name == "adam") {
    float bc1 = 0, isb2 = 0;
    adam_corrections(o, t, &bc1, &isb2);
    adam_loop(fn::AdamUpdate{p, g, s0, s0 + count_, o.learning_rate, o.beta1, o.beta2, o.epsilon,
                             bc1, isb2, gs},
              n);
  } else {
    rmsprop_loop(fn::RmspropUpdate{p, g, s0, o.learning_rate, o.rho, o.epsilon, gs}, n);
  }
}

nlohmann::json Optimizer::spec() const {
  return {{"name", opts_.name},
          {"learning_rate", opts_.learning_rate},
          {"momentum", opts_.momentum},
          {"beta1", opts_.beta1},
          {"beta2", opts_.beta2},
          {"epsilon", opts_.epsilon},
          {"rho", opts_.rho}};
}

}  // namespace dtrain
