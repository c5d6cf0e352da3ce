// The sync policy's chunk bookkeeping (see sync_policy.h). Gradients that arrive as payloads are
// copied into their worker's buffer (payload_), since their frames are gone once handled; those
// in a worker's shared memory stay there until the answer and are read in place. Either way the
// update's pass adds them in worker order, so the sum, and the job's result, does not depend on
// which worker arrived first or on the transport (it was added up in arrival order into one
// buffer: runs with 3 or more workers over TCP differed in the last bits).
#include "paramserver/sync_policy.h"

#include <algorithm>
#include <cstring>

#include "paramserver/server.h"
#include "paramserver/zmq_util.h"
#include "runtime/log.h"

namespace dtrain::ps {

SyncPolicy::SyncPolicy(Shard& shard, PolicyHost& host)
    : shard_(shard), host_(host), payload_(shard.opts.num_workers) {
  const size_t count = shard_.range.count;
  const size_t want = shard_.opts.chunk_floats ? shard_.opts.chunk_floats : count;
  chunk_ = std::max<size_t>(1, std::min(want, std::max<size_t>(count, 1)));
  chunks_.resize(count ? (count + chunk_ - 1) / chunk_ : 0);
  for (auto& ch : chunks_) {
    ch.from.assign(shard_.opts.num_workers, 0);
    ch.source.assign(shard_.opts.num_workers, nullptr);
  }
}

void SyncPolicy::push(const std::string& identity, const Header& h, const float* g, bool in_shm) {
  const Range& range = shard_.range;
  const uint64_t rel = h.offset - range.offset;
  const bool inside = h.offset >= range.offset && rel < range.count;
  const size_t k = inside ? rel / chunk_ : 0;
  if (!inside || rel % chunk_ != 0 || h.count != chunk_len(k)) {
    ++shard_.rejected;
    log_info(shard_.opts.name, ": rejected a push from worker ", h.sender, " for [", h.offset,
             ", +", h.count, "): sync pushes are the ", chunk_, "-float chunks of [", range.offset,
             ", +", range.count, ")");
    return host_.reply_error(identity, h, "push is not a chunk of this server's shard");
  }
  if (!shard_.initialized)
    return host_.reply_error(identity, h, "parameters are not initialized yet");
  Chunk& ch = chunks_[k];
  if (ch.from[h.sender]) {
    ++shard_.rejected;
    return host_.reply_error(
        identity, h, detail::cat("worker ", h.sender, " pushed chunk ", k, " twice in a step"));
  }
  if (!step_open_) {
    step_open_ = true;
    step_started_ = std::chrono::steady_clock::now();
    warned_after_s_ = 0;
  }
  if (in_shm) {
    ch.source[h.sender] = g;
  } else {
    std::vector<float>& mine = payload_[h.sender];
    if (mine.empty()) mine.resize(range.count);  // a worker's first payload push
    float* copy = mine.data() + k * chunk_;
    std::memcpy(copy, g, h.count * sizeof(float));
    ch.source[h.sender] = copy;
  }
  ch.from[h.sender] = 1;
  ++ch.arrived;
  ch.waiting.push_back({identity, h});
  if (ch.arrived + shard_.done.size() >= shard_.opts.num_workers) apply_chunk(k);
}

void SyncPolicy::worker_done(uint32_t /*worker*/) {
  // A finished worker no longer holds back the others.
  for (size_t k = 0; k < chunks_.size(); ++k)
    if (!chunks_[k].applied && chunks_[k].arrived > 0 &&
        chunks_[k].arrived + shard_.done.size() >= shard_.opts.num_workers)
      apply_chunk(k);
}

std::vector<size_t> SyncPolicy::missing_workers() const {
  std::vector<size_t> missing;
  for (size_t w = 0; w < shard_.opts.num_workers; ++w) {
    bool all = true;
    for (const auto& ch : chunks_) all = all && (ch.applied || ch.from[w]);
    if (!all && !shard_.done.count(uint32_t(w))) missing.push_back(w);
  }
  return missing;
}

void SyncPolicy::check_timeouts() {
  if (!step_open_) return;
  const double waited = seconds_since(step_started_);
  const double warn = shard_.opts.stall_warning_s;
  if (waited <= shard_.opts.step_timeout_s) {
    if (warn > 0 && waited >= warned_after_s_ + warn) {
      warned_after_s_ = waited;
      log_info("stall: ", shard_.opts.name, ": step ", shard_.version, " has waited ",
               static_cast<int>(waited), " s for gradients from worker(s) ",
               name_workers(shard_.opts, missing_workers()), " (--step-timeout ",
               shard_.opts.step_timeout_s, ")");
    }
    return;
  }
  const std::vector<size_t> missing = missing_workers();
  const std::string why =
      detail::cat(shard_.opts.name, ": step ", shard_.version, ": no gradient from worker(s) ",
                  name_workers(shard_.opts, missing), " after ", shard_.opts.step_timeout_s,
                  " s; the worker(s) may have died");
  for (auto& ch : chunks_)
    for (auto& [id, h] : ch.waiting) host_.reply_error(id, h, why);
  throw TimeoutError(why);
}

void SyncPolicy::apply_chunk(size_t k) {
  Chunk& ch = chunks_[k];
  const size_t off = k * chunk_, n = chunk_len(k);
  // The workers' gradients in worker order (in their shared memory or payload copies).
  std::vector<const float*>& g = sum_inputs_;
  g.clear();
  for (const float* p : ch.source)
    if (p) g.push_back(p);
  Optimizer& opt = shard_.opt;
  opt.step_sum_range(shard_.params.data(), g.data(), g.size(), off, n,
                     1.0f / static_cast<float>(ch.arrived), opt.steps() + 1);
  // Zero-copy is safe: this chunk changes again only after every worker has pushed it for the
  // next step, which each does only after receiving this reply whole.
  for (auto& [id, h] : ch.waiting) host_.send_params(id, h, off, n, /*zero_copy=*/true);
  ch.waiting.clear();
  ch.applied = true;
  if (++chunks_applied_ < chunks_.size()) return;
  // The step is complete on this server.
  opt.set_steps(opt.steps() + 1);
  ++shard_.version;
  chunks_applied_ = 0;
  step_open_ = false;
  for (auto& c : chunks_) {
    std::fill(c.from.begin(), c.from.end(), 0);
    std::fill(c.source.begin(), c.source.end(), nullptr);
    c.arrived = 0;
    c.applied = false;
  }
}

}  // namespace dtrain::ps
