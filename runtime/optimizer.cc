#include "runtime/optimizer.h"

#include <cmath>

#include "runtime/error.h"

namespace dtrain {

UpdateRule make_update_rule(const OptimizerOptions& o) {
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate))
    throw InputError(detail::cat("learning rate must be a positive number, got ", o.learning_rate));
  const float lr = o.learning_rate;
  if (o.name == "sgd") return Sgd{lr};
  if (o.name == "momentum") return Momentum{lr, o.momentum};
  if (o.name == "adam") return Adam{lr, o.beta1, o.beta2, o.epsilon};
  if (o.name == "rmsprop") return Rmsprop{lr, o.rho, o.epsilon};
  throw InputError("unknown optimizer '" + o.name + "' (expected sgd, momentum, adam or rmsprop)");
}

Optimizer::Optimizer(const OptimizerOptions& opts, size_t count, Backend* backend)
    : opts_(opts),
      rule_(make_update_rule(opts)),
      count_(count),
      slots_(state_slots(rule_)),
      state_(backend ? *backend : cpu_backend(), slots_ * count) {}

void Optimizer::read_state(float* host) const {
  state_.to_host(host, 0, state_size());
}
void Optimizer::write_state(const float* host) {
  state_.from_host(host, 0, state_size());
}
std::vector<float> Optimizer::state_vector() const {
  return state_.to_vector();
}

void Optimizer::step(float* p, const float* g, float gs) {
  ++t_;
  step_range(p, g, 0, count_, gs, t_);
}

void Optimizer::step_sum(float* p, const float* const* g, size_t ng, float gs) {
  ++t_;
  state_.backend().optimizer_step_sum(rule_, t_, p, g, ng, slots_ ? state() : nullptr, count_,
                                      count_, gs);
}

void Optimizer::step_sum_range(float* p, const float* const* g, size_t ng, size_t offset, size_t n,
                               float gs, uint64_t t) {
  DTRAIN_CHECK_LE(offset + n, count_);
  float* s0 = slots_ ? state() + offset : nullptr;
  state_.backend().optimizer_step_sum(rule_, t, p + offset, g, ng, s0, count_, n, gs);
}

void Optimizer::step_range(float* p, const float* g, size_t offset, size_t n, float gs,
                           uint64_t t) {
  DTRAIN_CHECK_LE(offset + n, count_);
  float* s0 = slots_ ? state() + offset : nullptr;  // first state slot of this piece
  state_.backend().optimizer_step(rule_, t, p + offset, g + offset, s0, count_, n, gs);
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

OptimizerOptions optimizer_options(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": the optimizer is not a JSON object");
  OptimizerOptions o;
  if (!j.contains("name") || !j["name"].is_string())
    throw InputError(where + ": the optimizer has no name");
  o.name = j["name"].get<std::string>();
  const std::pair<const char*, float*> fields[] = {{"learning_rate", &o.learning_rate},
                                                   {"momentum", &o.momentum},
                                                   {"beta1", &o.beta1},
                                                   {"beta2", &o.beta2},
                                                   {"epsilon", &o.epsilon},
                                                   {"rho", &o.rho}};
  for (const auto& [key, value] : fields) {
    if (!j.contains(key)) continue;
    if (!j[key].is_number())
      throw InputError(detail::cat(where, ": optimizer field ", key, " is not a number"));
    *value = j[key].get<float>();
  }
  make_update_rule(o);  // an unknown name or a bad rate says so here
  return o;
}

nlohmann::json Optimizer::spec() const {
  return optimizer_spec(opts_);
}

}  // namespace dtrain
