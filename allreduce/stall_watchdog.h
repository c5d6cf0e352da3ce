// StallWatchdog: a rank that waits too long in a collective says so, naming the ranks it waits
// for, and ends the job when waiting becomes hopeless (Horovod's stall check, PyTorch's
// collective watchdog).
//
// How it knows who: every rank sends every other rank a small UDP datagram once a second with
// its progress (how many collectives it has begun, whether it is waiting in one, and which). A
// rank stopped by SIGSTOP, a hung process, or a machine behind a dead link sends nothing, so the
// waiting ranks can name it ("rank 1 (node2) silent for 61 s"); a rank that is alive but has not
// reached the operation is named by where it is ("rank 2 (node1) is at 'metrics sum', 3
// collectives behind"). The datagrams travel outside MPI, so they keep flowing while MPI blocks.
//
// After `warning_s` in one operation: a log line, repeated every warning_s. After `timeout_s`
// (0: never): the line "stall: ending the job: ..." and the process exits with kStallExitCode,
// which makes mpirun stop every rank (NCCL communicators are aborted first through on_timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "allreduce/communicator.h"
#include "runtime/env.h"

namespace dtrain {

constexpr int kStallExitCode = 124;

struct StallOptions {
  double warning_s = 60;   // --stall-warning, DTRAIN_STALL_WARNING
  double timeout_s = 600;  // --stall-timeout, DTRAIN_STALL_TIMEOUT; 0: never end the job
};

// The flags' values where given (>= 0), else DTRAIN_STALL_WARNING / DTRAIN_STALL_TIMEOUT, else
// the defaults above.
StallOptions stall_options(double warning_s, double timeout_s, const EnvConfig& env);

class StallWatchdog {
 public:
  // peers[r]: "ip:port" of rank r's heartbeat socket (this rank's own entry is ignored);
  // names[r]: how rank r is named in messages ("rank 1 (node2)"). socket_fd: this rank's bound
  // UDP socket (owned from now on).
  StallWatchdog(size_t rank, std::vector<std::string> peers, std::vector<std::string> names,
                int socket_fd, StallOptions opts);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // Binds a UDP socket on every address, port chosen by the kernel; returns it and its port.
  static int open_socket(uint16_t* port);

  // Marks this rank as waiting in `what` until the returned guard goes.
  class Waiting {
   public:
    explicit Waiting(StallWatchdog* w) : w_(w) {}
    Waiting(Waiting&& o) noexcept : w_(o.w_) { o.w_ = nullptr; }
    ~Waiting();

   private:
    StallWatchdog* w_;
  };
  Waiting waiting(const OpName& what);

  // Called (from the watchdog's thread) just before the process exits on a timeout.
  void on_timeout(std::function<void()> f);

  // The line a waiting rank would log now (for tests): who it waits for and why.
  std::string describe_peers(uint64_t my_seq) const;

 private:
  void loop();
  void send_heartbeats();
  void receive();

  struct Peer {
    std::string address, name;
    std::chrono::steady_clock::time_point heard;
    bool ever = false;
    uint64_t seq = 0;
    bool waiting = false;
    std::string op;
  };
  size_t rank_;
  int fd_;
  StallOptions opts_;
  double period_s_;        // between heartbeats
  double silent_after_s_;  // a peer unheard for longer is "not responding"
  std::vector<Peer> peers_;
  mutable std::mutex mu_;
  uint64_t seq_ = 0;  // collectives begun
  bool in_op_ = false;
  std::string op_;
  std::chrono::steady_clock::time_point op_start_, warned_at_;
  std::function<void()> on_timeout_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dtrain
