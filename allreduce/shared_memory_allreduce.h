// SharedMemoryAllreduce: CPU ranks that all share one machine reduce through MPI-3 shared memory
// (the default there).
//
// An allreduce of 1 MB costs each rank a copy out, a copy in and a summing pass, about 0.065 ms
// next to 0.7 ms of compute on the 2-core machines we measure on, with no spare core to hide it.
// Instead each rank's backward writes its gradients straight into its slot of an MPI-3 shared
// window (Model::set_grad_buffer); at the end of the step one fence (a barrier with memory
// synchronization) and the optimizer's pass reads every rank's slot, adding them in rank order as
// it goes (Optimizer::step_sum), and a second fence keeps any rank from writing its next
// gradients while another still reads. No gradient is copied and no reduced buffer is written;
// every rank computes the identical sum, so parameters stay bitwise equal (and equal to the MPI
// path's for 2 ranks, where a + b is the only order). finish() gives the model its own gradient
// buffer back.
#pragma once

#include <memory>
#include <vector>

#include "allreduce/allreduce_start.h"
#include "allreduce/communicator.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

class SharedMemoryAllreduce : public GradientSync {
 public:
  // comm must outlive this object, and its ranks must all be on this machine
  // (Communicator::node_shared); start() throws otherwise.
  // opts: backward reports its gradients in pieces of the fusion threshold, as for the bucketed
  // strategy, so the two compute their gradients alike (GEMMs split into blocks round
  // differently) and agree bit for bit with 2 ranks.
  SharedMemoryAllreduce(Communicator& comm, AllreduceOptions opts);
  ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job, ResumePoint chief,
                    Timeline& timeline) override;
  void finish_step(Model& model, Optimizer& opt) override;
  void sum(double* values, size_t n) override;
  void finish(bool ok) override;

  // True when this strategy can run on comm: every rank on one machine, more than one rank.
  static bool available(const Communicator& comm);

 private:
  Communicator& comm_;
  AllreduceOptions opts_;
  Timeline* timeline_ = nullptr;
  std::unique_ptr<Communicator::SharedSlots> shared_;
  std::vector<const float*> slots_;  // every rank's slot, in rank order
  Model* model_ = nullptr;           // writes its gradients into our slot until finish()
  size_t param_count_ = 0;
  uint64_t step_ = 0;
};

}  // namespace dtrain
