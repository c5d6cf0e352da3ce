#include "runtime/optimizer.h"

#include <cmath>

#include "runtime/backend.h"
#include "runtime/error.h"

namespace dtrain {

namespace {
size_t slots_for(const std::string& name) {
  if (name == "sgd") return 0;
  if (name == "momentum" || name == "rmsprop") return 1;
  if (name == "adam") return 2;
  throw InputError("unknown optimizer '" + name + "' (expected sgd, momentum, adam or rmsprop)");
}
}  // namespace

// Behind a pointer because backend.h includes this header.
struct Optimizer::State {
  explicit State(Backend& be) : data(be) {}
  BackendArray<float> data;
};

void adam_corrections(const OptimizerOptions& o, uint64_t t, float* bc1, float* inv_sqrt_bc2) {
  const double td = static_cast<double>(t);
  *bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double(o.beta1), td)));
  *inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(double(o.beta2), td)));
}

Optimizer::Optimizer(const OptimizerOptions& opts, size_t count, Backend* backend)
    : opts_(opts), count_(count), slots_(slots_for(opts.name)) {
  if (!(opts.learning_rate > 0) || !std::isfinite(opts.learning_rate))
    throw InputError(
        detail::cat("learning rate must be a positive number, got ", opts.learning_rate));
  state_ = std::make_unique<State>(backend ? *backend : cpu_backend());
  state_->data.assign_zero(slots_ * count);
}

Optimizer::~Optimizer() = default;

float* Optimizer::state() {
  return state_->data.data();
}
const float* Optimizer::state() const {
  return state_->data.data();
}
void Optimizer::read_state(float* host) const {
  state_->data.to_host(host, 0, state_size());
}
void Optimizer::write_state(const float* host) {
  state_->data.from_host(host, 0, state_size());
}
std::vector<float> Optimizer::state_vector() const {
  return state_->data.to_vector();
}

void Optimizer::step(float* p, const float* g, float gs) {
  ++t_;
  step_range(p, g, 0, count_, gs, t_);
}

void Optimizer::step_sum(float* p, const float* const* g, size_t ng, float gs) {
  ++t_;
  state_->data.backend().optimizer_step_sum(opts_, t_, p, g, ng, slots_ ? state() : nullptr, count_,
                                            count_, gs);
}

void Optimizer::step_sum_range(float* p, const float* const* g, size_t ng, size_t offset, size_t n,
                               float gs, uint64_t t) {
  DTRAIN_CHECK_LE(offset + n, count_);
  float* s0 = slots_ ? state() + offset : nullptr;
  state_->data.backend().optimizer_step_sum(opts_, t, p + offset, g, ng, s0, count_, n, gs);
}

void Optimizer::step_range(float* p, const float* g, size_t offset, size_t n, float gs,
                           uint64_t t) {
  DTRAIN_CHECK_LE(offset + n, count_);
  float* s0 = slots_ ? state() + offset : nullptr;  // first state slot of this piece
  state_->data.backend().optimizer_step(opts_, t, p + offset, g + offset, s0, count_, n, gs);
}

nlohmann::json optimizer_spec(const OptimizerOptions& o) {
  return {{"name", o.name},
          {"learning_rate", o.learning_rate},
          {"momentum", o.momentum},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"epsilon", o.epsilon},
          {"rho", o.rho}};
}

nlohmann::json Optimizer::spec() const {
  return optimizer_spec(opts_);
}

}  // namespace dtrain
