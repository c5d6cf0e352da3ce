// HierarchicalAllreduce: CPU ranks on several machines, several ranks on each (Horovod's
// hierarchical allreduce, with the machine's shared memory in place of its local NCCL/MPI step).
//
// Each rank's backward writes its gradients straight into its slot of a window shared by the
// ranks of its machine (as SharedMemoryAllreduce does). At the end of the step, after a fence,
// the gradient is cut into local_size pieces and local rank k
//   1. sums piece k of every local slot, in local-rank order, into piece k of a shared result;
//   2. sum-allreduces that piece with local rank k of every other machine (the cross
//      communicator), so every link between machines carries 1/local_size of the gradient per
//      rank, and each machine sends one gradient's worth instead of the flat ring's
//      2 (n - 1) / n per rank;
// then, after a second fence, every rank applies the optimizer to the shared result (the
// "broadcast inside the node" costs nothing: it is memory they all read). Every rank reads the
// same sum, so parameters stay bitwise equal across ranks. Every machine must hold the same
// number of ranks (available() checks).
#pragma once

#include <memory>
#include <vector>

#include "allreduce/allreduce_start.h"
#include "allreduce/communicator.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

class HierarchicalAllreduce : public GradientSync {
 public:
  // comm must outlive this object.
  HierarchicalAllreduce(Communicator& comm, AllreduceOptions opts);
  ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job, ResumePoint chief,
                    Timeline& timeline) override;
  void finish_step(Model& model, Optimizer& opt) override;
  void sum(double* values, size_t n) override;
  void finish(bool ok) override;

  // Whether every machine of the job holds the same number of ranks (what this strategy needs).
  // A collective: every rank calls it.
  static bool machines_even(Communicator& comm);

 private:
  Communicator& comm_;
  AllreduceOptions opts_;
  Timeline* timeline_ = nullptr;
  std::unique_ptr<Communicator::SharedSlots> shared_;  // local_size gradient slots + the result
  std::vector<const float*> slots_;                    // every local rank's, in local-rank order
  float* result_ = nullptr;
  size_t piece_lo_ = 0, piece_hi_ = 0;  // this rank's piece of the gradient
  Model* model_ = nullptr;
  size_t param_count_ = 0;
  uint64_t step_ = 0;
};

}  // namespace dtrain
