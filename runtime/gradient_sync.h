// How gradients computed by one process become a parameter update: the one seam between the
// training loop and the distributed modes. LocalSync (here), AllreduceSync (allreduce/) and
// ParameterServerSync (paramserver/) implement it; the loop in trainer.cc is written once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace dtrain {

class Model;
class Optimizer;
class Timeline;

class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual std::string name() const = 0;
  virtual size_t rank() const { return 0; }
  virtual size_t world() const { return 1; }
  virtual bool is_chief() const { return rank() == 0; }
  // Before the first step: every process must hold the same parameters and optimizer state, and
  // agree on `job` (model shape, batch size, optimizer...). Throws naming what disagrees.
  // resume holds {epochs done, steps done}: the chief's values go in, every process's come out.
  virtual void start(Model& /*model*/, Optimizer& /*opt*/, const nlohmann::json& /*job*/,
                     uint64_t* /*resume*/) {}
  // Backward finished the gradients in [offset, offset + count).
  virtual void ready(size_t /*offset*/, size_t /*count*/) {}
  // All gradients of this step are final: combine them and update the parameters.
  virtual void finish_step(Model& model, Optimizer& opt) = 0;
  // Sums n values over all workers in place (metrics).
  virtual void sum(double* /*values*/, size_t /*n*/) {}
  // Brings model and optimizer state up to date in this process before a checkpoint or the end.
  virtual void gather_state(Model& /*model*/, Optimizer& /*opt*/) {}
  // Training is over (a parameter server is told to stop, a communicator drains).
  virtual void finish(bool /*ok*/) {}
  // A failure only this process knows about: end every process of the job now (MPI_Abort), so
  // none waits forever for this one. Called by main()s, never by the library itself.
  virtual void abort_job(int /*code*/) {}
  virtual void set_timeline(Timeline* t) { timeline_ = t; }

 protected:
  Timeline* timeline_ = nullptr;
};

class LocalSync : public GradientSync {
 public:
  std::string name() const override { return "local"; }
  void finish_step(Model& model, Optimizer& opt) override;
};

}  // namespace dtrain
