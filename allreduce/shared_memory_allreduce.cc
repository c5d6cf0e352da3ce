#include "allreduce/shared_memory_allreduce.h"

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
  const size_t n = slots_.size();
  opt.step_sum(model.params(), slots_.data(), n, 1.0f / static_cast<float>(n));
  const int64_t t2 = timeline_->now_us();
  // Nobody's next backward may overwrite a slot another rank is still reading.
  shared_->fence(OpName{"end", SIZE_MAX, step_});
  if (timeline_->enabled()) {
    timeline_->span("barrier", 1, t0, t1, {{"step", step_}, {"bytes", param_count_ * 4}});
    timeline_->span("optimizer", 0, t1, t2, {{"step", step_}, {"sums_ranks", n}});
    timeline_->span("barrier", 1, t2, timeline_->now_us(), {{"step", step_}});
  }
  ++step_;
}

void SharedMemoryAllreduce::finish(bool /*ok*/) {
  if (model_) model_->set_grad_buffer(nullptr);
  model_ = nullptr;
}

void SharedMemoryAllreduce::sum(double* values, size_t n) {
  comm_.allreduce(values, n, OpName{"metrics sum"});
}

}  // namespace dtrain
