// Bounded staleness S > 0: updates are async (each push applied on arrival), but the answer to a
// worker's push for step t, which it needs before its next step, is held until the slowest
// worker still training has pushed step t - S. So no worker runs more than S steps ahead of the
// slowest, which bounds how old the parameters behind any gradient can be, while workers within
// S steps of each other never wait. A worker that has said done no longer counts as the slowest.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "paramserver/async_policy.h"

namespace dtrain::ps {

class BoundedStalenessPolicy : public AsyncPolicy {
 public:
  BoundedStalenessPolicy(Shard& shard, PolicyHost& host, size_t max_staleness);
  const char* mode() const override { return "bounded staleness"; }
  void push(const std::string& identity, const Header& h, const float* g, bool in_shm) override;
  void worker_done(uint32_t worker) override;
  // A push held past --step-timeout: the slowest worker may have died. Everyone held is told,
  // naming it, and the server ends (it held them, and itself, forever).
  void check_timeouts() override;

 private:
  // Answers every held push the slowest worker has now caught up with.
  void release_waiters();

  size_t max_staleness_;
  std::vector<uint64_t> pushed_;  // per worker: the steps it has pushed (last step + 1)
  struct Held {
    std::string identity;
    Header h;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<Held> waiting_;
  double warned_after_s_ = 0;  // the oldest hold's last stall warning, seconds after it began
  std::vector<size_t> slowest_workers() const;
};

}  // namespace dtrain::ps
