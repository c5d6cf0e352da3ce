// How a parameter server turns pushes into updates is the one thing its three modes disagree on:
// sync averages every worker's chunk before applying it, async applies each push at once, and
// bounded staleness applies at once but holds answers back. The server (server.h) does all the
// rest the same way in every mode (the socket, hello/init/pull/state/sum/done, validating job id,
// sender and frames), so each mode is one UpdatePolicy, chosen once when the server starts, and
// the server hands it the pushes that passed its checks, each worker's done, and a chance to
// time out once per poll round.
//
// A policy works on the server's Shard (the parameters, the optimizer, what has been applied)
// and answers workers through the PolicyHost the server implements, so replies, shared memory
// and the rejected-frame count stay in one place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "paramserver/protocol.h"
#include "paramserver/sharding.h"
#include "runtime/optimizer.h"

namespace dtrain::ps {

struct ServerOptions;

// The part of the flat parameter vector a server owns, and the state of its updates.
struct Shard {
  explicit Shard(const ServerOptions& opts);  // server.cc
  const ServerOptions& opts;
  const Range range;
  Optimizer opt;
  std::vector<float> params;
  bool initialized = false;  // the chief has sent the parameters
  uint64_t version = 0;      // updates applied (sync: steps)
  std::set<uint32_t> done;   // workers that have said done
  size_t rejected = 0;       // messages refused as malformed or out of place
};

// The server's side, as a policy sees it.
class PolicyHost {
 public:
  virtual void reply_error(const std::string& identity, const Header& req,
                           const std::string& why) = 0;
  // Parameters [rel, rel + n) of the shard, through the worker's shared memory or as a payload
  // (zero_copy: sent from Shard::params without a copy, so they must not change until sent).
  virtual void send_params(const std::string& identity, const Header& req, size_t rel, size_t n,
                           bool zero_copy) = 0;
  // Whether a request covers the whole shard (elems_per_param floats per parameter); if not, it
  // is rejected and answered, and the caller drops it.
  virtual bool need_whole_range(const std::string& identity, const Header& req,
                                size_t elems_per_param) = 0;

 protected:
  ~PolicyHost() = default;
};

class UpdatePolicy {
 public:
  virtual ~UpdatePolicy() = default;
  // For the start-up log line: "sync", "async", "bounded staleness".
  virtual const char* mode() const = 0;
  // Whether a pull may be answered straight from Shard::params: true when the parameters cannot
  // change before the worker has received them.
  virtual bool params_stable_between_pushes() const = 0;
  // A push from a validated worker; g: its floats (in the worker's shared-memory segment when
  // in_shm, where they stay until this push is answered). Answers it, now or later.
  virtual void push(const std::string& identity, const Header& h, const float* g, bool in_shm) = 0;
  // `worker` has said done (already in Shard::done and answered): it no longer holds anyone back.
  virtual void worker_done(uint32_t worker) = 0;
  // Called every poll round: throws a TimeoutError (after answering whoever waits) when a step
  // has waited too long.
  virtual void check_timeouts() {}
};

}  // namespace dtrain::ps
