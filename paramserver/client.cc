#include "paramserver/client.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "paramserver/curve.h"
#include "paramserver/zmq_util.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"
#include "runtime/trainer.h"

namespace dtrain::ps {

// Where a server waits for other workers (a synchronous step, a metrics sum, a bounded-staleness
// push) it names the missing ones after --step-timeout and answers the waiting workers with that;
// a worker gives it this much longer before giving up on the server itself, so the message that
// names the culprit arrives first (with equal timeouts the two raced, and a partition could end
// the job naming the server instead of the worker that was cut off).
constexpr double kServerSpeaksFirstS = 2.0;

ParameterServerSync::ParameterServerSync(zmq::context_t& ctx, ClientOptions opts)
    : GradientSync({"ps", opts.worker_rank, opts.num_workers}), opts_(std::move(opts)) {
  if (opts_.servers.empty()) throw InputError("parameter-server mode needs at least one ps task");
  if (opts_.server_names.size() != opts_.servers.size()) opts_.server_names = opts_.servers;
  for (size_t s = 0; s < opts_.servers.size(); ++s) {
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    if (opts_.curve) apply_client_curve(sock, *opts_.curve);
    sock.connect(opts_.servers[s]);
    socks_.push_back(std::move(sock));
  }
  expected_request_.assign(socks_.size(), 0);
}

std::vector<size_t> ParameterServerSync::all_servers() const {
  std::vector<size_t> v(socks_.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

uint32_t ParameterServerSync::send(size_t server, MsgType type, uint64_t step, uint64_t offset,
                                   const void* payload, size_t bytes, uint64_t count,
                                   bool zero_copy) {
  Header h;
  h.type = uint16_t(type);
  h.job_id = opts_.job_id;
  h.sender = uint32_t(opts_.worker_rank);
  h.request = next_request_++;
  h.step = step;
  h.offset = offset;
  h.count = count;
  expected_request_[server] = h.request;
  // Never block: with no connection up (a server not started yet, a refused handshake) the send
  // fails at once, and the caller's retry or timeout says what is missing.
  // (That is an empty result, not an error: errors are real failures, named below.)
  zmq::socket_t& sock = socks_[server];
  const char* what = type_name(h.type);
  const std::string& peer = opts_.server_names[server];
  bool sent = send_or_throw(sock, zmq::buffer(&h, sizeof(h)),
                            zmq::send_flags::sndmore | zmq::send_flags::dontwait, "worker ",
                            opts_.worker_rank, ": send ", what, " to ", peer)
                  .has_value();
  if (sent) {
    if (zero_copy && bytes > 0) {
      zmq::message_t body(const_cast<void*>(payload), bytes, nullptr, nullptr);
      send_or_throw(sock, body, zmq::send_flags::none, "worker ", opts_.worker_rank, ": send ",
                    what, " to ", peer);
    } else {
      send_or_throw(sock, zmq::buffer(payload, bytes), zmq::send_flags::none, "worker ",
                    opts_.worker_rank, ": send ", what, " to ", peer);
    }
  }
  if (!sent) {
    log_debug("worker ", opts_.worker_rank, ": ", opts_.server_names[server],
              " is not connected yet; ", type_name(h.type), " not sent");
  }
  return h.request;
}

std::ostream& operator<<(std::ostream& os, const WaitFor& w) {
  os << w.prefix;
  if (w.step != UINT64_MAX) os << ' ' << w.step;
  return os << w.suffix;
}

std::optional<ParameterServerSync::Reply> ParameterServerSync::recv_reply(size_t s,
                                                                          const WaitFor& what) {
  zmq::message_t head, body;
  zmq::socket_t& sock = socks_[s];
  const std::string& peer = opts_.server_names[s];
  if (!recv_or_throw(sock, head, zmq::recv_flags::dontwait, "worker ", opts_.worker_rank, ": ",
                     what, ": recv from ", peer))
    return std::nullopt;
  if (head.more())
    (void)recv_or_throw(sock, body, zmq::recv_flags::none, "worker ", opts_.worker_rank, ": ", what,
                        ": recv from ", peer);
  bool more = body.more();
  while (more) {  // more frames than a message has: drain them, the decode below rejects it
    zmq::message_t extra;
    (void)recv_or_throw(sock, extra, zmq::recv_flags::none, "worker ", opts_.worker_rank, ": ",
                        what, ": recv from ", peer);
    more = extra.more();
  }
  Reply r;
  try {
    r.h = decode(head.data(), head.size(), body.data(), body.size()).h;
  } catch (const ProtocolError& e) {
    throw PeerError(detail::cat("worker ", opts_.worker_rank, ": ", what, ": bad reply from ",
                                opts_.server_names[s], ": ", e.what()));
  }
  // Small messages live inside the message object itself, so the view is taken after the move.
  r.body = std::move(body);
  r.payload = std::string_view(static_cast<const char*>(r.body.data()), r.body.size());
  return r;
}

void ParameterServerSync::stop_if_stuck(double waited, const WaitFor& what,
                                        const std::vector<size_t>& servers) {
  // A SIGTERM normally stops the job at the next step boundary; a wait that outlasts a second
  // after it is one for servers that were stopped with us (the launcher stops every task):
  // waiting on ended in the launcher's SIGKILL with nothing said.
  if (waited < 1.0 || !stop_requested()) return;
  finish(false);  // says done, as a stop at a step boundary does
  throw StopRequested(detail::cat("worker ", opts_.worker_rank,
                                  ": stopped by SIGTERM after waiting ", static_cast<int>(waited),
                                  " s in ", what, " for ", NameList{opts_.server_names, &servers},
                                  " (stopped too?); the job keeps its last checkpoint"));
}

std::vector<ParameterServerSync::Reply> ParameterServerSync::wait_replies(
    const std::vector<size_t>& servers, double timeout_s, const WaitFor& what) {
  std::vector<Reply> out(socks_.size());
  std::vector<bool> got(socks_.size(), true);
  for (size_t s : servers) got[s] = false;
  const auto t0 = std::chrono::steady_clock::now();
  size_t left = servers.size();
  std::vector<zmq::pollitem_t> items;
  double warned_after = 0;  // seconds: the last stall warning
  while (left > 0) {
    items.clear();
    std::vector<size_t> which;
    for (size_t s : servers)
      if (!got[s]) {
        items.push_back({socks_[s].handle(), 0, ZMQ_POLLIN, 0});
        which.push_back(s);
      }
    const double remaining = timeout_s - seconds_since(t0);
    if (remaining <= 0) {
      std::string silent;
      for (size_t s : which) silent += (silent.empty() ? "" : ", ") + opts_.server_names[s];
      throw TimeoutError(detail::cat("worker ", opts_.worker_rank, ": ", what, ": no answer from ",
                                     silent, " within ", timeout_s, " s"));
    }
    const double waited = seconds_since(t0);
    stop_if_stuck(waited, what, which);
    if (opts_.stall_warning_s > 0 && waited >= warned_after + opts_.stall_warning_s) {
      warned_after = waited;
      log_info("stall: worker ", opts_.worker_rank, " has waited ", static_cast<int>(waited),
               " s in ", what, " for ", NameList{opts_.server_names, &which}, " (timeout ",
               timeout_s, " s)");
    }
    poll_or_throw(
        items.data(), items.size(),
        std::chrono::milliseconds(std::max<long>(1, std::min<long>(200, long(remaining * 1e3)))),
        "worker ", opts_.worker_rank, ": ", what, ": poll ", NameList{opts_.server_names, &which});
    for (size_t i = 0; i < items.size(); ++i) {
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      const size_t s = which[i];
      std::optional<Reply> r = recv_reply(s, what);
      if (!r) continue;
      if (r->h.request != expected_request_[s]) continue;  // a stale answer to an earlier retry
      if (r->h.type == uint16_t(MsgType::kError))
        throw PeerError(detail::cat("worker ", opts_.worker_rank, ": ", what, ": ",
                                    opts_.server_names[s], " answered: ", std::string(r->payload)));
      out[s] = std::move(*r);
      got[s] = true;
      --left;
    }
  }
  return out;
}

ResumePoint ParameterServerSync::start(Model& model, Optimizer& opt, const nlohmann::json& job,
                                       ResumePoint chief_resume, Timeline& timeline) {
  timeline_ = &timeline;
  if (!model.on_host())
    throw InputError(detail::cat("ps workers train on the CPU backend (the model is on ",
                                 model.backend().name(), "); pass --device cpu"));
  ranges_ = shard_ranges(model.param_count(), socks_.size());
  const bool chief = opts_.worker_rank == 0;
  nlohmann::json hello = opts_.job;
  if (chief) hello["resume"] = {chief_resume.epoch, chief_resume.step, chief_resume.step_in_epoch};
  ResumePoint resume = chief_resume;
  (void)job;
  // One hello per server: each offers its own shared-memory segment.
  shm_.clear();
  shm_.resize(socks_.size());
  std::vector<std::string> hellos(socks_.size());
  std::random_device rd;
  for (size_t s = 0; s < socks_.size(); ++s) {
    nlohmann::json hs = hello;
    if (opts_.shm && ranges_[s].count > 0) {
      const uint64_t nonce = (uint64_t(rd()) << 32) ^ rd();
      const std::string name =
          detail::cat("/dtrain-", std::hex, opts_.job_id, "-w", std::dec, opts_.worker_rank, "-s",
                      s, "-", getpid(), "-", std::hex, nonce & 0xffffff);
      try {
        shm_[s] = ShmSegment::create(name, ranges_[s].count, nonce);
        hs["shm"] = {{"name", name}, {"nonce", nonce}};
      } catch (const Error& e) {
        log_debug("worker ", opts_.worker_rank, ": no shared memory for ", opts_.server_names[s],
                  " (", e.what(), "); using TCP payloads");
      }
    }
    hellos[s] = hs.dump();
  }
  // Tasks start in any order: say hello every half second until every server answers, or the
  // start timeout passes and the error names who is missing.
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<size_t> pending = all_servers();
  std::vector<nlohmann::json> answers(socks_.size());
  // SIGTERM while waiting (the launcher stopping a job whose ps task failed): stop now, with the
  // shared-memory names removed as the exception unwinds (it waited out --start-timeout, and the
  // launcher's SIGKILL then left the segments in /dev/shm).
  auto stop_if_asked = [this] {
    if (stop_requested())
      throw StopRequested(detail::cat("worker ", opts_.worker_rank,
                                      ": stopped by SIGTERM while starting (before any step)"));
  };
  while (!pending.empty()) {
    stop_if_asked();
    for (size_t s : pending)
      send(s, MsgType::kHello, 0, 0, hellos[s].data(), hellos[s].size(), hellos[s].size());
    try {
      auto rs = wait_replies(pending, 0.5, "start-up");
      for (size_t s : pending) answers[s] = nlohmann::json::parse(std::string(rs[s].payload));
    } catch (const TimeoutError&) {
      if (seconds_since(t0) > opts_.start_timeout_s) {
        std::string missing;
        for (size_t s : pending) missing += (missing.empty() ? "" : ", ") + opts_.server_names[s];
        throw TimeoutError(detail::cat("worker ", opts_.worker_rank, ": ps task(s) ", missing,
                                       " did not answer within ", opts_.start_timeout_s,
                                       " s (--start-timeout); are they running?"));
      }
      continue;  // say hello again; answering twice is harmless
    }
    pending.clear();
  }
  // A server that took a segment has mapped it: its name goes now, so a worker killed while it
  // waits for the chief's initialization leaves nothing in /dev/shm (repeated hellos name the
  // same segment, which the server already holds).
  for (size_t s = 0; s < socks_.size(); ++s)
    if (shm_[s] && answers[s].value("shm", false)) shm_[s]->unlink();
  if (chief) {
    // The chief's parameters and optimizer state (seeded, or from its checkpoint) become the
    // servers'.
    const size_t slots = opt.slots();
    for (size_t s = 0; s < socks_.size(); ++s) {
      const Range& r = ranges_[s];
      std::vector<float> buf(r.count * (1 + slots));
      std::memcpy(buf.data(), model.params() + r.offset, r.count * sizeof(float));
      for (size_t k = 0; k < slots; ++k)
        std::memcpy(buf.data() + r.count * (1 + k),
                    opt.state() + k * model.param_count() + r.offset, r.count * sizeof(float));
      send(s, MsgType::kInit, opt.steps(), r.offset, buf.data(), buf.size() * sizeof(float),
           buf.size());
    }
    wait_replies(all_servers(), opts_.step_timeout_s, "initializing the servers");
  } else {
    // Wait until the chief has initialized every server, then take its parameters.
    for (;;) {
      bool all = true;
      for (size_t s = 0; s < socks_.size(); ++s)
        if (!answers[s].value("initialized", false)) all = false;
      if (all) break;
      stop_if_asked();
      if (seconds_since(t0) > opts_.start_timeout_s)
        throw TimeoutError(detail::cat("worker ", opts_.worker_rank,
                                       ": the chief did not initialize the servers within ",
                                       opts_.start_timeout_s, " s (--start-timeout)"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      for (size_t s = 0; s < socks_.size(); ++s)
        send(s, MsgType::kHello, 0, 0, hellos[s].data(), hellos[s].size(), hellos[s].size());
      auto rs = wait_replies(all_servers(), opts_.step_timeout_s, "waiting for initialization");
      for (size_t s = 0; s < socks_.size(); ++s)
        answers[s] = nlohmann::json::parse(std::string(rs[s].payload));
    }
    const nlohmann::json& at = answers[0]["resume"];
    resume.epoch = at[0].get<uint64_t>();
    resume.step = at[1].get<uint64_t>();
    resume.step_in_epoch = at.size() > 2 ? at[2].get<uint64_t>() : 0;
    // This worker died and the launcher started it again (asynchronous jobs): it continues where
    // the servers saw it last, in the epoch and the metrics sums the others are in.
    if (answers[0].contains("rejoin")) {
      const nlohmann::json& re = answers[0]["rejoin"];
      resume.epoch = re.at("epoch").get<uint64_t>();
      resume.step = re.at("step").get<uint64_t>();
      resume.step_in_epoch = re.at("step_in_epoch").get<uint64_t>();
      sum_key_ = re.at("sum_key").get<uint64_t>();
      log_info("worker ", opts_.worker_rank, " rejoins the job at step ", resume.step, " (",
               resume.step_in_epoch, " steps into epoch ", resume.epoch + 1, ")");
    }
  }
  // Servers that could not map a segment said so; those pairs use payload frames. The names go
  // now: both sides hold their mappings, and nothing is left in /dev/shm whatever happens later.
  size_t mapped = 0;
  for (size_t s = 0; s < socks_.size(); ++s) {
    if (!shm_[s]) continue;
    if (!answers[s].value("shm", false)) shm_[s].reset();
    if (shm_[s]) {
      shm_[s]->unlink();
      ++mapped;
    }
  }
  if (!chief) {
    for (size_t s = 0; s < socks_.size(); ++s)
      send(s, MsgType::kPull, 0, ranges_[s].offset, nullptr, 0, 0);
    auto rs = wait_replies(all_servers(), opts_.step_timeout_s, "pulling parameters");
    for (size_t s = 0; s < socks_.size(); ++s)
      take_params(s, rs[s], ranges_[s].offset, ranges_[s].count, model.params());
  }
  step_ = resume.step;
  grads_ = model.grads();
  if (opts_.sync) {
    // The pieces every server expects, in the order backward finishes them (top of the buffer
    // first). Layers keep reporting whole layers: splitting the first layer's weight-gradient
    // GEMM into chunk-sized blocks measured slower here (34-41k vs 42-44k samples/s, 1 ps + 2
    // workers) and rounds differently; the servers still pipeline a layer's pieces.
    const size_t chunk = std::max<size_t>(1, opts_.chunk_floats);
    for (size_t s = 0; s < ranges_.size(); ++s)
      for (size_t off = 0; off < ranges_[s].count; off += chunk)
        pieces_.push_back({s, ranges_[s].offset + off, std::min(chunk, ranges_[s].count - off)});
    std::sort(pieces_.begin(), pieces_.end(),
              [](const Piece& a, const Piece& b) { return a.offset > b.offset; });
  }
  region_.reset(model.param_count());
  log_debug("worker ", opts_.worker_rank, " connected to ", socks_.size(), " ps task(s), ", mapped,
            " through shared memory");
  return resume;
}

size_t ParameterServerSync::shared_memory_servers() const {
  size_t n = 0;
  for (const auto& s : shm_) n += s != nullptr;
  return n;
}

void ParameterServerSync::take_params(size_t s, const Reply& r, size_t offset, size_t count,
                                      float* params) {
  const bool shm = r.h.type == uint16_t(MsgType::kParamsShm);
  if ((r.h.type != uint16_t(MsgType::kParams) && !shm) || r.h.offset != offset ||
      r.h.count != count || (shm && !shm_[s]))
    throw PeerError(detail::cat("worker ", opts_.worker_rank, ": ", opts_.server_names[s],
                                " answered ", type_name(r.h.type), " [", r.h.offset, ", +",
                                r.h.count, ") for [", offset, ", +", count, ")"));
  const float* src = shm ? shm_[s]->params() + (offset - ranges_[s].offset)
                         : reinterpret_cast<const float*>(r.payload.data());
  std::memcpy(params + offset, src, count * sizeof(float));
}

uint32_t ParameterServerSync::push(size_t s, uint64_t offset, size_t count, const float* g) {
  if (ShmSegment* seg = shm_[s].get()) {
    // The server has answered this piece's last push, so it no longer reads this area.
    std::memcpy(seg->grads() + (offset - ranges_[s].offset), g + offset, count * sizeof(float));
    return send(s, MsgType::kPushShm, step_, offset, nullptr, 0, count);
  }
  return send(s, MsgType::kPush, step_, offset, g + offset, count * sizeof(float), count,
              /*zero_copy=*/true);
}

void ParameterServerSync::apply_params_reply(Model& model) {
  auto rs = wait_replies(all_servers(), opts_.step_timeout_s + kServerSpeaksFirstS,
                         WaitFor("step", pending_step_, " push/pull"));
  for (size_t s = 0; s < socks_.size(); ++s)
    take_params(s, rs[s], ranges_[s].offset, ranges_[s].count, model.params());
  push_outstanding_ = false;
}

bool ParameterServerSync::drain(Model& model) {
  if (!push_outstanding_) return false;
  apply_params_reply(model);
  return true;
}

void ParameterServerSync::send_piece(size_t i) {
  Piece& p = pieces_[i];
  // This part of the gradient buffer is final and is not written again before the server's
  // answer to it (so a payload can be sent from it without a copy).
  p.request = push(p.server, p.offset, p.count, grads_);
  p.sent = true;
}

void ParameterServerSync::ready(size_t offset, size_t count) {
  if (!opts_.sync || pieces_.empty()) return;
  // Out of order: everything not sent yet goes at the end of the step.
  if (!region_.extend(offset, count)) return;
  while (next_piece_ < pieces_.size() && pieces_[next_piece_].offset >= region_.lo())
    send_piece(next_piece_++);
}

void ParameterServerSync::span(const char* name, int64_t from_us) {
  if (timeline_ && timeline_->enabled())
    timeline_->span(name, 1, from_us, timeline_->now_us(), {{"step", step_}});
}

int64_t ParameterServerSync::now_us() const {
  return timeline_ ? timeline_->now_us() : 0;
}

void ParameterServerSync::finish_sync_step(Model& model) {
  // Pieces backward finished went out during backward already; the rest go now.
  const int64_t t_push = now_us();
  for (size_t i = 0; i < pieces_.size(); ++i)
    if (!pieces_[i].sent) send_piece(i);
  span("push", t_push);
  const int64_t t_wait = now_us();
  // Answers come per piece, from every server, in any order.
  std::map<std::pair<size_t, uint32_t>, size_t> outstanding;  // (server, request) -> piece
  for (size_t i = 0; i < pieces_.size(); ++i)
    outstanding[{pieces_[i].server, pieces_[i].request}] = i;
  const auto t0 = std::chrono::steady_clock::now();
  while (!outstanding.empty()) {
    std::vector<zmq::pollitem_t> items;
    for (auto& sock : socks_) items.push_back({sock.handle(), 0, ZMQ_POLLIN, 0});
    poll_or_throw(items.data(), items.size(), std::chrono::milliseconds(200), "worker ",
                  opts_.worker_rank, ": step ", step_, ": poll ", NameList{opts_.server_names});
    for (size_t s = 0; s < socks_.size(); ++s) {
      if (!(items[s].revents & ZMQ_POLLIN)) continue;
      const WaitFor what("step", step_);
      while (std::optional<Reply> r = recv_reply(s, what)) {
        auto it = outstanding.find({s, r->h.request});
        if (it == outstanding.end()) continue;  // an answer to an earlier request
        if (r->h.type == uint16_t(MsgType::kError))
          throw PeerError(detail::cat("worker ", opts_.worker_rank, ": ", what, ": ",
                                      opts_.server_names[s],
                                      " answered: ", std::string(r->payload)));
        const Piece& p = pieces_[it->second];
        take_params(s, *r, p.offset, p.count, model.params());
        outstanding.erase(it);
      }
    }
    // The silent servers are listed only when the wait ends (not on every reply of a step).
    const double waited = seconds_since(t0);
    const double limit = opts_.step_timeout_s + kServerSpeaksFirstS;
    if (!outstanding.empty() && ((waited >= 1.0 && stop_requested()) || waited > limit)) {
      std::set<size_t> in_order;
      for (auto& [key, i] : outstanding) in_order.insert(key.first);
      const std::vector<size_t> silent(in_order.begin(), in_order.end());
      stop_if_stuck(waited, WaitFor("step", step_), silent);
      throw TimeoutError(detail::cat("worker ", opts_.worker_rank, ": step ", step_,
                                     ": no answer from ", NameList{opts_.server_names, &silent},
                                     " within ", limit, " s"));
    }
  }
  span("wait", t_wait);  // for the servers' updated parameters, taken as they come
  for (auto& p : pieces_) p.sent = false;
  next_piece_ = 0;
  region_.reset(model.param_count());
  ++step_;
}

void ParameterServerSync::finish_step(Model& model, Optimizer& /*opt*/) {
  if (opts_.sync) return finish_sync_step(model);
  if (!opts_.overlap) {
    const int64_t t_push = now_us();
    for (size_t s = 0; s < socks_.size(); ++s)
      // The gradient buffer is not touched again before the server's answer.
      push(s, ranges_[s].offset, ranges_[s].count, model.grads());
    span("push", t_push);
    pending_step_ = step_;
    push_outstanding_ = true;
    const int64_t t_wait = now_us();
    apply_params_reply(model);
    span("wait", t_wait);
    ++step_;
    return;
  }
  // Async with overlap: the answer to the previous push (the servers' parameters after it) is
  // taken now, after this step's compute, and this step's push goes out to be answered while the
  // next step computes. The gradient is copied, since the next backward overwrites the buffer.
  const int64_t t_wait = now_us();
  drain(model);
  span("wait", t_wait);
  const int64_t t_push = now_us();
  for (size_t s = 0; s < socks_.size(); ++s) {
    if (shm_[s]) {
      push(s, ranges_[s].offset, ranges_[s].count, model.grads());  // the segment is the copy
    } else {
      staged_grads_.resize(model.param_count());
      std::memcpy(staged_grads_.data() + ranges_[s].offset, model.grads() + ranges_[s].offset,
                  ranges_[s].count * sizeof(float));
      push(s, ranges_[s].offset, ranges_[s].count, staged_grads_.data());
    }
  }
  span("push", t_push);
  pending_step_ = step_;
  push_outstanding_ = true;
  ++step_;
}

void ParameterServerSync::sum(double* values, size_t n) {
  if (push_outstanding_)
    throw Error("ParameterServerSync::sum with a push outstanding (call gather_state first)");
  send(0, MsgType::kSum, sum_key_++, 0, values, n * sizeof(double), n);
  auto rs = wait_replies({0}, opts_.step_timeout_s + kServerSpeaksFirstS, "summing metrics");
  if (rs[0].payload.size() != n * sizeof(double))
    throw PeerError("metrics sum: reply of the wrong size");
  std::memcpy(values, rs[0].payload.data(), n * sizeof(double));
}

void ParameterServerSync::gather_state(Model& model, Optimizer& opt) {
  drain(model);
  if (opts_.worker_rank != 0) return;  // only the chief checkpoints
  const size_t slots = opt.slots(), n = model.param_count();
  // Area k of server s's range: 0 the parameters, k the optimizer's slot k - 1.
  auto area = [&](size_t s, size_t k) {
    const size_t off = ranges_[s].offset;
    return k == 0 ? model.params() + off : opt.state() + (k - 1) * n + off;
  };
  std::vector<size_t> by_shm, by_payload;
  for (size_t s = 0; s < socks_.size(); ++s) (shm_[s] ? by_shm : by_payload).push_back(s);
  uint64_t steps = 0;
  for (size_t s : by_payload) send(s, MsgType::kGetState, 0, ranges_[s].offset, nullptr, 0, 0);
  if (!by_payload.empty()) {
    auto rs = wait_replies(by_payload, opts_.step_timeout_s, "fetching state for a checkpoint");
    for (size_t s : by_payload) {
      const size_t count = ranges_[s].count;
      if (rs[s].payload.size() != count * (1 + slots) * sizeof(float))
        throw PeerError(detail::cat(opts_.server_names[s], " sent a state of the wrong size"));
      const float* p = reinterpret_cast<const float*>(rs[s].payload.data());
      for (size_t k = 0; k <= slots; ++k)
        std::memcpy(area(s, k), p + count * k, count * sizeof(float));
      steps = rs[s].h.step;
    }
  }
  // A server on this machine copies each area into the pair's segment: one memcpy each way
  // instead of a transfer (a 3 MB state: 6-8 ms through the socket here).
  for (size_t k = 0; k <= slots && !by_shm.empty(); ++k) {
    for (size_t s : by_shm) send(s, MsgType::kGetStateShm, k, ranges_[s].offset, nullptr, 0, 0);
    auto rs = wait_replies(by_shm, opts_.step_timeout_s, "fetching state for a checkpoint");
    for (size_t s : by_shm) {
      if (rs[s].h.type != uint16_t(MsgType::kStateShm) || rs[s].h.count != ranges_[s].count)
        throw PeerError(detail::cat(opts_.server_names[s], " sent a state of the wrong size"));
      std::memcpy(area(s, k), shm_[s]->params(), ranges_[s].count * sizeof(float));
      steps = rs[s].h.step;
    }
  }
  opt.set_steps(steps);
}

void ParameterServerSync::finish(bool ok) {
  if (finished_) return;
  finished_ = true;
  if (push_outstanding_ && ok) {
    try {
      wait_replies(all_servers(), opts_.step_timeout_s, "the last push");
    } catch (const Error& e) {
      log_info("note: ", e.what());
    }
    push_outstanding_ = false;
  }
  for (size_t s = 0; s < socks_.size(); ++s) send(s, MsgType::kDone, step_, 0, nullptr, 0, 0);
  if (!ok) return;
  try {
    wait_replies(all_servers(), 10, "saying done");
  } catch (const Error& e) {
    log_info("note: ", e.what());
  }
}

}  // namespace dtrain::ps
