#include "paramserver/server.h"

#include <algorithm>
#include <cstring>

#include "paramserver/curve.h"
#include "paramserver/zmq_util.h"
#include "runtime/log.h"

namespace dtrain::ps {

Server::Server(zmq::context_t& ctx, ServerOptions opts)
    : opts_(std::move(opts)),
      range_(shard_ranges(opts_.param_count, opts_.num_servers).at(opts_.index)),
      sock_(ctx, zmq::socket_type::router),
      opt_(opts_.optimizer, range_.count),
      params_(range_.count, 0.0f),
      accum_(range_.count, 0.0f),
      shm_(opts_.num_workers),
      pushed_(opts_.num_workers, 0) {
  chunk_ = std::max<size_t>(1, std::min(opts_.chunk_floats ? opts_.chunk_floats : range_.count,
                                        std::max<size_t>(range_.count, 1)));
  chunks_.resize(range_.count ? (range_.count + chunk_ - 1) / chunk_ : 0);
  for (auto& ch : chunks_) {
    ch.from.assign(opts_.num_workers, 0);
    ch.in_shm.assign(opts_.num_workers, nullptr);
  }
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
  log_debug(opts_.name, " serving parameters [", range_.offset, ", ", range_.offset + range_.count,
            ") on ", opts_.bind,
            opts_.async ? (opts_.max_staleness ? " (bounded staleness)" : " (async)") : " (sync)");
}

void Server::reply(const std::string& identity, const Header& req, MsgType type,
                   const void* payload, size_t bytes, uint64_t count, uint64_t step, bool zero_copy,
                   uint64_t offset) {
  Header h;
  h.type = uint16_t(type);
  h.job_id = opts_.job_id;
  h.sender = uint32_t(opts_.index);
  h.request = req.request;
  h.step = step == UINT64_MAX ? version_ : step;
  h.offset = offset == UINT64_MAX ? range_.offset : offset;
  h.count = count;
  sock_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
  sock_.send(zmq::buffer(&h, sizeof(h)), zmq::send_flags::sndmore);
  if (zero_copy && bytes > 0) {
    zmq::message_t body(const_cast<void*>(payload), bytes, nullptr, nullptr);
    sock_.send(body, zmq::send_flags::none);
  } else {
    sock_.send(zmq::buffer(payload, bytes), zmq::send_flags::none);
  }
}

void Server::reply_error(const std::string& identity, const Header& req, const std::string& why) {
  reply(identity, req, MsgType::kError, why.data(), why.size(), why.size());
}

void Server::reply_params(const std::string& identity, const Header& req) {
  // In sync mode the parameters change only after every worker has pushed again, which each does
  // only after receiving this reply whole: ZeroMQ may send them without a copy. Async updates can
  // come at any time, so there they are copied.
  send_params(identity, req, 0, range_.count, /*zero_copy=*/!opts_.async);
}

void Server::send_params(const std::string& identity, const Header& req, size_t rel, size_t n,
                         bool zero_copy) {
  if (ShmSegment* seg = req.sender < shm_.size() ? shm_[req.sender].get() : nullptr) {
    // The worker reads this area only after this answer, and asks again only after reading it.
    std::memcpy(seg->params() + rel, params_.data() + rel, n * sizeof(float));
    return reply(identity, req, MsgType::kParamsShm, nullptr, 0, n, UINT64_MAX, false,
                 range_.offset + rel);
  }
  reply(identity, req, MsgType::kParams, params_.data() + rel, n * sizeof(float), n, UINT64_MAX,
        zero_copy, range_.offset + rel);
}

const float* Server::push_floats(const std::string& identity, const Message& m) {
  if (m.type() == MsgType::kPush) return m.floats();
  const Header& h = m.h;
  ShmSegment* seg = shm_[h.sender].get();
  const uint64_t rel = h.offset - range_.offset;
  if (!seg || h.offset < range_.offset || rel > range_.count || h.count > range_.count - rel) {
    ++rejected_;
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
  shm_[worker] = ShmSegment::open(name, range_.count, nonce, &why);
  if (!shm_[worker])
    log_debug(opts_.name, ": worker ", worker, " offered shared memory ", name,
              " that is not usable here (", why, "); using TCP payloads");
  return shm_[worker] != nullptr;
}

void Server::run() {
  started_ = last_message_ = std::chrono::steady_clock::now();
  for (;;) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(200));
    if (item.revents & ZMQ_POLLIN) {
      std::vector<zmq::message_t> parts = recv_multipart(sock_);
      last_message_ = std::chrono::steady_clock::now();
      if (parts.size() != 2 && parts.size() != 3) {
        ++rejected_;
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
        ++rejected_;
        log_info(opts_.name, ": rejected a bad frame: ", e.what());
        Header h;
        reply_error(identity, h, std::string("rejected: ") + e.what());
      }
      if (done_.size() == opts_.num_workers) {
        log_debug(opts_.name, ": every worker is done; exiting");
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
  if (!opts_.async && step_open_ && seconds_since(step_started_) > opts_.step_timeout_s) {
    std::string missing;
    for (size_t w = 0; w < opts_.num_workers; ++w) {
      bool all = true;
      for (const auto& ch : chunks_) all = all && (ch.applied || ch.from[w]);
      if (!all && !done_.count(uint32_t(w)))
        missing += (missing.empty() ? "" : ", ") + std::to_string(w);
    }
    const std::string why =
        detail::cat(opts_.name, ": step ", version_, ": no gradient from worker(s) ", missing,
                    " after ", opts_.step_timeout_s, " s; the worker(s) may have died");
    for (auto& ch : chunks_)
      for (auto& [id, h] : ch.waiting) reply_error(id, h, why);
    throw TimeoutError(why);
  }
  // Workers also meet between steps, to sum the epoch's metrics: one that died there is named
  // the same way (any mode).
  for (auto& [key, slot] : sums_) {
    if (slot.waiting.empty() || seconds_since(slot.started) <= opts_.step_timeout_s) continue;
    std::string missing;
    for (size_t w = 0; w < opts_.num_workers; ++w)
      if (!slot.from.count(uint32_t(w)) && !done_.count(uint32_t(w)))
        missing += (missing.empty() ? "" : ", ") + std::to_string(w);
    const std::string why =
        detail::cat(opts_.name, ": metrics sum: no answer from worker(s) ", missing, " after ",
                    opts_.step_timeout_s, " s; the worker(s) may have died");
    for (auto& [id, h] : slot.waiting) reply_error(id, h, why);
    throw TimeoutError(why);
  }
}

void Server::handle(const std::string& identity, const Message& m) {
  const Header& h = m.h;
  if (h.job_id != opts_.job_id) {
    ++rejected_;
    log_info(opts_.name, ": rejected a ", type_name(h.type), " from another job (job id ", h.job_id,
             ", this job is ", opts_.job_id, ")");
    return reply_error(identity, h, "message from another job");
  }
  if (h.sender >= opts_.num_workers) {
    ++rejected_;
    log_info(opts_.name, ": rejected a ", type_name(h.type), " from sender ", h.sender,
             " (this job has ", opts_.num_workers, " workers)");
    return reply_error(identity, h,
                       detail::cat("sender ", h.sender, " is not a worker of this job"));
  }
  const auto need_range = [&](size_t elems_per_param) {
    if (h.offset != range_.offset || h.count != range_.count * elems_per_param) {
      ++rejected_;
      log_info(opts_.name, ": rejected a ", type_name(h.type), " from worker ", h.sender, " for [",
               h.offset, ", +", h.count, "); this server owns [", range_.offset, ", +",
               range_.count, ")");
      reply_error(identity, h, "range does not match this server's shard");
      return false;
    }
    return true;
  };
  switch (m.type()) {
    case MsgType::kHello: {
      auto j = nlohmann::json::parse(m.payload, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return reply_error(identity, h, "hello: bad JSON");
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
      any_worker_ = true;
      // The chief says where training resumes, so workers joining later start there too.
      if (h.sender == 0 && j.contains("resume") && j["resume"].is_array() &&
          j["resume"].size() == 2) {
        resume_[0] = j["resume"][0].get<uint64_t>();
        resume_[1] = j["resume"][1].get<uint64_t>();
      }
      const bool shm = attach_shm(h.sender, j.value("shm", nlohmann::json()));
      const nlohmann::json r = {{"initialized", initialized_},
                                {"shm", shm},
                                {"resume", {resume_[0], resume_[1]}},
                                {"offset", range_.offset},
                                {"count", range_.count}};
      const std::string s = r.dump();
      return reply(identity, h, MsgType::kHelloOk, s.data(), s.size(), s.size());
    }
    case MsgType::kInit: {
      const size_t slots = opt_.slots();
      if (!need_range(1 + slots)) return;
      std::memcpy(params_.data(), m.floats(), range_.count * sizeof(float));
      std::memcpy(opt_.state(), m.floats() + range_.count, range_.count * slots * sizeof(float));
      opt_.set_steps(h.step);
      version_ = 0;
      initialized_ = true;
      return reply(identity, h, MsgType::kInitOk, nullptr, 0, 0);
    }
    case MsgType::kPull:
      if (!initialized_) return reply_error(identity, h, "parameters are not initialized yet");
      return reply_params(identity, h);
    case MsgType::kGetState: {
      std::vector<float> s(params_);
      s.insert(s.end(), opt_.state(), opt_.state() + opt_.state_size());
      // The optimizer's step count rides in the header: Adam's bias correction needs it.
      reply(identity, h, MsgType::kState, s.data(), s.size() * sizeof(float), s.size(),
            opt_.steps());
      return;
    }
    case MsgType::kPush:
    case MsgType::kPushShm: {
      const float* g = push_floats(identity, m);
      if (!g) return;
      if (!opts_.async) return push_sync(identity, h, g, m.type() == MsgType::kPushShm);
      if (!need_range(1)) return;
      if (!initialized_) return reply_error(identity, h, "parameters are not initialized yet");
      opt_.step(params_.data(), g, 1.0f);
      ++version_;
      pushed_[h.sender] = h.step + 1;
      if (opts_.max_staleness == 0) return reply_params(identity, h);
      stale_waiting_.push_back({identity, h});
      release_stale_waiters();
      return;
    }
    case MsgType::kSum: {
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
      if (slot.waiting.size() + done_.size() >= opts_.num_workers) {
        for (auto& [id, hh] : slot.waiting)
          reply(id, hh, MsgType::kSumResult, slot.values.data(),
                slot.values.size() * sizeof(double), slot.values.size());
        sums_.erase(h.step);
      }
      return;
    }
    case MsgType::kDone:
      done_.insert(h.sender);
      if (h.sender == 0) chief_done_ = true;
      reply(identity, h, MsgType::kDoneOk, nullptr, 0, 0);
      // A finished worker no longer holds back the others.
      if (!opts_.async)
        for (size_t k = 0; k < chunks_.size(); ++k)
          if (!chunks_[k].applied && chunks_[k].arrived > 0 &&
              chunks_[k].arrived + done_.size() >= opts_.num_workers)
            apply_chunk(k);
      release_stale_waiters();
      return;
    default:
      ++rejected_;
      return reply_error(identity, h, detail::cat("unexpected ", type_name(h.type)));
  }
}

void Server::push_sync(const std::string& identity, const Header& h, const float* g, bool in_shm) {
  const uint64_t rel = h.offset - range_.offset;
  const bool inside = h.offset >= range_.offset && rel < range_.count;
  const size_t k = inside ? rel / chunk_ : 0;
  if (!inside || rel % chunk_ != 0 || h.count != chunk_len(k)) {
    ++rejected_;
    log_info(opts_.name, ": rejected a push from worker ", h.sender, " for [", h.offset, ", +",
             h.count, "): sync pushes are the ", chunk_, "-float chunks of [", range_.offset, ", +",
             range_.count, ")");
    return reply_error(identity, h, "push is not a chunk of this server's shard");
  }
  if (!initialized_) return reply_error(identity, h, "parameters are not initialized yet");
  Chunk& ch = chunks_[k];
  if (ch.from[h.sender]) {
    ++rejected_;
    return reply_error(identity, h,
                       detail::cat("worker ", h.sender, " pushed chunk ", k, " twice in a step"));
  }
  if (!step_open_) {
    step_open_ = true;
    step_started_ = std::chrono::steady_clock::now();
  }
  if (in_shm) {
    ch.in_shm[h.sender] = g;
  } else {
    float* acc = accum_.data() + k * chunk_;
    if (!ch.accumulated)
      std::memcpy(acc, g, h.count * sizeof(float));
    else
      for (size_t i = 0; i < h.count; ++i) acc[i] += g[i];
    ch.accumulated = true;
  }
  ch.from[h.sender] = 1;
  ++ch.arrived;
  ch.waiting.push_back({identity, h});
  if (ch.arrived + done_.size() >= opts_.num_workers) apply_chunk(k);
}

void Server::apply_chunk(size_t k) {
  Chunk& ch = chunks_[k];
  const size_t off = k * chunk_, n = chunk_len(k);
  // The workers' gradients in worker order (those in shared memory read in place), then the sum
  // of those that came as payloads.
  std::vector<const float*>& g = sum_inputs_;
  g.clear();
  for (const float* p : ch.in_shm)
    if (p) g.push_back(p);
  if (ch.accumulated) g.push_back(accum_.data() + off);
  opt_.step_sum_range(params_.data(), g.data(), g.size(), off, n,
                      1.0f / static_cast<float>(ch.arrived), opt_.steps() + 1);
  // Zero-copy is safe: this chunk changes again only after every worker has pushed it for the
  // next step, which each does only after receiving this reply whole.
  for (auto& [id, h] : ch.waiting) send_params(id, h, off, n, /*zero_copy=*/true);
  ch.waiting.clear();
  ch.applied = true;
  if (++chunks_applied_ < chunks_.size()) return;
  // The step is complete on this server.
  opt_.set_steps(opt_.steps() + 1);
  ++version_;
  chunks_applied_ = 0;
  step_open_ = false;
  for (auto& c : chunks_) {
    std::fill(c.from.begin(), c.from.end(), 0);
    std::fill(c.in_shm.begin(), c.in_shm.end(), nullptr);
    c.accumulated = false;
    c.arrived = 0;
    c.applied = false;
  }
}

void Server::release_stale_waiters() {
  uint64_t slowest = UINT64_MAX;
  for (size_t w = 0; w < opts_.num_workers; ++w)
    if (!done_.count(uint32_t(w))) slowest = std::min(slowest, pushed_[w]);
  auto it = stale_waiting_.begin();
  while (it != stale_waiting_.end()) {
    // The push for step t is answered once the slowest worker has pushed step t - S.
    if (slowest == UINT64_MAX || it->second.step + 1 <= slowest + opts_.max_staleness) {
      reply_params(it->first, it->second);
      it = stale_waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace dtrain::ps
