#include "allreduce/allreduce_sync.h"

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

void check_job_consistency(Communicator& comm, const nlohmann::json& job) {
  const std::vector<std::string> all = comm.allgather(job.dump(), "start-up consistency check");
  const nlohmann::json ref = nlohmann::json::parse(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    for (auto it = ref.begin(); it != ref.end(); ++it) {
      const nlohmann::json theirs = other.contains(it.key()) ? other[it.key()] : nlohmann::json();
      if (theirs != it.value())
        throw ConsistencyError(detail::cat("rank ", r, " disagrees with rank 0 on ", it.key(),
                                           ": rank 0 has ", it.value().dump(), ", rank ", r,
                                           " has ", theirs.dump()));
    }
    for (auto it = other.begin(); it != other.end(); ++it)
      if (!ref.contains(it.key()))
        throw ConsistencyError(
            detail::cat("rank ", r, " has ", it.key(), " that rank 0 does not have"));
  }
}

AllreduceSync::AllreduceSync(Communicator& comm, AllreduceOptions opts)
    : comm_(comm), opts_(opts) {}

void AllreduceSync::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                          uint64_t* resume) {
  check_job_consistency(comm_, job);
  if (resume) comm_.broadcast(resume, 2 * sizeof(uint64_t), 0, "broadcast resume point");
  // Rank 0's parameters and optimizer state (after --resume too) become everybody's.
  comm_.broadcast(model.params(), model.param_count() * sizeof(float), 0, "broadcast parameters");
  comm_.broadcast(opt.state().data(), opt.state().size() * sizeof(float), 0,
                  "broadcast optimizer state");
  uint64_t t = opt.steps();
  comm_.broadcast(&t, sizeof(t), 0, "broadcast optimizer step");
  opt.set_steps(t);
  grads_ = model.grads();
  param_count_ = model.param_count();
  ready_lo_ = sent_lo_ = param_count_;
  // Layers report their gradients in pieces no bigger than a bucket, so a bucket can leave while
  // the rest of a big layer is still being computed.
  const size_t bucket_floats = std::max<size_t>(1, opts_.fusion_threshold_bytes / sizeof(float));
  model.set_grad_chunk(bucket_floats);
  log_debug("allreduce over ", comm_.backend(), ": ", comm_.size(), " ranks, ", param_count_,
            " parameters, buckets of ", opts_.fusion_threshold_bytes, " bytes");
}

void AllreduceSync::launch(size_t lo, size_t hi) {
  if (hi <= lo) return;
  Bucket b;
  b.offset = lo;
  b.count = hi - lo;
  b.start_us = timeline_ ? timeline_->now_us() : 0;
  b.handle =
      comm_.iallreduce(grads_ + lo, hi - lo, ReduceOp::kSum,
                       detail::cat("allreduce bucket ", buckets_.size(), " of step ", step_));
  buckets_.push_back(std::move(b));
}

void AllreduceSync::note_done(Bucket& b) {
  if (b.logged) return;
  b.logged = true;
  if (timeline_ && timeline_->enabled())
    timeline_->span("allreduce", 1, b.start_us, timeline_->now_us(),
                    {{"bytes", b.count * sizeof(float)}, {"offset", b.offset}, {"step", step_}});
}

void AllreduceSync::poll() {
  for (auto& b : buckets_)
    if (b.handle->test()) note_done(b);
}

void AllreduceSync::ready(size_t offset, size_t count) {
  if (!contiguous_ || offset + count != ready_lo_) {
    // Not the downward-growing region this sync expects: fall back to one allreduce at the end.
    contiguous_ = false;
    return;
  }
  ready_lo_ = offset;
  if ((sent_lo_ - ready_lo_) * sizeof(float) >= opts_.fusion_threshold_bytes) {
    launch(ready_lo_, sent_lo_);
    sent_lo_ = ready_lo_;
  }
  poll();
}

void AllreduceSync::finish_step(Model& model, Optimizer& opt) {
  if (!contiguous_) {
    for (auto& b : buckets_) b.handle->wait();
    buckets_.clear();
    sent_lo_ = param_count_;
  }
  for (auto& b : buckets_) {
    b.handle->wait();
    note_done(b);
  }
  // The last bucket is reduced on this thread: nothing is left to overlap it with, and a hand-off
  // to the background thread would only add its wake-up latency.
  if (sent_lo_ > 0) {
    const int64_t t0 = timeline_ ? timeline_->now_us() : 0;
    comm_.allreduce(grads_, sent_lo_, ReduceOp::kSum,
                    detail::cat("allreduce bucket ", buckets_.size(), " of step ", step_));
    if (timeline_ && timeline_->enabled())
      timeline_->span("allreduce", 1, t0, timeline_->now_us(),
                      {{"bytes", sent_lo_ * sizeof(float)}, {"offset", 0}, {"step", step_}});
  }
  last_step_buckets_ = buckets_.size() + (sent_lo_ > 0 ? 1 : 0);
  buckets_.clear();
  ready_lo_ = sent_lo_ = param_count_;
  contiguous_ = true;
  ++step_;
  const int64_t t0 = timeline_ ? timeline_->now_us() : 0;
  // The buckets hold sums; the optimizer averages them in its own pass over the buffer.
  opt.step(model.params(), model.grads(), 1.0f / static_cast<float>(comm_.size()));
  if (timeline_ && timeline_->enabled())
    timeline_->span("optimizer", 0, t0, timeline_->now_us(), {{"step", step_ - 1}});
}

void AllreduceSync::sum(double* values, size_t n) {
  comm_.allreduce(values, n, "metrics sum");
}

}  // namespace dtrain
