#include "allreduce/bucketed_allreduce.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

BucketedAllreduce::BucketedAllreduce(Communicator& comm, AllreduceOptions opts,
                                     Communicator* host_comm)
    : GradientSync({"allreduce", comm.rank(), comm.size()}),
      comm_(comm),
      meta_(host_comm ? host_comm : &comm),
      opts_(opts) {}

ResumePoint BucketedAllreduce::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                                     ResumePoint chief, Timeline& timeline) {
  timeline_ = &timeline;
  device_ = !model.on_host();
  if (device_ && comm_.backend() != "nccl")
    throw InputError(detail::cat("the model is on ", model.backend().name(),
                                 " but gradients would be reduced over ", comm_.backend(),
                                 ": GPU models need the NCCL communicator"));
  if (comm_.backend() == "nccl" && meta_ == &comm_)
    throw Error(
        "BucketedAllreduce over NCCL needs a host communicator (MPI) for its start-up and metrics, "
        "which live in host memory: pass one");
  if (!device_ && comm_.backend() == "nccl")
    throw InputError(detail::cat("the model is in host memory (", model.backend().name(),
                                 ") but gradients would be reduced over NCCL, which needs GPU "
                                 "memory: use the MPI communicator"));
  // The ranks cut the same buckets: a fusion threshold set on one rank only made them exchange
  // buffers of other sizes (MPI_ERR_TRUNCATE, naming no setting).
  nlohmann::json with_buckets = job;
  with_buckets["fusion_threshold_bytes"] = opts_.fusion_threshold_bytes;
  const ResumePoint r = start_from_rank0(*meta_, model, opt, with_buckets, "bucketed", chief);
  grads_ = model.grads();
  region_.reset(model.param_count());
  sent_lo_ = region_.size();
  // Layers report their gradients in pieces no bigger than a bucket, so a bucket can leave while
  // the rest of a big layer is still being computed.
  limit_ = std::max<size_t>(1, opts_.fusion_threshold_bytes / sizeof(float));
  model.set_grad_chunk(limit_);
  log_debug("allreduce over ", comm_.backend(), ": ", comm_.size(), " ranks, ", model.param_count(),
            " parameters, buckets of ", opts_.fusion_threshold_bytes, " bytes");
  return r;
}

void BucketedAllreduce::launch(size_t lo, size_t hi) {
  if (hi <= lo) return;
  Bucket b;
  b.offset = lo;
  b.count = hi - lo;
  b.start_us = timeline_->now_us();
  // The name is formatted only if the operation fails (the hot path builds no strings).
  b.handle = comm_.iallreduce(grads_ + lo, hi - lo, device_ ? ReduceOp::kAverage : ReduceOp::kSum,
                              OpName{"allreduce bucket", buckets_.size(), step_});
  buckets_.push_back(std::move(b));
}

void BucketedAllreduce::note_done(Bucket& b) {
  if (b.logged) return;
  b.logged = true;
  // Buckets are in flight together: each on a row of its own (1 + its place in the step), as
  // spans of one row must nest.
  if (timeline_->enabled())
    timeline_->span("allreduce", 1 + static_cast<int>(&b - buckets_.data()), b.start_us,
                    timeline_->now_us(),
                    {{"bytes", b.count * sizeof(float)}, {"offset", b.offset}, {"step", step_}});
}

void BucketedAllreduce::poll() {
  for (auto& b : buckets_)
    if (b.handle->test()) note_done(b);
}

void BucketedAllreduce::ready(size_t offset, size_t count) {
  const size_t before = region_.lo();
  // Out of order: no new buckets this step; what is left goes at the end of the step.
  if (!region_.extend(offset, count)) return;
  // Horovod's meaning of the threshold: a bucket never grows past it, unless one range alone is
  // larger (layers report pieces no larger than it, so only a single row of a wide layer can be).
  // What was pending leaves first when this range would push it over.
  if (sent_lo_ - region_.lo() > limit_ && sent_lo_ > before) {
    launch(before, sent_lo_);
    sent_lo_ = before;
  }
  if (sent_lo_ - region_.lo() >= limit_) {
    launch(region_.lo(), sent_lo_);
    sent_lo_ = region_.lo();
  }
  poll();
}

void BucketedAllreduce::finish_step(Model& model, Optimizer& opt) {
  // What the buckets sent is final and reduced, and [0, sent_lo_) is reduced below.
  if (device_) {
    // Everything left goes out as more buckets (one, unless ranges came out of order); the
    // compute stream then waits for all of them on the device, and the optimizer kernel is queued
    // behind them.
    for_each_piece(sent_lo_, [&](size_t lo, size_t hi) { launch(lo, hi); });
    sent_lo_ = 0;
    for (auto& b : buckets_) b.handle->wait_on_device();
  }
  for (auto& b : buckets_) {
    if (!device_) b.handle->wait();
    note_done(b);
  }
  // The rest, [0, sent_lo_), is reduced on this thread: nothing is left to overlap it with, and a
  // hand-off to the background thread would only add its wake-up latency. It is below the
  // threshold unless ranges came out of order; then it goes in threshold-sized buckets.
  size_t largest = 0;
  for (const auto& b : buckets_) largest = std::max(largest, b.count);
  size_t tail = 0;
  for_each_piece(sent_lo_, [&](size_t lo, size_t hi) {
    const int64_t t0 = timeline_->now_us();
    comm_.allreduce(grads_ + lo, hi - lo, ReduceOp::kSum,
                    OpName{"allreduce bucket", buckets_.size() + tail++, step_});
    if (timeline_->enabled())
      timeline_->span("allreduce", 1 + static_cast<int>(buckets_.size() + tail - 1), t0,
                      timeline_->now_us(),
                      {{"bytes", (hi - lo) * sizeof(float)}, {"offset", lo}, {"step", step_}});
    largest = std::max(largest, hi - lo);
  });
  last_step_buckets_ = buckets_.size() + tail;
  last_step_largest_bucket_ = largest;
  buckets_.clear();
  region_.reset(region_.size());
  sent_lo_ = region_.size();
  ++step_;
  const int64_t t0 = timeline_->now_us();
  // On the host the buckets hold sums and the optimizer averages them in its own pass over the
  // buffer; NCCL has averaged already.
  opt.step(model.params(), model.grads(), device_ ? 1.0f : 1.0f / static_cast<float>(comm_.size()));
  if (timeline_->enabled())
    timeline_->span("optimizer", 0, t0, timeline_->now_us(), {{"step", step_ - 1}});
}

void BucketedAllreduce::sum(double* values, size_t n) {
  meta_->allreduce(values, n, OpName{"metrics sum"});
}

}  // namespace dtrain
