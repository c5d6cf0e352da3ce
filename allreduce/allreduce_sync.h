// AllreduceSync: Horovod's DistributedOptimizer as a GradientSync. Every rank holds the whole
// model; each step's gradients are averaged over ranks, then every rank applies the same
// optimizer step, so all ranks hold bitwise-identical parameters.
//
// Overlap: backward reports finished gradient ranges last layer first, and those ranges grow
// downward through the flat buffer as one contiguous region. Whenever the part of that region not
// yet sent reaches the fusion threshold, it is sent as one bucket with a non-blocking allreduce;
// later ready() calls poll the outstanding buckets so the engine progresses while backward keeps
// computing. finish_step sends the rest, waits for every bucket, and steps the optimizer.
//
// On a GPU the same code runs with NCCL: ready() is called when backward's kernels for a range
// are queued, and the NCCL communicator orders each bucket after them with an event on its own
// stream; finish_step makes the compute stream wait for the buckets (no host round trip) and
// queues the optimizer kernel. Buckets are averaged by NCCL itself (ncclAvg).
//
// Shared memory (CPU ranks on one machine, the default there): an allreduce of 1 MB costs each
// rank a copy out, a copy in and a summing pass, about 0.065 ms next to 0.7 ms of compute on the
// 2-core machines we measure on, with no spare core to hide it. Instead each rank's backward
// writes its gradients straight into its slot of an MPI-3 shared window (Model::set_grad_buffer);
// at the end of the step one fence (a barrier with memory synchronization) and the optimizer's
// pass reads every rank's slot, adding them in rank order as it goes (Optimizer::step_sum), and
// a second fence keeps any rank from writing its next gradients while another still reads. No
// gradient is copied and no reduced buffer is written; every rank computes the identical sum, so
// parameters stay bitwise equal (and equal to the MPI path's for 2 ranks, where a + b is the only
// order). finish() gives the model its own gradient buffer back.
#pragma once

#include <memory>
#include <vector>

#include "allreduce/communicator.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

struct AllreduceOptions {
  // Horovod's default. On CPU ranks with no spare core, one fused allreduce per step measured
  // fastest (129k vs 121k samples/s at 0.25 MB buckets, 2 ranks on 2 cores); smaller buckets pay
  // off where a core or a GPU stream is free to overlap them with backward.
  size_t fusion_threshold_bytes = 64 * 1024 * 1024;
  // When every rank is on one machine and the model is in host memory: reduce through MPI-3
  // shared memory, summing the ranks' gradients inside the optimizer's pass (see above).
  bool shared_memory = true;
};

class AllreduceSync : public GradientSync {
 public:
  // comm reduces the gradients: MPI for a model in host memory, NCCL for one on a GPU. host_comm
  // (null: comm) carries what lives on the host: the start-up check and broadcast, metrics.
  AllreduceSync(Communicator& comm, AllreduceOptions opts, Communicator* host_comm = nullptr);
  std::string name() const override { return "allreduce"; }
  size_t rank() const override { return comm_.rank(); }
  size_t world() const override { return comm_.size(); }
  void start(Model& model, Optimizer& opt, const nlohmann::json& job, uint64_t* resume) override;
  void ready(size_t offset, size_t count) override;
  void finish_step(Model& model, Optimizer& opt) override;
  void sum(double* values, size_t n) override;
  // Training is over: a model that wrote into the shared slot gets its own buffer back.
  void finish(bool ok) override;

  // True when gradients are reduced through shared memory (after start()).
  bool shared_memory() const { return shared_ != nullptr; }
  // Buckets sent in the last step (for tests and the timeline).
  size_t last_step_buckets() const { return last_step_buckets_; }

 private:
  struct Bucket {
    size_t offset, count;
    int64_t start_us;
    std::unique_ptr<Communicator::Handle> handle;
    bool logged = false;
  };
  void launch(size_t lo, size_t hi);
  void poll();
  void note_done(Bucket& b);
  void finish_shared_step(Model& model, Optimizer& opt);

  Communicator& comm_;
  Communicator* meta_;
  AllreduceOptions opts_;
  bool device_ = false;  // the gradients are in GPU memory (NCCL)
  float* grads_ = nullptr;
  size_t param_count_ = 0;
  size_t ready_lo_ = 0;  // [ready_lo_, param_count_) is final this step
  size_t sent_lo_ = 0;   // [sent_lo_, param_count_) has been sent
  bool contiguous_ = true;
  std::vector<Bucket> buckets_;
  size_t last_step_buckets_ = 0;
  std::unique_ptr<Communicator::SharedSlots> shared_;
  std::vector<const float*> shared_slots_;  // every rank's slot, in rank order
  Model* shared_model_ = nullptr;           // writes its gradients into our slot until finish()
  uint64_t step_ = 0;
};

// Checks that every rank's job description agrees with rank 0's; throws a ConsistencyError on
// every rank naming the first rank and field that differ.
void check_job_consistency(Communicator& comm, const nlohmann::json& job);

}  // namespace dtrain
