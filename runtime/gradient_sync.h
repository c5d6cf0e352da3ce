// How gradients computed by one process become a parameter update: the one seam between the
// training loop and the distributed modes. LocalSync (here), the allreduce strategies
// (allreduce/) and the parameter-server client (paramserver/) implement it; the loop in
// trainer.cc is written once, and dtrain/job.cc picks the strategy in one place.
//
// Narrow on purpose: who this process is (fixed at construction), start, the two calls of every
// step (ready, finish_step), a metrics sum, and the end. A strategy that has nothing to do in one
// of them inherits the empty default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace dtrain {

class Model;
class Optimizer;
class Timeline;

// Where training continues: epochs done and global steps done.
struct ResumePoint {
  uint64_t epoch = 0;          // epochs completed
  uint64_t step = 0;           // optimizer steps completed
  uint64_t step_in_epoch = 0;  // steps of epoch `epoch` already done (a mid-epoch checkpoint)
};

// This process's place in the job.
struct Membership {
  std::string strategy;  // "local", "allreduce", "ps": the summary's and checkpoint's mode
  size_t rank = 0;
  size_t world = 1;
};

class GradientSync {
 public:
  explicit GradientSync(Membership m) : me_(std::move(m)) {}
  virtual ~GradientSync() = default;
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  const std::string& name() const { return me_.strategy; }
  size_t rank() const { return me_.rank; }
  size_t world() const { return me_.world; }
  bool is_chief() const { return me_.rank == 0; }

  // Before the first step: every process must hold the same parameters and optimizer state, and
  // agree on `job` (model shape, batch size, optimizer...). Throws naming what disagrees.
  // `chief` is where the chief resumes; every process returns the point it resumes from (the
  // chief's). The timeline (never null; maybe disabled) stays valid until finish().
  virtual ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job,
                            ResumePoint chief, Timeline& timeline) = 0;
  // Backward finished the gradients in [offset, offset + count).
  virtual void ready(size_t /*offset*/, size_t /*count*/) {}
  // All gradients of this step are final: combine them and update the parameters.
  virtual void finish_step(Model& model, Optimizer& opt) = 0;
  // Sums n values over all workers in place (metrics).
  virtual void sum(double* /*values*/, size_t /*n*/) {}
  // Brings model and optimizer state up to date in this process before a checkpoint or the end.
  virtual void gather_state(Model& /*model*/, Optimizer& /*opt*/) {}
  // Training is over (a parameter server is told to stop, a model gets its own buffers back).
  virtual void finish(bool /*ok*/) {}

 private:
  Membership me_;
};

// One process: the optimizer steps on this process's gradient.
class LocalSync : public GradientSync {
 public:
  LocalSync() : GradientSync({"local", 0, 1}) {}
  ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job, ResumePoint chief,
                    Timeline& timeline) override;
  void finish_step(Model& model, Optimizer& opt) override;

 private:
  Timeline* timeline_ = nullptr;
};

// Backward reports finished gradient ranges last layer first, and those ranges grow downward
// through the flat buffer as one contiguous region [lo(), size). Strategies that send gradients
// while backward runs (buckets, ps pieces) rely on that; this is the one place the rule lives.
// A range out of that order switches the tracker off for the step (everything then goes at the
// end of the step).
class ReadyRegion {
 public:
  void reset(size_t size) {
    size_ = lo_ = size;
    in_order_ = true;
  }
  // Takes [offset, offset + count); false (and off for the step) when it is out of order.
  bool extend(size_t offset, size_t count) {
    if (!in_order_ || offset + count != lo_) return in_order_ = false;
    lo_ = offset;
    return true;
  }
  // [lo(), size) is final this step.
  size_t lo() const { return lo_; }
  size_t size() const { return size_; }
  bool in_order() const { return in_order_; }

 private:
  size_t size_ = 0, lo_ = 0;
  bool in_order_ = true;
};

}  // namespace dtrain
