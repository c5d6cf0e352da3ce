// Optimizers over a range of the flat parameter buffer. A range rather than the whole buffer so
// that a parameter server can run the same code on the shard it owns. State (momentum, Adam's
// moments) lives in flat buffers of the same length as the range, in the memory of the backend
// that runs the update (runtime/backend.h), so it checkpoints and broadcasts like the parameters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/optimizers.h"

namespace dtrain {

// The options as JSON (checkpoints, model.json, the job's agreement).
nlohmann::json optimizer_spec(const OptimizerOptions& o);
// The inverse: options from such a description (a worker's hello to a ps task that learns the
// model from it). A missing or mistyped field is an InputError naming it and `where`.
OptimizerOptions optimizer_options(const nlohmann::json& spec, const std::string& where);

class Optimizer {
 public:
  // Resolves the options into their UpdateRule once: an unknown name or a non-positive rate is
  // an InputError. The state lives in `backend`'s memory (null: the CPU backend), where step()
  // runs.
  Optimizer(const OptimizerOptions& opts, size_t count, Backend* backend = nullptr);
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // p -= update(g * grad_scale) over `count` elements; p and g point at the start of this
  // optimizer's range, in the backend's memory. grad_scale folds gradient averaging into the
  // update's single pass.
  void step(float* p, const float* g, float grad_scale = 1.0f);
  // One step with the gradient the sum of ng buffers, added in order inside the update's pass.
  void step_sum(float* p, const float* const* g, size_t ng, float grad_scale);
  // The same update on elements [offset, offset + n) only, as step number t, without counting a
  // step: a parameter server applies one step to its shard piece by piece as pieces arrive.
  void step_range(float* p, const float* g, size_t offset, size_t n, float grad_scale, uint64_t t);
  // step_range with the gradient the sum of ng buffers (each pointing at this piece, not at the
  // start of the range), added in order inside the update's pass.
  void step_sum_range(float* p, const float* const* g, size_t ng, size_t offset, size_t n,
                      float grad_scale, uint64_t t);

  const OptimizerOptions& options() const { return opts_; }
  const UpdateRule& rule() const { return rule_; }
  size_t count() const { return count_; }
  uint64_t steps() const { return t_; }
  void set_steps(uint64_t t) { t_ = t; }
  // Number of state slots per parameter (0 for SGD, 1 momentum/rmsprop, 2 adam).
  size_t slots() const { return slots_; }
  // slots() * count() floats in the backend's memory: slot k of element i at k * count() + i.
  size_t state_size() const { return slots_ * count_; }
  float* state() { return state_.data(); }
  const float* state() const { return state_.data(); }
  // Whole-state copies to and from host memory (checkpoints, broadcasts), on any backend.
  void read_state(float* host) const;
  void write_state(const float* host);
  std::vector<float> state_vector() const;
  nlohmann::json spec() const;

 private:
  OptimizerOptions opts_;
  UpdateRule rule_;
  size_t count_;
  size_t slots_;
  uint64_t t_ = 0;
  BackendArray<float> state_;
};

}  // namespace dtrain
