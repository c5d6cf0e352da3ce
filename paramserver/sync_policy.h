// Sync mode: step t's update is the average of every worker's step-t gradient, applied once.
// Waiting for the whole gradient before updating would make transfers, the update and backward
// take turns, so the shard is cut into chunks (ServerOptions::chunk_floats) that workers push as
// backward finishes them; a chunk is averaged (folded into the optimizer's pass), updated and
// sent back as soon as every worker still training has pushed it. The step ends on this server
// when its last chunk is applied. A worker missing past the step timeout is named, and everyone
// waiting is told, rather than the job hanging.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "paramserver/update_policy.h"

namespace dtrain::ps {

class SyncPolicy : public UpdatePolicy {
 public:
  SyncPolicy(Shard& shard, PolicyHost& host);
  const char* mode() const override { return "sync"; }
  // The parameters change only after every worker has pushed again, which each does only after
  // receiving its answer whole.
  bool params_stable_between_pushes() const override { return true; }
  void push(const std::string& identity, const Header& h, const float* g, bool in_shm) override;
  void worker_done(uint32_t worker) override;
  void check_timeouts() override;

 private:
  // Per chunk of the shard: who pushed it this step, and their pending answers.
  struct Chunk {
    std::vector<uint8_t> from;  // per worker
    // Per worker: its push (in its shared memory, or its copy in payload_), else null.
    std::vector<const float*> source;
    size_t arrived = 0;
    bool applied = false;
    std::vector<std::pair<std::string, Header>> waiting;
  };
  size_t chunk_len(size_t k) const { return std::min(chunk_, shard_.range.count - k * chunk_); }
  void apply_chunk(size_t k);

  Shard& shard_;
  PolicyHost& host_;
  size_t chunk_ = 1;
  std::vector<Chunk> chunks_;
  size_t chunks_applied_ = 0;
  // Per worker: its payload pushes of this step (the shard's size, made at its first one).
  std::vector<std::vector<float>> payload_;
  std::vector<const float*> sum_inputs_;  // apply_chunk's gradient sources (kept: no allocation)
  bool step_open_ = false;
  std::chrono::steady_clock::time_point step_started_;
  double warned_after_s_ = 0;  // the step's last stall warning, in seconds since it opened
  std::vector<size_t> missing_workers() const;
};

}  // namespace dtrain::ps
