#include "allreduce/hierarchical_allreduce.h"

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

HierarchicalAllreduce::HierarchicalAllreduce(Communicator& comm, AllreduceOptions opts)
    : GradientSync({"allreduce", comm.rank(), comm.size()}), comm_(comm), opts_(opts) {}

bool HierarchicalAllreduce::machines_even(Communicator& comm) {
  const uint64_t mine = comm.local_size();
  std::vector<uint64_t> all(comm.size());
  comm.allgather(&mine, 1, all.data(), "gathering the ranks per machine");
  for (uint64_t n : all)
    if (n != mine) return false;
  return true;
}

ResumePoint HierarchicalAllreduce::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                                         ResumePoint chief, Timeline& timeline) {
  timeline_ = &timeline;
  if (!model.on_host())
    throw InputError(
        detail::cat("hierarchical allreduce needs a model in host memory; this one is on ",
                    model.backend().name()));
  const ResumePoint r = start_from_rank0(comm_, model, opt, job, "hierarchical", chief);
  param_count_ = model.param_count();
  // Gradients in the pieces the other strategies use, so all compute them alike.
  model.set_grad_chunk(std::max<size_t>(1, opts_.fusion_threshold_bytes / sizeof(float)));
  const size_t n = comm_.local_size(), k = comm_.local_rank();
  // Slot k holds local rank k's gradient; local rank 0's slot is followed by the result.
  shared_ = comm_.local_shared(param_count_ * sizeof(float) * (k == 0 ? 2 : 1),
                               "hierarchical allreduce shared memory");
  if (!shared_)
    throw Error(detail::cat("hierarchical allreduce: ", comm_.backend(),
                            " offers no shared memory to the ranks of a machine"));
  slots_.clear();
  for (size_t j = 0; j < n; ++j) slots_.push_back(static_cast<const float*>(shared_->slot(j)));
  result_ = static_cast<float*>(shared_->slot(0)) + param_count_;
  // Pieces on 16-float (64-byte) boundaries, so no two ranks write one cache line.
  const size_t per = (param_count_ + n - 1) / n;
  const size_t step = (per + 15) / 16 * 16;
  piece_lo_ = std::min(param_count_, k * step);
  piece_hi_ = std::min(param_count_, (k + 1) * step);
  model.set_grad_buffer(static_cast<float*>(shared_->slot(k)));
  model_ = &model;
  log_debug("hierarchical allreduce: ", comm_.cross_size(), " machines x ", n,
            " ranks; local rank ", k, " reduces parameters [", piece_lo_, ", ", piece_hi_,
            ") across machines");
  return r;
}

void HierarchicalAllreduce::finish_step(Model& model, Optimizer& opt) {
  if (model.grads() != slots_[comm_.local_rank()])
    throw Error("HierarchicalAllreduce: the model's gradients are no longer in the shared slot");
  const int64_t t0 = timeline_->now_us();
  shared_->fence(OpName{"hierarchical allreduce: local gradients", SIZE_MAX, step_});
  const int64_t t1 = timeline_->now_us();
  // 1. This rank's piece, summed over the machine's ranks in local-rank order.
  const size_t n = slots_.size(), lo = piece_lo_, hi = piece_hi_;
  float* out = result_;
  const float* first = slots_[0];
  for (size_t i = lo; i < hi; ++i) out[i] = first[i];
  for (size_t j = 1; j < n; ++j) {
    const float* g = slots_[j];
    for (size_t i = lo; i < hi; ++i) out[i] += g[i];
  }
  const int64_t t2 = timeline_->now_us();
  // 2. That piece across machines.
  comm_.cross_allreduce(
      out + lo, hi - lo,
      OpName{"hierarchical allreduce across machines", comm_.local_rank(), step_});
  const int64_t t3 = timeline_->now_us();
  shared_->fence(OpName{"hierarchical allreduce: result", SIZE_MAX, step_});
  const int64_t t4 = timeline_->now_us();
  // 3. Everyone's update from the one shared sum. Nobody writes the result again before the
  // next step's first fence, which every rank reaches only after this pass.
  opt.step(model.params(), result_, 1.0f / static_cast<float>(comm_.size()));
  if (timeline_->enabled()) {
    const size_t bytes = (hi - lo) * sizeof(float);
    timeline_->span("barrier", 1, t0, t1, {{"step", step_}});
    timeline_->span("local reduce", 1, t1, t2, {{"step", step_}, {"bytes", bytes}});
    timeline_->span("cross-machine allreduce", 1, t2, t3,
                    {{"step", step_}, {"bytes", bytes}, {"machines", comm_.cross_size()}});
    timeline_->span("barrier", 1, t3, t4, {{"step", step_}});
    timeline_->span("optimizer", 0, t4, timeline_->now_us(), {{"step", step_}});
  }
  ++step_;
}

void HierarchicalAllreduce::finish(bool /*ok*/) {
  if (model_) model_->set_grad_buffer(nullptr);
  model_ = nullptr;
}

void HierarchicalAllreduce::sum(double* values, size_t n) {
  comm_.allreduce(values, n, OpName{"metrics sum"});
}

}  // namespace dtrain
