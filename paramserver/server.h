// A parameter server owns one contiguous range of the flat parameter vector and runs the
// runtime's optimizer on it.
//   sync (default): waits for every worker's gradient for step t, averages them (folded into the
//     optimizer's pass), applies once, then answers every worker's push with the new parameters,
//     chunk by chunk so that transfers, the update and backward overlap (sync_policy.h).
//   async: applies each push on arrival and answers at once (async_policy.h).
//   bounded staleness S > 0: async updates, but a worker's push for step t is answered only when
//     the slowest worker has pushed step t - S, so nobody runs more than S steps ahead
//     (staleness_policy.h).
// The modes differ only in what a push does, so each is an UpdatePolicy (update_policy.h) chosen
// once here; the Server does what every mode shares: one ROUTER socket on one thread, the
// hello/init/pull/state/sum/done messages, job-id and sender checks, replies, the start timeout
// and metric sums. A bad frame gets an error reply and a log line. A worker on the same machine
// may move its floats through shared memory instead of payload frames (shm.h).
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
#include "paramserver/update_policy.h"
#include "runtime/optimizer.h"

namespace dtrain::ps {

struct CurveKeys;

struct ServerOptions {
  std::string bind;  // e.g. tcp://127.0.0.1:2222 or inproc://ps0
  std::string name = "ps:0";
  // How messages name worker rank w ("worker:1 (node2:2224)"); empty: by number only.
  std::vector<std::string> worker_names;
  size_t index = 0, num_servers = 1, num_workers = 1;
  size_t param_count = 0;
  OptimizerOptions optimizer;
  // The model comes from the workers: param_count and optimizer are taken from the first hello
  // that says them ("model": {"param_count": N}, "optimizer": {...}), and every later hello must
  // agree with that one. A ps task of a job whose model lives in another framework
  // (dtrain.torch) serves this way: it never builds the model itself.
  bool learn_model = false;
  bool async = false;
  size_t max_staleness = 0;     // > 0: stale-synchronous
  size_t chunk_floats = 65536;  // sync: the pieces a step is pushed and applied in
  double start_timeout_s = 60;
  double step_timeout_s = 60;
  // Seconds a step may wait for workers before a log line names them (repeated; <= 0: never).
  double stall_warning_s = 60;
  uint64_t job_id = 0;
  nlohmann::json job = nlohmann::json::object();  // what every worker hello must agree with
  const CurveKeys* curve = nullptr;
};

// "1, 3 (worker:0 (node2:2224), worker:2 (node3:2226))": worker ranks by number, then by task
// name when the options carry the names.
std::string name_workers(const ServerOptions& o, const std::vector<size_t>& ranks);

class Server : private PolicyHost {
 public:
  Server(zmq::context_t& ctx, ServerOptions opts);
  // The policy keeps references into the server.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Serves until every worker has said done (returns), or fails (throws): a worker missing past
  // the step timeout in sync mode, nobody arriving within the start timeout.
  void run();
  const Range& range() const { return shard_->range; }
  // The shard is known: from the options, or (learn_model) from the first worker's hello.
  bool configured() const { return configured_; }
  // The endpoint actually bound (resolves a wildcard port such as tcp://127.0.0.1:*).
  std::string endpoint() const { return sock_.get(zmq::sockopt::last_endpoint); }
  size_t rejected_frames() const { return shard_->rejected; }
  // Updates applied: steps in sync mode, pushes in async mode.
  uint64_t updates_applied() const { return shard_->version; }

 private:
  void handle(const std::string& identity, const Message& m);
  void handle_hello(const std::string& identity, const Message& m);
  // The shard and its update policy for opts_ (again, once learn_model has learnt the model).
  void configure();
  // learn_model: takes the model and optimizer from a hello's JSON; an error text if they are
  // unusable (the hello is refused), else empty.
  std::string learn(const nlohmann::json& hello);
  void handle_sum(const std::string& identity, const Message& m);
  // zero_copy: ZeroMQ sends straight from `payload`, which must not change until sent.
  void reply(const std::string& identity, const Header& req, MsgType type, const void* payload,
             size_t bytes, uint64_t count, uint64_t step = UINT64_MAX, bool zero_copy = false,
             uint64_t offset = UINT64_MAX);
  void reply_error(const std::string& identity, const Header& req, const std::string& why) override;
  // Parameters [rel, rel + n) of this server's range to a worker: through its shared-memory
  // segment when it has one, else as a payload (zero_copy: from the shard without a copy).
  void send_params(const std::string& identity, const Header& req, size_t rel, size_t n,
                   bool zero_copy) override;
  bool need_whole_range(const std::string& identity, const Header& req,
                        size_t elems_per_param) override;
  // The gradient floats of a push: its payload, or the worker's segment (null and an error reply
  // when that is not possible).
  const float* push_floats(const std::string& identity, const Message& m);
  // Maps the segment a worker's hello offers, if any; says whether it is in use.
  bool attach_shm(uint32_t worker, const nlohmann::json& offer);
  void check_timeouts();

  ServerOptions opts_;
  std::unique_ptr<Shard> shard_;
  bool configured_ = false;
  zmq::socket_t sock_;
  std::unique_ptr<UpdatePolicy> policy_;
  std::vector<std::unique_ptr<ShmSegment>> shm_;  // per worker; null: payload frames
  uint64_t resume_[3] = {0, 0, 0};  // the chief's resume point: epoch, step, step in epoch
  // Where each worker is, for one that comes back (a new process, after the launcher restarted
  // it: asynchronous jobs only): the ZeroMQ identity of its last hello, the global steps it has
  // pushed (0: none yet), the metrics sums it has joined and its step count at the last one.
  struct WorkerProgress {
    std::string identity;
    uint64_t steps = 0;  // global steps done (a push of step t makes it t + 1)
    uint64_t sums = 0, step_at_sum = 0;
  };
  std::vector<WorkerProgress> progress_;
  // Worker w's global steps: those it pushed, or the job's resume step if none yet.
  uint64_t steps_of(uint32_t w) const;
  // The hello reply's "rejoin" for worker w: where it continues.
  nlohmann::json rejoin_point(uint32_t w) const;
  // sums over workers, by key
  struct SumSlot {
    std::vector<double> values;
    std::set<uint32_t> from;
    std::chrono::steady_clock::time_point started;
    double warned_after_s = 0;  // the last stall warning, seconds after started
    std::vector<std::pair<std::string, Header>> waiting;
  };
  std::map<uint64_t, SumSlot> sums_;
  // Sums completed, by key: a worker that said done (a SIGTERM) and rejoined later asks for sums
  // the others finished without it, and gets their result (a few doubles an epoch).
  std::map<uint64_t, std::vector<double>> finished_sums_;
  // A sum is complete when every worker has sent it or said done; then everyone waiting gets it.
  bool sum_complete(const SumSlot& slot) const;
  void finish_sum(uint64_t key);
  bool any_worker_ = false;  // a worker has said hello
  std::chrono::steady_clock::time_point started_;
};

}  // namespace dtrain::ps
