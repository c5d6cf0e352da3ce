// ParameterServerSync: a worker's side of parameter-server mode, as a GradientSync. Each step it
// pushes every server its range of the gradient, all at once, and each server answers with its
// range of the updated parameters (sync: after all workers' pushes; async: at once), so one
// round trip per server per step, the servers' traffic overlapped. The chief initializes the
// servers from its (seeded or resumed) model; other workers wait until they are initialized.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "paramserver/protocol.h"
#include "paramserver/sharding.h"
#include "paramserver/shm.h"
#include "runtime/gradient_sync.h"

namespace dtrain::ps {

struct CurveKeys;

struct ClientOptions {
  std::vector<std::string> servers;       // endpoints, e.g. tcp://127.0.0.1:2222
  std::vector<std::string> server_names;  // for errors: "ps:0 (127.0.0.1:2222)"
  size_t worker_rank = 0, num_workers = 1;
  double start_timeout_s = 60;
  double step_timeout_s = 60;
  // Seconds a wait for servers may last before a log line names them (repeated; <= 0: never).
  double stall_warning_s = 60;
  uint64_t job_id = 0;
  nlohmann::json job = nlohmann::json::object();  // must match the servers
  const CurveKeys* curve = nullptr;
  // Async mode: overlap each step's push/pull with the next step's compute (the parameters a step
  // uses are then one more update behind; only for unbounded async, where that is the contract).
  bool overlap = false;
  // Sync mode: push in pieces of this many floats as backward finishes them (the servers'
  // chunk_floats); async mode pushes each server's whole range at the end of the step.
  bool sync = true;
  size_t chunk_floats = 65536;
  // Offer each server a shared-memory segment for the floats (paramserver/shm.h); servers on
  // another machine decline and the pair uses payload frames. Off under --secure, where every
  // byte must go through CURVE.
  bool shm = true;
};

// What a wait is for, in error messages ("step 7 push/pull"): formatted only when a message is
// made, so the per-step waits build no strings.
struct WaitFor {
  WaitFor(const char* what) : prefix(what) {}  // NOLINT: implicit, like a string
  WaitFor(const char* p, uint64_t s, const char* x = "") : prefix(p), step(s), suffix(x) {}
  const char* prefix;
  uint64_t step = UINT64_MAX;
  const char* suffix = "";
};
std::ostream& operator<<(std::ostream& os, const WaitFor& w);

class ParameterServerSync : public GradientSync {
 public:
  ParameterServerSync(zmq::context_t& ctx, ClientOptions opts);
  ResumePoint start(Model& model, Optimizer& opt, const nlohmann::json& job, ResumePoint chief,
                    Timeline& timeline) override;
  void ready(size_t offset, size_t count) override;
  void finish_step(Model& model, Optimizer& opt) override;
  void sum(double* values, size_t n) override;
  void gather_state(Model& model, Optimizer& opt) override;
  void finish(bool ok) override;
  // Servers this worker exchanges floats with through shared memory (after start()).
  size_t shared_memory_servers() const;
  // Takes the answer to an outstanding push (async mode overlaps it with the next step), if
  // any: the model then holds the newest parameters sent to this worker, and sum() may be
  // called. Returns whether there was one.
  bool drain(Model& model);

 private:
  struct Reply {
    Header h;
    zmq::message_t body;
    std::string_view payload;  // into body
  };
  // zero_copy: ZeroMQ sends straight from `payload`, which must not change until the reply.
  // Returns the request id.
  uint32_t send(size_t server, MsgType type, uint64_t step, uint64_t offset, const void* payload,
                size_t bytes, uint64_t count, bool zero_copy = false);
  void send_piece(size_t i);
  void finish_sync_step(Model& model);
  // Waits for the answer to the last request sent to each of `servers`; throws a TimeoutError
  // naming the silent servers, or an Error with a server's error reply.
  std::vector<Reply> wait_replies(const std::vector<size_t>& servers, double timeout_s,
                                  const WaitFor& what);
  // The next message waiting on server s, if any (header and payload; extra frames drained).
  // A reply that does not decode is a PeerError naming the server.
  std::optional<Reply> recv_reply(size_t s, const WaitFor& what);
  // After a SIGTERM, a wait of over a second ends in StopRequested, naming `servers`.
  void stop_if_stuck(double waited, const WaitFor& what, const std::vector<size_t>& servers);
  std::vector<size_t> all_servers() const;
  void apply_params_reply(Model& model);
  // Copies the parameters a kParams or kParamsShm reply from server s carries for
  // [offset, offset + count) into `params` (the flat buffer); a reply that does not carry exactly
  // those is a PeerError.
  void take_params(size_t s, const Reply& r, size_t offset, size_t count, float* params);
  // Sends [offset, offset + count) of the gradient `g` (the flat buffer) to server s: through its
  // segment, or zero-copy from g (which must then stay unchanged until the answer).
  uint32_t push(size_t s, uint64_t offset, size_t count, const float* g);
  // Timeline spans of the step's communication (tid 1): "push" and "wait".
  void span(const char* name, int64_t from_us);
  int64_t now_us() const;

  ClientOptions opts_;
  Timeline* timeline_ = nullptr;
  std::vector<zmq::socket_t> socks_;
  std::vector<uint32_t> expected_request_;
  uint32_t next_request_ = 1;
  std::vector<Range> ranges_;
  uint64_t step_ = 0, sum_key_ = 0;
  bool finished_ = false;
  bool push_outstanding_ = false;
  uint64_t pending_step_ = 0;
  std::vector<float> staged_grads_;
  // sync: the pieces of the gradient, highest offset first (backward's order)
  struct Piece {
    size_t server, offset, count;
    uint32_t request = 0;
    bool sent = false;
  };
  std::vector<Piece> pieces_;
  size_t next_piece_ = 0;
  ReadyRegion region_;
  float* grads_ = nullptr;
  std::vector<std::unique_ptr<ShmSegment>> shm_;  // per server; null: payload frames
};

}  // namespace dtrain::ps
