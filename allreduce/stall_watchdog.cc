#include "allreduce/stall_watchdog.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// "rank seq waiting op": one datagram.
std::string encode(size_t rank, uint64_t seq, bool waiting, const std::string& op) {
  return detail::cat("dtrain-hb ", rank, " ", seq, " ", waiting ? 1 : 0, " ", op.substr(0, 200));
}

bool parse_address(const std::string& s, sockaddr_in* a) {
  const size_t c = s.rfind(':');
  if (c == std::string::npos) return false;
  *a = sockaddr_in{};
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(std::stoul(s.substr(c + 1))));
  return inet_pton(AF_INET, s.substr(0, c).c_str(), &a->sin_addr) == 1;
}

}  // namespace

StallOptions stall_options(double warning_s, double timeout_s, const EnvConfig& env) {
  StallOptions s;
  s.warning_s = warning_s >= 0 ? warning_s : env.stall_warning_s.value_or(s.warning_s);
  s.timeout_s = timeout_s >= 0 ? timeout_s : env.stall_timeout_s.value_or(s.timeout_s);
  return s;
}

int StallWatchdog::open_socket(uint16_t* port) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  socklen_t len = sizeof(a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw Error(std::string("stall watchdog: cannot open a UDP socket: ") + std::strerror(errno));
  *port = ntohs(a.sin_port);
  return fd;
}

StallWatchdog::StallWatchdog(size_t rank, std::vector<std::string> peers,
                             std::vector<std::string> names, int socket_fd, StallOptions opts)
    : rank_(rank),
      fd_(socket_fd),
      opts_(opts),
      period_s_(std::max(0.05, std::min(1.0, opts.warning_s / 4))),
      silent_after_s_(std::max(1.5, 3 * period_s_)) {
  const auto now = Clock::now();
  for (size_t r = 0; r < peers.size(); ++r) {
    Peer p;
    p.address = peers[r];
    p.name = r < names.size() ? names[r] : detail::cat("rank ", r);
    p.heard = now;
    peers_.push_back(p);
  }
  thread_ = std::thread([this] { loop(); });
}

StallWatchdog::~StallWatchdog() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  close(fd_);
}

StallWatchdog::Waiting StallWatchdog::waiting(const OpName& what) {
  std::lock_guard<std::mutex> lock(mu_);
  ++seq_;
  in_op_ = true;
  op_ = what.str();
  op_start_ = warned_at_ = Clock::now();
  return Waiting(this);
}

StallWatchdog::Waiting::~Waiting() {
  if (!w_) return;
  std::lock_guard<std::mutex> lock(w_->mu_);
  w_->in_op_ = false;
}

void StallWatchdog::on_timeout(std::function<void()> f) {
  std::lock_guard<std::mutex> lock(mu_);
  on_timeout_ = std::move(f);
}

void StallWatchdog::send_heartbeats() {
  std::string msg;
  {
    std::lock_guard<std::mutex> lock(mu_);
    msg = encode(rank_, seq_, in_op_, op_);
  }
  for (size_t r = 0; r < peers_.size(); ++r) {
    if (r == rank_) continue;
    sockaddr_in a;
    if (!parse_address(peers_[r].address, &a)) continue;
    // Best effort: a full buffer or an unreachable peer is what the silence will show.
    (void)sendto(fd_, msg.data(), msg.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&a),
                 sizeof(a));
  }
}

void StallWatchdog::receive() {
  char buf[512];
  for (;;) {
    const ssize_t n = recv(fd_, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n <= 0) return;
    buf[n] = '\0';
    unsigned long r = 0, seq = 0;
    int waiting = 0, used = 0;
    if (std::sscanf(buf, "dtrain-hb %lu %lu %d %n", &r, &seq, &waiting, &used) < 3) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (r >= peers_.size() || r == rank_) continue;
    Peer& p = peers_[r];
    p.heard = Clock::now();
    p.ever = true;
    p.seq = seq;
    p.waiting = waiting != 0;
    p.op = buf + used;
  }
}

std::string StallWatchdog::describe_peers(uint64_t my_seq) const {
  std::string silent, behind, elsewhere;
  for (size_t r = 0; r < peers_.size(); ++r) {
    if (r == rank_) continue;
    const Peer& p = peers_[r];
    const double quiet = since(p.heard);
    if (quiet > silent_after_s_) {
      silent += detail::cat(silent.empty() ? "" : ", ", p.name,
                            p.ever ? detail::cat(" silent for ", static_cast<int>(quiet), " s")
                                   : std::string(" never heard from"));
    } else if (p.seq == my_seq && p.waiting && in_op_ && p.op != op_) {
      // Both wait, each in another collective: a mismatch (their settings or data differ), not
      // a slow rank.
      elsewhere += detail::cat(elsewhere.empty() ? "" : ", ", p.name, " waits in '", p.op, "'");
    } else if (p.seq < my_seq || (p.seq == my_seq && !p.waiting)) {
      behind += detail::cat(behind.empty() ? "" : ", ", p.name, " is ",
                            p.waiting ? "waiting in '" + p.op + "'" : "not in a collective",
                            p.seq < my_seq ? detail::cat(", ", my_seq - p.seq, " behind") : "");
    }
  }
  std::string s;
  if (!silent.empty()) s = "not responding: " + silent;
  if (!behind.empty()) s += (s.empty() ? "" : "; ") + std::string("not arrived: ") + behind;
  if (!elsewhere.empty())
    s += (s.empty() ? "" : "; ") + elsewhere + " while this rank waits in '" + op_ +
         "': the ranks are not running the same collective (do their settings or data differ?)";
  return s.empty() ? "every other rank is waiting too" : s;
}

void StallWatchdog::loop() {
  const double period = period_s_;
  auto next_beat = Clock::now();
  while (!stop_) {
    if (Clock::now() >= next_beat) {
      send_heartbeats();
      next_beat = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(period));
    }
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(period * 1000 / 2) + 1);
    receive();
    std::unique_lock<std::mutex> lock(mu_);
    if (!in_op_) continue;
    const double waited = since(op_start_);
    if (opts_.timeout_s > 0 && waited >= opts_.timeout_s) {
      const std::string line =
          detail::cat("stall: ending the job: waited ", static_cast<int>(waited), " s in '", op_,
                      "' (--stall-timeout ", opts_.timeout_s, "); ", describe_peers(seq_));
      auto f = on_timeout_;
      lock.unlock();
      log_info(line);
      if (f) f();
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(kStallExitCode);
    }
    if (opts_.warning_s > 0 && since(warned_at_) >= opts_.warning_s) {
      warned_at_ = Clock::now();
      const std::string line = detail::cat("stall: waiting ", static_cast<int>(waited), " s in '",
                                           op_, "'; ", describe_peers(seq_));
      lock.unlock();
      log_info(line);
    }
  }
}

}  // namespace dtrain
