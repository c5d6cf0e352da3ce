// BucketedAllreduce: Horovod's DistributedOptimizer as a GradientSync, over a Communicator (MPI
// for a model in host memory, NCCL for one on a GPU). Every rank holds the whole model; each
// step's gradients are averaged over ranks, then every rank applies the same optimizer step, so
// all ranks hold bitwise-identical parameters.
//
// Overlap: backward reports finished gradient ranges last layer first (ReadyRegion). Whenever
// the part of that region not yet sent reaches the fusion threshold, it is sent as one bucket
// with a non-blocking allreduce; later ready() calls poll the outstanding buckets so the engine
// progresses while backward keeps computing. finish_step sends the rest, waits for every bucket,
// and steps the optimizer.
//
// On a GPU the same code runs with NCCL: ready() is called when backward's kernels for a range
// are queued, and the NCCL communicator orders each bucket after them with an event on its own
// stream; finish_step makes the compute stream wait for the buckets (no host round trip) and
// queues the optimizer kernel. Buckets are averaged by NCCL itself (ncclAvg).
#pragma once

#include <memory>
#include <vector>

#include "allreduce/allreduce_start.h"
#include "allreduce/communicator.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

class BucketedAllreduce : public GradientSync {
 public:
  // comm reduces the gradients. host_comm (null: comm) carries what lives on the host: the
  // start-up check and broadcast, metrics. Both must outlive this object.
  BucketedAllreduce(Communicator& comm, AllreduceOptions opts, Communicator* host_comm = nullptr);
  ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job, ResumePoint chief,
                    Timeline& timeline) override;
  void ready(size_t offset, size_t count) override;
  void finish_step(Model& model, Optimizer& opt) override;
  void sum(double* values, size_t n) override;

  // Buckets sent in the last step, and the largest in bytes (for tests and the timeline).
  size_t last_step_buckets() const { return last_step_buckets_; }
  size_t last_step_largest_bucket_bytes() const { return last_step_largest_bucket_ * 4; }

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
  // Calls f(lo, hi) for [0, end) cut into threshold-sized pieces, top first (backward's order).
  template <typename F>
  void for_each_piece(size_t end, F f) const {
    for (size_t hi = end; hi > 0;) {
      const size_t lo = hi > limit_ ? hi - limit_ : 0;
      f(lo, hi);
      hi = lo;
    }
  }

  Communicator& comm_;
  Communicator* meta_;
  AllreduceOptions opts_;
  Timeline* timeline_ = nullptr;
  bool device_ = false;  // the gradients are in GPU memory (NCCL)
  float* grads_ = nullptr;
  ReadyRegion region_;
  size_t sent_lo_ = 0;  // [sent_lo_, size) has been sent
  std::vector<Bucket> buckets_;
  size_t limit_ = 1;  // the fusion threshold in floats
  size_t last_step_buckets_ = 0;
  size_t last_step_largest_bucket_ = 0;  // floats
  uint64_t step_ = 0;
};

}  // namespace dtrain
