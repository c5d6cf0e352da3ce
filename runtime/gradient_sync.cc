#include "runtime/gradient_sync.h"

#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

ResumePoint LocalSync::start(Model& /*model*/, Optimizer& /*opt*/, const nlohmann::json& /*job*/,
                             ResumePoint chief, Timeline& timeline) {
  timeline_ = &timeline;
  return chief;
}

void LocalSync::finish_step(Model& model, Optimizer& opt) {
  const int64_t t0 = timeline_ ? timeline_->now_us() : 0;
  opt.step(model.params(), model.grads());
  if (timeline_ && timeline_->enabled())
    timeline_->span("optimizer", 0, t0, timeline_->now_us(), {{"step", opt.steps() - 1}});
}

}  // namespace dtrain
