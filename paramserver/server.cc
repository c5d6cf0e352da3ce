#include "paramserver/server.h"

#include <algorithm>
#include <cstring>

#include "paramserver/async_policy.h"
#include "paramserver/curve.h"
#include "paramserver/staleness_policy.h"
#include "paramserver/sync_policy.h"
#include "paramserver/zmq_util.h"
#include "runtime/log.h"

namespace dtrain::ps {

std::string name_workers(const ServerOptions& o, const std::vector<size_t>& ranks) {
  std::string nums, names;
  for (size_t w : ranks) {
    nums += (nums.empty() ? "" : ", ") + std::to_string(w);
    if (w < o.worker_names.size()) names += (names.empty() ? "" : ", ") + o.worker_names[w];
  }
  return names.empty() ? nums : nums + " (" + names + ")";
}

Shard::Shard(const ServerOptions& o)
    : opts(o),
      range(shard_ranges(o.param_count, o.num_servers).at(o.index)),
      opt(o.optimizer, range.count),
      params(range.count, 0.0f) {}

Server::Server(zmq::context_t& ctx, ServerOptions opts)
    : opts_(std::move(opts)),
      sock_(ctx, zmq::socket_type::router),
      shm_(opts_.num_workers),
      progress_(opts_.num_workers) {
  if (opts_.learn_model) opts_.param_count = 0;  // until a hello says it
  configure();
  configured_ = !opts_.learn_model;
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::router_mandatory, 0);
  if (opts_.curve) apply_server_curve(sock_, *opts_.curve);
  try {
    sock_.bind(opts_.bind);
  } catch (const zmq::error_t& e) {
    if (e.num() == EADDRINUSE)
      throw InputError(detail::cat(opts_.name, ": cannot listen on ", opts_.bind,
                                   ": the port is already in use"));
    throw InputError(detail::cat(opts_.name, ": cannot listen on ", opts_.bind, ": ", e.what()));
  }
  if (opts_.learn_model) {
    log_debug(opts_.name, " on ", opts_.bind, " (", policy_->mode(),
              "): the model comes with the first worker's hello");
  } else {
    const Range& r = shard_->range;
    log_debug(opts_.name, " serving parameters [", r.offset, ", ", r.offset + r.count, ") on ",
              opts_.bind, " (", policy_->mode(), ")");
  }
}

void Server::configure() {
  const size_t rejected = shard_ ? shard_->rejected : 0;
  policy_.reset();  // it refers to the shard
  shard_ = std::make_unique<Shard>(opts_);
  shard_->rejected = rejected;
  PolicyHost& host = *this;
  if (!opts_.async)
    policy_ = std::make_unique<SyncPolicy>(*shard_, host);
  else if (opts_.max_staleness > 0)
    policy_ = std::make_unique<BoundedStalenessPolicy>(*shard_, host, opts_.max_staleness);
  else
    policy_ = std::make_unique<AsyncPolicy>(*shard_, host);
}

std::string Server::learn(const nlohmann::json& j) {
  const auto* model = j.contains("model") ? &j["model"] : nullptr;
  if (!model || !model->is_object() || !model->contains("param_count") ||
      !(*model)["param_count"].is_number_unsigned() || (*model)["param_count"].get<size_t>() == 0)
    return "hello: no model.param_count to serve";
  if (!j.contains("optimizer")) return "hello: no optimizer";
  try {
    opts_.optimizer = optimizer_options(j["optimizer"], opts_.name + ": the worker's hello");
  } catch (const InputError& e) {
    return e.what();
  }
  // A count whose shard the chief could not send (its kInit carries the shard's parameters and
  // optimizer state, at most 4 floats a parameter, in one payload) is refused: a huge one made
  // the allocation below throw out of the server.
  const size_t count = (*model)["param_count"].get<size_t>();
  const size_t servers = std::max<size_t>(opts_.num_servers, 1);
  if (count / servers + 1 > kMaxPayloadBytes / (4 * sizeof(float)))
    return detail::cat("hello: model.param_count ", count, " is more than ", servers,
                       " ps task(s) can hold (at most ",
                       kMaxPayloadBytes / (4 * sizeof(float)) * servers,
                       " parameters: add ps tasks)");
  opts_.param_count = count;
  opts_.job["model"] = *model;
  opts_.job["optimizer"] = j["optimizer"];
  configure();
  configured_ = true;
  const Range& r = shard_->range;
  log_debug(opts_.name, " learnt the model from a worker's hello: ", opts_.param_count,
            " parameters (", opts_.optimizer.name, "), serving [", r.offset, ", ",
            r.offset + r.count, ")");
  return "";
}

void Server::reply(const std::string& identity, const Header& req, MsgType type,
                   const void* payload, size_t bytes, uint64_t count, uint64_t step, bool zero_copy,
                   uint64_t offset) {
  Header h;
  h.type = uint16_t(type);
  h.job_id = opts_.job_id;
  h.sender = uint32_t(opts_.index);
  h.request = req.request;
  h.step = step == UINT64_MAX ? shard_->version : step;
  h.offset = offset == UINT64_MAX ? shard_->range.offset : offset;
  h.count = count;
  // Named in the error only if a send fails.
  const char* what = type_name(h.type);
  const RouterPeer peer{identity, req.sender, opts_.num_workers};
  send_or_throw(sock_, zmq::buffer(identity), zmq::send_flags::sndmore, opts_.name, ": send ", what,
                " to ", peer);
  send_or_throw(sock_, zmq::buffer(&h, sizeof(h)), zmq::send_flags::sndmore, opts_.name, ": send ",
                what, " to ", peer);
  if (zero_copy && bytes > 0) {
    zmq::message_t body(const_cast<void*>(payload), bytes, nullptr, nullptr);
    send_or_throw(sock_, body, zmq::send_flags::none, opts_.name, ": send ", what, " to ", peer);
  } else {
    send_or_throw(sock_, zmq::buffer(payload, bytes), zmq::send_flags::none, opts_.name, ": send ",
                  what, " to ", peer);
  }
}

void Server::reply_error(const std::string& identity, const Header& req, const std::string& why) {
  reply(identity, req, MsgType::kError, why.data(), why.size(), why.size());
}

bool Server::need_whole_range(const std::string& identity, const Header& h,
                              size_t elems_per_param) {
  const Range& r = shard_->range;
  if (h.offset == r.offset && h.count == r.count * elems_per_param) return true;
  ++shard_->rejected;
  log_info(opts_.name, ": rejected a ", type_name(h.type), " from worker ", h.sender, " for [",
           h.offset, ", +", h.count, "); this server owns [", r.offset, ", +", r.count, ")");
  reply_error(identity, h, "range does not match this server's shard");
  return false;
}

void Server::send_params(const std::string& identity, const Header& req, size_t rel, size_t n,
                         bool zero_copy) {
  if (ShmSegment* seg = req.sender < shm_.size() ? shm_[req.sender].get() : nullptr) {
    // The worker reads this area only after this answer, and asks again only after reading it.
    std::memcpy(seg->params() + rel, shard_->params.data() + rel, n * sizeof(float));
    return reply(identity, req, MsgType::kParamsShm, nullptr, 0, n, UINT64_MAX, false,
                 shard_->range.offset + rel);
  }
  reply(identity, req, MsgType::kParams, shard_->params.data() + rel, n * sizeof(float), n,
        UINT64_MAX, zero_copy, shard_->range.offset + rel);
}

const float* Server::push_floats(const std::string& identity, const Message& m) {
  if (m.type() == MsgType::kPush) return m.floats();
  const Header& h = m.h;
  ShmSegment* seg = shm_[h.sender].get();
  const Range& r = shard_->range;
  const uint64_t rel = h.offset - r.offset;
  if (!seg || h.offset < r.offset || rel > r.count || h.count > r.count - rel) {
    ++shard_->rejected;
    log_info(opts_.name, ": rejected a push_shm from worker ", h.sender,
             seg ? " outside this server's range" : " that has no shared-memory segment here");
    reply_error(identity, h,
                seg ? "push_shm outside this server's range" : "no shared-memory segment");
    return nullptr;
  }
  return seg->grads() + rel;
}

bool Server::attach_shm(uint32_t worker, const nlohmann::json& offer) {
  // Under CURVE every byte goes through the encrypted connection.
  if (opts_.curve || !offer.is_object() || !offer.contains("name") || !offer["name"].is_string() ||
      !offer.contains("nonce") || !offer["nonce"].is_number_unsigned()) {
    shm_[worker].reset();
    return false;
  }
  const std::string name = offer["name"].get<std::string>();
  const uint64_t nonce = offer["nonce"].get<uint64_t>();
  if (shm_[worker] && shm_[worker]->name() == name && shm_[worker]->nonce() == nonce)
    return true;  // a repeated hello
  std::string why;
  shm_[worker] = ShmSegment::open(name, shard_->range.count, nonce, &why);
  if (!shm_[worker])
    log_debug(opts_.name, ": worker ", worker, " offered shared memory ", name,
              " that is not usable here (", why, "); using TCP payloads");
  return shm_[worker] != nullptr;
}

void Server::run() {
  started_ = std::chrono::steady_clock::now();
  for (;;) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    poll_or_throw(&item, 1, std::chrono::milliseconds(200), opts_.name, ": poll");
    if (item.revents & ZMQ_POLLIN) {
      // Whose message it is is in its first frame, so a failure here can name nobody.
      std::vector<zmq::message_t> parts = recv_multipart(sock_, opts_.name, ": recv");
      if (parts.size() != 2 && parts.size() != 3) {
        ++shard_->rejected;
        log_info(opts_.name, ": rejected a message of ", parts.size() - 1,
                 " frames (expected header and payload)");
        continue;
      }
      const std::string identity = parts[0].to_string();
      try {
        Message m = parts.size() == 3
                        ? decode(parts[1].data(), parts[1].size(), parts[2].data(), parts[2].size())
                        : decode(parts[1].data(), parts[1].size());
        handle(identity, m);
      } catch (const ProtocolError& e) {
        ++shard_->rejected;
        log_info(opts_.name, ": rejected a bad frame: ", e.what());
        Header h;
        h.sender = UINT32_MAX;  // unknown (only the request id is echoed)
        reply_error(identity, h, std::string("rejected: ") + e.what());
      }
      if (shard_->done.size() == opts_.num_workers) {
        log_debug(opts_.name, ": every worker is done; exiting");
        // The last worker's done answer is still queued: closing with linger 0 would drop it
        // and leave that worker waiting for it (seen when the process ends right after run()).
        sock_.set(zmq::sockopt::linger, 2000);
        return;
      }
    }
    check_timeouts();
  }
}

void Server::check_timeouts() {
  if (!any_worker_ && seconds_since(started_) > opts_.start_timeout_s)
    throw TimeoutError(detail::cat(opts_.name, ": no worker connected within ",
                                   opts_.start_timeout_s, " s (--start-timeout)"));
  policy_->check_timeouts();
  // Workers also meet between steps, to sum the epoch's metrics: one that died there is named
  // the same way (any mode).
  for (auto& [key, slot] : sums_) {
    if (slot.waiting.empty()) continue;
    const double waited = seconds_since(slot.started);
    std::vector<size_t> missing;
    for (size_t w = 0; w < opts_.num_workers; ++w)
      if (!slot.from.count(uint32_t(w)) && !shard_->done.count(uint32_t(w))) missing.push_back(w);
    if (waited <= opts_.step_timeout_s) {
      const double warn = opts_.stall_warning_s;
      if (warn > 0 && waited >= slot.warned_after_s + warn) {
        slot.warned_after_s = waited;
        log_info("stall: ", opts_.name, ": the metrics sum ", key, " has waited ",
                 static_cast<int>(waited), " s for worker(s) ", name_workers(opts_, missing),
                 " (timeout ", opts_.step_timeout_s, " s)");
      }
      continue;
    }
    const std::string why = detail::cat(opts_.name, ": metrics sum: no answer from worker(s) ",
                                        name_workers(opts_, missing), " after ",
                                        opts_.step_timeout_s, " s; the worker(s) may have died");
    for (auto& [id, h] : slot.waiting) reply_error(id, h, why);
    throw TimeoutError(why);
  }
}

void Server::handle(const std::string& identity, const Message& m) {
  const Header& h = m.h;
  if (h.job_id != opts_.job_id) {
    ++shard_->rejected;
    log_info(opts_.name, ": rejected a ", type_name(h.type), " from another job (job id ", h.job_id,
             ", this job is ", opts_.job_id, ")");
    return reply_error(identity, h, "message from another job");
  }
  if (h.sender >= opts_.num_workers) {
    ++shard_->rejected;
    log_info(opts_.name, ": rejected a ", type_name(h.type), " from sender ", h.sender,
             " (this job has ", opts_.num_workers, " workers)");
    return reply_error(identity, h,
                       detail::cat("sender ", h.sender, " is not a worker of this job"));
  }
  if (!configured_ && m.type() != MsgType::kHello)
    return reply_error(identity, h,
                       detail::cat(opts_.name, ": no worker has said hello with the model yet"));
  switch (m.type()) {
    case MsgType::kHello:
      return handle_hello(identity, m);
    case MsgType::kInit: {
      Optimizer& opt = shard_->opt;
      const size_t slots = opt.slots(), count = shard_->range.count;
      if (!need_whole_range(identity, h, 1 + slots)) return;
      std::memcpy(shard_->params.data(), m.floats(), count * sizeof(float));
      std::memcpy(opt.state(), m.floats() + count, count * slots * sizeof(float));
      opt.set_steps(h.step);
      shard_->version = 0;
      shard_->initialized = true;
      return reply(identity, h, MsgType::kInitOk, nullptr, 0, 0);
    }
    case MsgType::kPull:
      if (!shard_->initialized)
        return reply_error(identity, h, "parameters are not initialized yet");
      return send_params(identity, h, 0, shard_->range.count,
                         /*zero_copy=*/policy_->params_stable_between_pushes());
    case MsgType::kGetState: {
      const Optimizer& opt = shard_->opt;
      std::vector<float> s(shard_->params);
      s.insert(s.end(), opt.state(), opt.state() + opt.state_size());
      // The optimizer's step count rides in the header: Adam's bias correction needs it.
      return reply(identity, h, MsgType::kState, s.data(), s.size() * sizeof(float), s.size(),
                   opt.steps());
    }
    case MsgType::kGetStateShm: {
      const Optimizer& opt = shard_->opt;
      const size_t count = shard_->range.count;
      ShmSegment* seg = shm_[h.sender].get();
      if (!seg || h.step > opt.slots())
        return reply_error(
            identity, h,
            seg ? "get_state_shm: no such state area" : "get_state_shm: no shared-memory segment");
      const float* from = h.step == 0 ? shard_->params.data() : opt.state() + (h.step - 1) * count;
      std::memcpy(seg->params(), from, count * sizeof(float));
      return reply(identity, h, MsgType::kStateShm, nullptr, 0, count, opt.steps());
    }
    case MsgType::kPush:
    case MsgType::kPushShm:
      progress_[h.sender].steps = std::max(progress_[h.sender].steps, h.step + 1);
      if (const float* g = push_floats(identity, m))
        policy_->push(identity, h, g, m.type() == MsgType::kPushShm);
      return;
    case MsgType::kSum:
      return handle_sum(identity, m);
    case MsgType::kDone: {
      shard_->done.insert(h.sender);
      reply(identity, h, MsgType::kDoneOk, nullptr, 0, 0);
      // A finished worker no longer holds back a metrics sum the others already wait in.
      std::vector<uint64_t> ready;
      for (const auto& [key, slot] : sums_)
        if (!slot.waiting.empty() && sum_complete(slot)) ready.push_back(key);
      for (uint64_t key : ready) finish_sum(key);
      return policy_->worker_done(h.sender);
    }
    default:
      ++shard_->rejected;
      return reply_error(identity, h, detail::cat("unexpected ", type_name(h.type)));
  }
}

void Server::handle_hello(const std::string& identity, const Message& m) {
  const Header& h = m.h;
  auto j = nlohmann::json::parse(m.payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return reply_error(identity, h, "hello: bad JSON");
  if (!configured_) {
    const std::string why = learn(j);
    if (!why.empty()) {
      log_info(opts_.name, ": worker ", h.sender, ": ", why);
      return reply_error(identity, h, why);
    }
  }
  for (auto it = opts_.job.begin(); it != opts_.job.end(); ++it) {
    if (!j.contains(it.key()) || j[it.key()] != it.value()) {
      const std::string why =
          detail::cat(opts_.name, ": worker ", h.sender, " disagrees on ", it.key(),
                      ": server has ", it.value().dump(), ", worker has ",
                      j.contains(it.key()) ? j[it.key()].dump() : "nothing");
      log_info(why);
      return reply_error(identity, h, why);
    }
  }
  // A worker that trained (pushed, or joined a metrics sum) from another process before has died
  // and been started again. One that had not begun training is simply starting (again).
  WorkerProgress& me = progress_[h.sender];
  const bool rejoin =
      !me.identity.empty() && me.identity != identity && (me.steps > 0 || me.sums > 0);
  if (rejoin && (!opts_.async || h.sender == 0)) {
    const std::string why = detail::cat(
        opts_.name, ": worker ", name_workers(opts_, {h.sender}), " came back after it died: ",
        h.sender == 0 ? "the chief cannot rejoin (it initialized the servers and writes the "
                        "checkpoints); restart the whole job (dtrainrun --max-restarts)"
                      : "only asynchronous jobs (--ps-async) take a worker back (a synchronous "
                        "step cannot be pushed twice); restart the whole job (--max-restarts)");
    log_info(why);
    return reply_error(identity, h, why);
  }
  if (rejoin) {
    log_info(opts_.name, ": worker ", name_workers(opts_, {h.sender}),
             " rejoined (a new process) after ", me.steps, " steps");
    // One that said done before (stopped by SIGTERM) trains again: the servers wait for it at
    // the end (they exited while it trained) and in the metrics sums to come.
    shard_->done.erase(h.sender);
  }
  me.identity = identity;
  any_worker_ = true;
  // The chief says where training resumes, so workers joining later start there too.
  if (h.sender == 0 && j.contains("resume") && j["resume"].is_array() && j["resume"].size() >= 2 &&
      j["resume"].size() <= 3) {
    for (size_t k = 0; k < 3; ++k) {
      const bool given = k < j["resume"].size() && j["resume"][k].is_number_unsigned();
      resume_[k] = given ? j["resume"][k].get<uint64_t>() : 0;
    }
  }
  const bool shm = attach_shm(h.sender, j.value("shm", nlohmann::json()));
  nlohmann::json r = {{"initialized", shard_->initialized},
                      {"shm", shm},
                      {"resume", {resume_[0], resume_[1], resume_[2]}},
                      {"offset", shard_->range.offset},
                      {"count", shard_->range.count}};
  if (rejoin) r["rejoin"] = rejoin_point(h.sender);
  const std::string s = r.dump();
  reply(identity, h, MsgType::kHelloOk, s.data(), s.size(), s.size());
}

bool Server::sum_complete(const SumSlot& slot) const {
  for (uint32_t w = 0; w < opts_.num_workers; ++w)
    if (!slot.from.count(w) && !shard_->done.count(w)) return false;
  return true;
}

void Server::finish_sum(uint64_t key) {
  SumSlot& slot = sums_.at(key);
  for (auto& [id, hh] : slot.waiting)
    reply(id, hh, MsgType::kSumResult, slot.values.data(), slot.values.size() * sizeof(double),
          slot.values.size());
  finished_sums_[key] = std::move(slot.values);
  sums_.erase(key);
}

uint64_t Server::steps_of(uint32_t w) const {
  return progress_[w].steps > 0 ? progress_[w].steps : resume_[1];
}

nlohmann::json Server::rejoin_point(uint32_t w) const {
  // Every training worker joins one metrics sum per epoch (the Trainer's), so the sums a worker
  // has joined are the epochs it has finished since the job's resume point.
  const WorkerProgress& p = progress_[w];
  const uint64_t steps = steps_of(w);
  const uint64_t in_epoch = p.sums == 0 ? resume_[2] + (steps - resume_[1]) : steps - p.step_at_sum;
  return {{"epoch", resume_[0] + p.sums},
          {"step", steps},
          {"step_in_epoch", in_epoch},
          {"sum_key", p.sums}};
}

void Server::handle_sum(const std::string& identity, const Message& m) {
  const Header& h = m.h;
  WorkerProgress& p = progress_[h.sender];
  p.sums = std::max(p.sums, h.step + 1);
  p.step_at_sum = steps_of(h.sender);
  if (auto done = finished_sums_.find(h.step); done != finished_sums_.end())
    return reply(identity, h, MsgType::kSumResult, done->second.data(),
                 done->second.size() * sizeof(double), done->second.size());
  SumSlot& slot = sums_[h.step];
  if (slot.values.empty()) {
    slot.values.assign(h.count, 0.0);
    slot.started = std::chrono::steady_clock::now();
  }
  if (!slot.from.insert(h.sender).second)
    return reply_error(identity, h, "sum: this worker already sent this sum");
  if (slot.values.size() != h.count)
    return reply_error(identity, h, "sum: every worker must send the same count");
  for (size_t i = 0; i < h.count; ++i) slot.values[i] += m.doubles()[i];
  slot.waiting.push_back({identity, h});
  if (sum_complete(slot)) finish_sum(h.step);
}

}  // namespace dtrain::ps
