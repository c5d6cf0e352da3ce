// Async mode: each push is applied on arrival with the worker's gradient as it is, and answered
// at once with the parameters after it. Nobody waits for anybody, so a slow or finished worker
// holds nothing back and there is no step to time out; the price is that gradients are computed
// on parameters a few updates old. Because an update can come between any two messages, answers
// are copied out of the parameters rather than sent from them.
#pragma once

#include <string>

#include "paramserver/update_policy.h"

namespace dtrain::ps {

class AsyncPolicy : public UpdatePolicy {
 public:
  AsyncPolicy(Shard& shard, PolicyHost& host) : shard_(shard), host_(host) {}
  const char* mode() const override { return "async"; }
  bool params_stable_between_pushes() const override { return false; }
  void push(const std::string& identity, const Header& h, const float* g, bool in_shm) override;
  void worker_done(uint32_t /*worker*/) override {}

 protected:
  // Applies the push if it is for the whole shard and the shard is initialized, else answers it
  // with the error; says whether it applied it.
  bool apply(const std::string& identity, const Header& h, const float* g);
  void answer(const std::string& identity, const Header& h) {
    host_.send_params(identity, h, 0, shard_.range.count, /*zero_copy=*/false);
  }

  Shard& shard_;
  PolicyHost& host_;
};

}  // namespace dtrain::ps
