// SharedMemoryAllreduce: CPU ranks that all share one machine reduce through MPI-3 shared memory
// (the default there).
//
// An allreduce of 1 MB costs each rank a copy out, a copy in and a summing pass, about 0.065 ms
// next to 0.7 ms of compute on the 2-core machines we measure on, with no spare core to hide it.
// Instead each rank's backward writes its gradients straight into its slot of an MPI-3 shared
// window (Model::set_grad_buffer), and the optimizer is sharded as in ZeRO's first stage: the
// parameters are cut into one contiguous piece per rank; after a fence (a barrier with memory
// synchronization) each rank runs the optimizer on its own piece only, reading every rank's slot
// there and adding them in rank order as it goes (Optimizer::step_sum_range), publishes its
// updated piece in a second shared window, and after a second fence copies the other ranks'
// pieces from theirs. No gradient is copied and no reduced buffer is written; each rank does
// 1/n of the optimizer's work (with every rank running the whole update, it was 0.21 ms of a
// 0.68 ms step with 2 ranks, against 0.15 ms alone: the other slot crossed between the cores
// whole). Every element's update is the same arithmetic whichever rank computes it, so
// parameters stay bitwise equal (and equal to the MPI path's for 2 ranks, where a + b is the
// only order). The optimizer state of the other ranks' pieces goes stale between gathers:
// gather_state() (epoch ends, checkpoints: every rank) publishes each piece's state and brings
// every rank's copy up to date. finish() gives the model its own gradient buffer back.
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
  void gather_state(Model& model, Optimizer& opt) override;
  void finish(bool ok) override;

  // True when this strategy can run on comm: every rank on one machine, more than one rank.
  static bool available(const Communicator& comm);

 private:
  Communicator& comm_;
  AllreduceOptions opts_;
  Timeline* timeline_ = nullptr;
  std::unique_ptr<Communicator::SharedSlots> shared_;
  std::vector<const float*> slots_;  // every rank's slot, in rank order
  // Per rank: its updated parameters (floats [0, n)) and optimizer state (slot k at (1 + k) * n),
  // at the offsets of its piece.
  std::unique_ptr<Communicator::SharedSlots> published_;
  std::vector<size_t> piece_;              // rank k's piece is [piece_[k], piece_[k + 1])
  std::vector<const float*> piece_grads_;  // every rank's slot at this rank's piece
  Model* model_ = nullptr;                 // writes its gradients into our slot until finish()
  size_t param_count_ = 0;
  uint64_t step_ = 0;
};

}  // namespace dtrain
