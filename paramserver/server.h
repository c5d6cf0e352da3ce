// A parameter server owns one contiguous range of the flat parameter vector and runs the
// runtime's optimizer on it.
//   sync (default): waits for every worker's gradient for step t, averages them (folded into the
//     optimizer's pass), applies once, then answers every worker's push with the new parameters.
//     It does so chunk by chunk (chunk_floats pieces of its range): workers push each piece as
//     backward finishes it, and a piece is averaged, updated and sent back as soon as every worker
//     has pushed it, so transfers, the update and backward overlap instead of taking turns.
//   async: applies each push on arrival and answers at once.
//   bounded staleness S > 0: async updates, but a worker's push for step t is answered only when
//     the slowest worker has pushed step t - S, so nobody runs more than S steps ahead.
// One ROUTER socket, one thread; a bad frame gets an error reply and a log line. A worker on the
// same machine may move its floats through shared memory instead of payload frames (shm.h).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "paramserver/protocol.h"
#include "paramserver/sharding.h"
#include "paramserver/shm.h"
#include "runtime/optimizer.h"

namespace dtrain::ps {

struct CurveKeys;

struct ServerOptions {
  std::string bind;  // e.g. tcp://127.0.0.1:2222 or inproc://ps0
  std::string name = "ps:0";
  size_t index = 0, num_servers = 1, num_workers = 1;
  size_t param_count = 0;
  OptimizerOptions optimizer;
  bool async = false;
  size_t max_staleness = 0;     // > 0: stale-synchronous
  size_t chunk_floats = 65536;  // sync: the pieces a step is pushed and applied in
  double start_timeout_s = 60;
  double step_timeout_s = 60;
  uint64_t job_id = 0;
  nlohmann::json job = nlohmann::json::object();  // what every worker hello must agree with
  const CurveKeys* curve = nullptr;
};

class Server {
 public:
  Server(zmq::context_t& ctx, ServerOptions opts);
  // Serves until every worker has said done (returns), or fails (throws): a worker missing past
  // the step timeout in sync mode, nobody arriving within the start timeout.
  void run();
  const Range& range() const { return range_; }
  // The endpoint actually bound (resolves a wildcard port such as tcp://127.0.0.1:*).
  std::string endpoint() const { return sock_.get(zmq::sockopt::last_endpoint); }
  size_t rejected_frames() const { return rejected_; }
  // Updates applied: steps in sync mode, pushes in async mode.
  uint64_t updates_applied() const { return version_; }

 private:
  void handle(const std::string& identity, const Message& m);
  // zero_copy: ZeroMQ sends straight from `payload`, which must not change until sent.
  void reply(const std::string& identity, const Header& req, MsgType type, const void* payload,
             size_t bytes, uint64_t count, uint64_t step = UINT64_MAX, bool zero_copy = false,
             uint64_t offset = UINT64_MAX);
  void reply_error(const std::string& identity, const Header& req, const std::string& why);
  void reply_params(const std::string& identity, const Header& req);
  // Parameters [rel, rel + n) of this server's range to a worker: through its shared-memory
  // segment when it has one, else as a payload (zero_copy: from params_ without a copy).
  void send_params(const std::string& identity, const Header& req, size_t rel, size_t n,
                   bool zero_copy);
  // The gradient floats of a push: its payload, or the worker's segment (null and an error reply
  // when that is not possible).
  const float* push_floats(const std::string& identity, const Message& m);
  // Maps the segment a worker's hello offers, if any; says whether it is in use.
  bool attach_shm(uint32_t worker, const nlohmann::json& offer);
  // g: the pushed floats; in_shm: they stay in the worker's segment until the answer, so they
  // are summed straight from there in the update's pass instead of being accumulated first.
  void push_sync(const std::string& identity, const Header& h, const float* g, bool in_shm);
  void apply_chunk(size_t k);
  size_t chunk_len(size_t k) const { return std::min(chunk_, range_.count - k * chunk_); }
  void release_stale_waiters();
  void check_timeouts();

  ServerOptions opts_;
  Range range_;
  zmq::socket_t sock_;
  Optimizer opt_;
  std::vector<float> params_, accum_;
  std::vector<std::unique_ptr<ShmSegment>> shm_;  // per worker; null: payload frames
  bool initialized_ = false;
  uint64_t resume_[2] = {0, 0};
  uint64_t version_ = 0;  // updates applied (sync: steps)
  // sync: per chunk of the range, who pushed it this step and their pending replies
  struct Chunk {
    std::vector<uint8_t> from;         // per worker
    std::vector<const float*> in_shm;  // per worker: its push in shared memory, else null
    bool accumulated = false;          // payload pushes were added into accum_
    size_t arrived = 0;
    bool applied = false;
    std::vector<std::pair<std::string, Header>> waiting;
  };
  size_t chunk_ = 1;
  std::vector<Chunk> chunks_;
  size_t chunks_applied_ = 0;
  std::vector<const float*> sum_inputs_;  // apply_chunk's gradient sources (kept: no allocation)
  bool step_open_ = false;
  std::chrono::steady_clock::time_point step_started_;
  // async with staleness: pushes answered later
  std::vector<uint64_t> pushed_;  // per worker
  std::vector<std::pair<std::string, Header>> stale_waiting_;
  // sums over workers, by key
  struct SumSlot {
    std::vector<double> values;
    std::set<uint32_t> from;
    std::chrono::steady_clock::time_point started;
    std::vector<std::pair<std::string, Header>> waiting;
  };
  std::map<uint64_t, SumSlot> sums_;
  bool any_worker_ = false;  // a worker has said hello
  std::set<uint32_t> done_;
  bool chief_done_ = false;
  size_t rejected_ = 0;
  std::chrono::steady_clock::time_point started_, last_message_;
};

}  // namespace dtrain::ps
