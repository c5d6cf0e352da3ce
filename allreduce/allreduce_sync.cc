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

AllreduceSync::AllreduceSync(Communicator& comm, AllreduceOptions opts, Communicator* host_comm)
    : comm_(comm), meta_(host_comm ? host_comm : &comm), opts_(opts) {}

void AllreduceSync::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                          uint64_t* resume) {
  device_ = !model.on_host();
  if (device_ && comm_.backend() != "nccl")
    throw InputError(detail::cat("the model is on ", model.backend().name(),
                                 " but gradients would be reduced over ", comm_.backend(),
                                 ": GPU models need the NCCL communicator"));
  check_job_consistency(*meta_, job);
  if (resume) meta_->broadcast(resume, 2 * sizeof(uint64_t), 0, "broadcast resume point");
  // Rank 0's parameters and optimizer state (after --resume too) become everybody's.
  // Through host memory, whatever the backend: once per job, and the MPI path needs no
  // GPU-aware MPI.
  std::vector<float> host(model.param_count() + opt.state_size());
  model.read_params(host.data());
  opt.read_state(host.data() + model.param_count());
  meta_->broadcast(host.data(), host.size() * sizeof(float), 0,
                   "broadcast parameters and optimizer state");
  model.write_params(host.data());
  opt.write_state(host.data() + model.param_count());
  uint64_t t = opt.steps();
  meta_->broadcast(&t, sizeof(t), 0, "broadcast optimizer step");
  opt.set_steps(t);
  grads_ = model.grads();
  param_count_ = model.param_count();
  ready_lo_ = sent_lo_ = param_count_;
  // Layers report their gradients in pieces no bigger than a bucket, so a bucket can leave while
  // the rest of a big layer is still being computed.
  const size_t bucket_floats = std::max<size_t>(1, opts_.fusion_threshold_bytes / sizeof(float));
  model.set_grad_chunk(bucket_floats);
  // Shared memory only when every rank asks for it (node_shared is collective).
  shared_.reset();
  uint64_t want = opts_.shared_memory && !device_ && model.on_host() ? 1 : 0;
  std::vector<uint64_t> wants(comm_.size());
  meta_->allgather(&want, 1, wants.data(), "agreeing on shared-memory reduction");
  bool all = true;
  for (uint64_t w : wants) all = all && w == 1;
  if (all) shared_ = comm_.node_shared(param_count_ * sizeof(float), "allreduce shared memory");
  shared_slots_.clear();
  if (shared_) {
    for (size_t r = 0; r < comm_.size(); ++r)
      shared_slots_.push_back(static_cast<const float*>(shared_->slot(r)));
    model.set_grad_buffer(static_cast<float*>(shared_->slot(comm_.rank())));
    shared_model_ = &model;
    grads_ = model.grads();
  }
  log_debug("allreduce over ", shared_ ? "shared memory (MPI-3 window)" : comm_.backend(), ": ",
            comm_.size(), " ranks, ", param_count_, " parameters, buckets of ",
            opts_.fusion_threshold_bytes, " bytes");
}

void AllreduceSync::launch(size_t lo, size_t hi) {
  if (hi <= lo) return;
  Bucket b;
  b.offset = lo;
  b.count = hi - lo;
  b.start_us = timeline_ ? timeline_->now_us() : 0;
  b.handle =
      comm_.iallreduce(grads_ + lo, hi - lo, device_ ? ReduceOp::kAverage : ReduceOp::kSum,
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
  if (shared_) return;  // backward wrote straight into the shared slot
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
  if (shared_) return finish_shared_step(model, opt);
  // Out-of-order ready() calls stopped new buckets (see ready()); what the buckets sent is final
  // and reduced, and [0, sent_lo_) is reduced below.
  if (device_) {
    // Everything left goes out as one more bucket; the compute stream then waits for all of them
    // on the device, and the optimizer kernel is queued behind them.
    launch(0, sent_lo_);
    sent_lo_ = 0;
    for (auto& b : buckets_) b.handle->wait_on_device();
  }
  for (auto& b : buckets_) {
    if (!device_) b.handle->wait();
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
  // On the host the buckets hold sums and the optimizer averages them in its own pass over the
  // buffer; NCCL has averaged already.
  opt.step(model.params(), model.grads(), device_ ? 1.0f : 1.0f / static_cast<float>(comm_.size()));
  if (timeline_ && timeline_->enabled())
    timeline_->span("optimizer", 0, t0, timeline_->now_us(), {{"step", step_ - 1}});
}

void AllreduceSync::finish_shared_step(Model& model, Optimizer& opt) {
  if (model.grads() != shared_slots_[comm_.rank()])
    throw Error("AllreduceSync: the model's gradients are no longer in the shared slot");
  last_step_buckets_ = 1;
  const int64_t t0 = timeline_ ? timeline_->now_us() : 0;
  shared_->fence(detail::cat("shared-memory reduction of step ", step_));
  const int64_t t1 = timeline_ ? timeline_->now_us() : 0;
  const size_t n = shared_slots_.size();
  opt.step_sum(model.params(), shared_slots_.data(), n, 1.0f / static_cast<float>(n));
  const int64_t t2 = timeline_ ? timeline_->now_us() : 0;
  // Nobody's next backward may overwrite a slot another rank is still reading.
  shared_->fence(detail::cat("end of step ", step_));
  if (timeline_ && timeline_->enabled()) {
    timeline_->span("barrier", 1, t0, t1, {{"step", step_}, {"bytes", param_count_ * 4}});
    timeline_->span("optimizer", 0, t1, t2, {{"step", step_}, {"sums_ranks", n}});
    timeline_->span("barrier", 1, t2, timeline_->now_us(), {{"step", step_}});
  }
  ++step_;
}

void AllreduceSync::finish(bool /*ok*/) {
  if (shared_model_) shared_model_->set_grad_buffer(nullptr);
  shared_model_ = nullptr;
}

void AllreduceSync::sum(double* values, size_t n) {
  meta_->allreduce(values, n, "metrics sum");
}

}  // namespace dtrain
