#include "allreduce/shared_memory_allreduce.h"

#include <cstring>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

SharedMemoryAllreduce::SharedMemoryAllreduce(Communicator& comm, AllreduceOptions opts)
    : GradientSync({"allreduce", comm.rank(), comm.size()}), comm_(comm), opts_(opts) {}

bool SharedMemoryAllreduce::available(const Communicator& comm) {
  return comm.size() > 1 && comm.local_size() == comm.size();
}

ResumePoint SharedMemoryAllreduce::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                                         ResumePoint chief, Timeline& timeline) {
  timeline_ = &timeline;
  if (!model.on_host())
    throw InputError(
        detail::cat("shared-memory allreduce needs a model in host memory; this one "
                    "is on ",
                    model.backend().name()));
  const ResumePoint r = start_from_rank0(comm_, model, opt, job, "shared_memory", chief);
  param_count_ = model.param_count();
  model.set_grad_chunk(std::max<size_t>(1, opts_.fusion_threshold_bytes / sizeof(float)));
  shared_ = comm_.node_shared(param_count_ * sizeof(float), "allreduce shared memory");
  if (!shared_)
    throw Error(detail::cat("shared-memory allreduce: ", comm_.backend(),
                            " offers no shared memory for these ", comm_.size(),
                            " ranks (they must all be on one machine)"));
  slots_.clear();
  for (size_t k = 0; k < comm_.size(); ++k)
    slots_.push_back(static_cast<const float*>(shared_->slot(k)));
  published_ = comm_.node_shared((1 + opt.slots()) * param_count_ * sizeof(float),
                                 "allreduce shared memory (updated pieces)");
  if (!published_) throw Error("shared-memory allreduce: no second shared window");
  // Pieces of whole 64-byte lines, so no two ranks write one cache line.
  const size_t n = comm_.size(), line = 16;
  const size_t per = (param_count_ + n - 1) / n;
  const size_t piece = (per + line - 1) / line * line;
  piece_.assign(n + 1, 0);
  for (size_t k = 0; k <= n; ++k) piece_[k] = std::min(k * piece, param_count_);
  piece_grads_.clear();
  for (size_t k = 0; k < n; ++k) piece_grads_.push_back(slots_[k] + piece_[comm_.rank()]);
  model.set_grad_buffer(static_cast<float*>(shared_->slot(comm_.rank())));
  model_ = &model;
  log_debug("allreduce over shared memory (MPI-3 window): ", comm_.size(), " ranks, ", param_count_,
            " parameters");
  return r;
}

void SharedMemoryAllreduce::finish_step(Model& model, Optimizer& opt) {
  if (model.grads() != slots_[comm_.rank()])
    throw Error("SharedMemoryAllreduce: the model's gradients are no longer in the shared slot");
  const int64_t t0 = timeline_->now_us();
  shared_->fence(OpName{"shared-memory reduction", SIZE_MAX, step_});
  const int64_t t1 = timeline_->now_us();
  const size_t n = slots_.size(), me = comm_.rank();
  const size_t lo = piece_[me], count = piece_[me + 1] - lo;
  const uint64_t t = opt.steps() + 1;
  opt.step_sum_range(model.params(), piece_grads_.data(), n, lo, count,
                     1.0f / static_cast<float>(n), t);
  opt.set_steps(t);
  float* mine = static_cast<float*>(published_->slot(me));
  std::memcpy(mine + lo, model.params() + lo, count * sizeof(float));
  const int64_t t2 = timeline_->now_us();
  // Every piece is published, and nobody's next backward may overwrite a slot another rank is
  // still reading.
  shared_->fence(OpName{"end", SIZE_MAX, step_});
  for (size_t k = 0; k < n; ++k) {
    if (k == me) continue;
    const float* theirs = static_cast<const float*>(published_->slot(k));
    std::memcpy(model.params() + piece_[k], theirs + piece_[k],
                (piece_[k + 1] - piece_[k]) * sizeof(float));
  }
  if (timeline_->enabled()) {
    timeline_->span("barrier", 1, t0, t1, {{"step", step_}, {"bytes", param_count_ * 4}});
    timeline_->span("optimizer", 0, t1, t2, {{"step", step_}, {"sums_ranks", n}});
    timeline_->span("barrier", 1, t2, timeline_->now_us(), {{"step", step_}});
  }
  ++step_;
}

void SharedMemoryAllreduce::gather_state(Model& /*model*/, Optimizer& opt) {
  // The parameters are whole after every step; the optimizer state of the other ranks' pieces is
  // brought up to date here (every rank calls this at the same step).
  if (!published_) return;
  const size_t me = comm_.rank(), slots = opt.slots();
  if (slots == 0) return;
  float* mine = static_cast<float*>(published_->slot(me));
  const size_t lo = piece_[me], count = piece_[me + 1] - lo;
  for (size_t k = 0; k < slots; ++k)
    std::memcpy(mine + (1 + k) * param_count_ + lo, opt.state() + k * param_count_ + lo,
                count * sizeof(float));
  published_->fence(OpName{"gathering the optimizer state", SIZE_MAX, step_});
  for (size_t r = 0; r < slots_.size(); ++r) {
    if (r == me) continue;
    const float* theirs = static_cast<const float*>(published_->slot(r));
    for (size_t k = 0; k < slots; ++k)
      std::memcpy(opt.state() + k * param_count_ + piece_[r],
                  theirs + (1 + k) * param_count_ + piece_[r],
                  (piece_[r + 1] - piece_[r]) * sizeof(float));
  }
}

void SharedMemoryAllreduce::finish(bool /*ok*/) {
  if (model_) model_->set_grad_buffer(nullptr);
  model_ = nullptr;
}

void SharedMemoryAllreduce::sum(double* values, size_t n) {
  comm_.allreduce(values, n, OpName{"metrics sum"});
}

}  // namespace dtrain
