// The bounded-staleness policy (see staleness_policy.h). Held answers are few (at most one per
// worker), so they are kept in a plain list and rescanned whenever the slowest worker may have
// moved: after each push and each done.
#include "paramserver/staleness_policy.h"

#include <algorithm>

#include "paramserver/server.h"
#include "paramserver/zmq_util.h"
#include "runtime/log.h"

namespace dtrain::ps {

BoundedStalenessPolicy::BoundedStalenessPolicy(Shard& shard, PolicyHost& host, size_t max_staleness)
    : AsyncPolicy(shard, host), max_staleness_(max_staleness), pushed_(shard.opts.num_workers, 0) {}

void BoundedStalenessPolicy::push(const std::string& identity, const Header& h, const float* g,
                                  bool /*in_shm*/) {
  if (!apply(identity, h, g)) return;
  pushed_[h.sender] = h.step + 1;
  waiting_.push_back({identity, h, std::chrono::steady_clock::now()});
  release_waiters();
}

void BoundedStalenessPolicy::worker_done(uint32_t /*worker*/) {
  release_waiters();
}

void BoundedStalenessPolicy::release_waiters() {
  uint64_t slowest = UINT64_MAX;
  for (size_t w = 0; w < pushed_.size(); ++w)
    if (!shard_.done.count(uint32_t(w))) slowest = std::min(slowest, pushed_[w]);
  auto it = waiting_.begin();
  while (it != waiting_.end()) {
    // The push for step t is answered once the slowest worker has pushed step t - S.
    if (slowest == UINT64_MAX || it->h.step + 1 <= slowest + max_staleness_) {
      answer(it->identity, it->h);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<size_t> BoundedStalenessPolicy::slowest_workers() const {
  uint64_t slowest = UINT64_MAX;
  for (size_t w = 0; w < pushed_.size(); ++w)
    if (!shard_.done.count(uint32_t(w))) slowest = std::min(slowest, pushed_[w]);
  std::vector<size_t> out;
  for (size_t w = 0; w < pushed_.size(); ++w)
    if (!shard_.done.count(uint32_t(w)) && pushed_[w] == slowest) out.push_back(w);
  return out;
}

void BoundedStalenessPolicy::check_timeouts() {
  if (waiting_.empty()) {
    warned_after_s_ = 0;
    return;
  }
  auto oldest = std::min_element(waiting_.begin(), waiting_.end(),
                                 [](const Held& a, const Held& b) { return a.since < b.since; });
  const double waited = seconds_since(oldest->since);
  const ServerOptions& o = shard_.opts;
  if (waited <= o.step_timeout_s) {
    if (o.stall_warning_s > 0 && waited >= warned_after_s_ + o.stall_warning_s) {
      warned_after_s_ = waited;
      log_info("stall: ", o.name, ": worker ", oldest->h.sender, "'s step ", oldest->h.step,
               " has waited ", static_cast<int>(waited), " s for worker(s) ",
               name_workers(o, slowest_workers()), " to come within --max-staleness ",
               max_staleness_, " (--step-timeout ", o.step_timeout_s, ")");
    }
    return;
  }
  const std::string why =
      detail::cat(o.name, ": no push from worker(s) ", name_workers(o, slowest_workers()), " for ",
                  o.step_timeout_s, " s while worker(s) ahead of them by more than ",
                  "--max-staleness ", max_staleness_, " wait; the worker(s) may have died");
  for (auto& held : waiting_) host_.reply_error(held.identity, held.h, why);
  waiting_.clear();
  throw TimeoutError(why);
}

}  // namespace dtrain::ps
