// The bounded-staleness policy (see staleness_policy.h). Held answers are few (at most one per
// worker), so they are kept in a plain list and rescanned whenever the slowest worker may have
// moved: after each push and each done.
#include "paramserver/staleness_policy.h"

#include <algorithm>

#include "paramserver/server.h"

namespace dtrain::ps {

BoundedStalenessPolicy::BoundedStalenessPolicy(Shard& shard, PolicyHost& host, size_t max_staleness)
    : AsyncPolicy(shard, host), max_staleness_(max_staleness), pushed_(shard.opts.num_workers, 0) {}

void BoundedStalenessPolicy::push(const std::string& identity, const Header& h, const float* g,
                                  bool /*in_shm*/) {
  if (!apply(identity, h, g)) return;
  pushed_[h.sender] = h.step + 1;
  waiting_.push_back({identity, h});
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
    if (slowest == UINT64_MAX || it->second.step + 1 <= slowest + max_staleness_) {
      answer(it->first, it->second);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace dtrain::ps
