// dtrain_bench allreduce: nccl-tests' all_reduce_perf over the Communicator. For each size from
// -b to -e (times -f), -w warm-up and -n timed iterations; prints time, algbw = bytes/time and
// busbw = algbw * 2(n-1)/n (GB = 1e9), checks the result (-c), and times a plain MPI_Allreduce of
// the same buffer in the same run as the reference. When the ranks span machines it also measures
// one TCP stream between rank 0's machine and the next machine, as iperf3 does by default (one
// stream, 128 KB writes, bytes counted by the receiver from first to last), before and after the
// sizes, and prints busbw / that bandwidth.
#include <arpa/inet.h>
#include <mpi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "allreduce/mpi_communicator.h"
#include "examples/bench_commands.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain::bench {

namespace {

struct AllreduceBenchOptions {
  std::string min_bytes = "4K", max_bytes = "64M";
  double factor = 2;
  size_t iters = 20, warmup = 5;
  int check = 1;
  bool nonblocking = false;
  std::string backend = "mpi";
};
AllreduceBenchOptions g_ar;
CLI::App* g_ar_cmd = nullptr;

size_t parse_bytes(const std::string& s) {
  size_t pos = 0;
  double v = std::stod(s, &pos);
  std::string unit = s.substr(pos);
  double mul = 1;
  if (unit == "K" || unit == "k")
    mul = 1024;
  else if (unit == "M" || unit == "m")
    mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "g")
    mul = 1024.0 * 1024 * 1024;
  else if (!unit.empty())
    throw InputError("bad size '" + s + "' (use e.g. 4K, 64M)");
  return static_cast<size_t>(v * mul);
}

template <typename F>
double time_per_iter(MPI_Comm comm, size_t warmup, size_t iters, const F& f) {
  for (size_t i = 0; i < warmup; ++i) f();
  MPI_Barrier(comm);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < iters; ++i) f();
  double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(iters);
  // The slowest rank's time is the collective's time.
  MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm);
  return s;
}

// One TCP stream from rank `sender` to rank `receiver` for about `seconds`; returns GB/s (1e9
// bytes) as the receiver counted it, on every rank. The receiver listens on an ephemeral port of
// every address and tells the sender its host name and port over MPI.
double tcp_stream_gbps(MpiCommunicator& comm, size_t sender, size_t receiver, double seconds) {
  const size_t me = comm.rank();
  int listen_fd = -1;
  uint16_t port = 0;
  if (me == receiver) {
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    socklen_t len = sizeof(a);
    if (listen_fd < 0 || bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(listen_fd, 1) != 0 ||
        getsockname(listen_fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw Error("tcp stream: cannot listen");
    port = ntohs(a.sin_port);
  }
  const std::vector<std::string> hosts = comm.allgather(host_name(), "tcp stream: hosts");
  comm.broadcast(&port, sizeof(port), receiver, "tcp stream: port");
  std::vector<char> buf(128 * 1024, 'x');
  double gbps = 0;
  if (me == sender) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(hosts[receiver].c_str(), std::to_string(port).c_str(), &hints, &res) != 0)
      throw Error("tcp stream: cannot resolve " + hosts[receiver]);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) throw Error("tcp stream: cannot connect");
    freeaddrinfo(res);
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds)
      if (write(fd, buf.data(), buf.size()) <= 0) break;
    close(fd);
  } else if (me == receiver) {
    const int fd = accept(listen_fd, nullptr, nullptr);
    size_t got = 0;
    std::chrono::steady_clock::time_point t0, t1;
    for (ssize_t n; (n = read(fd, buf.data(), buf.size())) > 0;) {
      if (got == 0) t0 = std::chrono::steady_clock::now();
      got += size_t(n);
      t1 = std::chrono::steady_clock::now();
    }
    close(fd);
    close(listen_fd);
    gbps = double(got) / std::chrono::duration<double>(t1 - t0).count() / 1e9;
  }
  comm.broadcast(&gbps, sizeof(gbps), receiver, "tcp stream: result");
  return gbps;
}

int run_allreduce(int argc, char** argv) {
  MpiCommunicator comm(&argc, &argv);
  const size_t n = comm.size();
  const size_t lo = std::max<size_t>(parse_bytes(g_ar.min_bytes), 4);
  const size_t hi = std::max(lo, parse_bytes(g_ar.max_bytes));
  if (g_ar.factor <= 1) throw InputError("-f must be greater than 1");
  if (g_ar.backend == "nccl") {
#if defined(DTRAIN_HAVE_CUDA)
    return run_allreduce_nccl(comm, lo, hi, g_ar.factor, g_ar.warmup, g_ar.iters);
#else
    throw InputError(
        "--backend nccl: this build has no CUDA backend (configure with the CUDA toolkit)");
#endif
  }
  // Across machines: the raw TCP bandwidth between rank 0's machine and the next one.
  const std::vector<std::string> hosts = comm.allgather(host_name(), "hosts");
  size_t peer = 0;
  for (size_t r = 1; r < n && !peer; ++r)
    if (hosts[r] != hosts[0]) peer = r;
  double tcp = 0;
  if (peer) {
    tcp = tcp_stream_gbps(comm, 0, peer, 1.0);
    if (comm.rank() == 0)
      std::printf(
          "%s\n",
          nlohmann::json(
              {{"bench", "tcp_stream"}, {"from", hosts[0]}, {"to", hosts[peer]}, {"gbps", tcp}})
              .dump()
              .c_str());
  }
  int errors = 0;
  for (double b = double(lo); b <= double(hi) * 1.0000001; b *= g_ar.factor) {
    const size_t count = static_cast<size_t>(b) / sizeof(float);
    const size_t bytes = count * sizeof(float);
    std::vector<float> buf(count), ref(count);
    auto fill = [&] {
      for (size_t i = 0; i < count; ++i) buf[i] = float((comm.rank() + 1) * ((i % 7) + 1));
    };
    fill();
    // Ours and the plain MPI_Allreduce alternate in 5 rounds, so drift in the machine's load
    // hits both alike.
    double t = 0, t_mpi = 0;
    const size_t rounds = 5, per = std::max<size_t>(1, g_ar.iters / rounds);
    for (size_t r = 0; r < rounds; ++r) {
      t += time_per_iter(comm.comm(), r == 0 ? g_ar.warmup : 0, per, [&] {
        if (g_ar.nonblocking)
          comm.iallreduce(buf.data(), count, ReduceOp::kSum, "bench")->wait();
        else
          comm.allreduce(buf.data(), count, ReduceOp::kSum, "bench");
      });
      t_mpi += time_per_iter(comm.comm(), r == 0 ? g_ar.warmup : 0, per, [&] {
        MPI_Allreduce(MPI_IN_PLACE, ref.data(), int(count), MPI_FLOAT, MPI_SUM, comm.comm());
      });
    }
    t /= double(rounds);
    t_mpi /= double(rounds);
    long wrong = 0;
    if (g_ar.check) {
      fill();
      comm.allreduce(buf.data(), count, ReduceOp::kAverage, "bench check");
      // sum over r of (r+1)*k, averaged: k*(n+1)/2
      for (size_t i = 0; i < count; ++i) {
        const float want = float((i % 7) + 1) * float(n + 1) / 2.0f;
        if (std::fabs(buf[i] - want) > 1e-5f * want) ++wrong;
      }
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG, MPI_SUM, comm.comm());
      if (wrong) errors = 1;
    }
    const double algbw = double(bytes) / t / 1e9;
    const double busbw = n > 1 ? algbw * 2.0 * double(n - 1) / double(n) : algbw;
    const double busbw_mpi =
        n > 1 ? double(bytes) / t_mpi / 1e9 * 2.0 * double(n - 1) / double(n) : 0;
    if (comm.rank() == 0) {
      nlohmann::json j = {{"bench", "allreduce"},
                          {"backend", "mpi"},
                          {"op", g_ar.nonblocking ? "iallreduce" : "allreduce"},
                          {"ranks", n},
                          {"bytes", bytes},
                          {"count", count},
                          {"time_us", t * 1e6},
                          {"algbw_gbps", algbw},
                          {"busbw_gbps", busbw},
                          {"mpi_allreduce_time_us", t_mpi * 1e6},
                          {"mpi_allreduce_busbw_gbps", busbw_mpi},
                          {"wrong", wrong}};
      if (peer) {
        j["tcp_stream_gbps"] = tcp;
        j["busbw_over_tcp"] = busbw / tcp;
      }
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  }
  if (peer) {
    const double after = tcp_stream_gbps(comm, 0, peer, 1.0);
    if (comm.rank() == 0)
      std::printf("%s\n", nlohmann::json({{"bench", "tcp_stream"},
                                          {"from", hosts[0]},
                                          {"to", hosts[peer]},
                                          {"gbps", after},
                                          {"when", "after"}})
                              .dump()
                              .c_str());
  }
  return errors;
}

int g_argc = 0;
char** g_argv = nullptr;

}  // namespace

void register_extra_commands(CLI::App& app) {
  g_ar_cmd = app.add_subcommand("allreduce", "allreduce busbw over MPI, nccl-tests style");
  g_ar_cmd->add_option("-b,--minbytes", g_ar.min_bytes, "smallest size")->capture_default_str();
  g_ar_cmd->add_option("-e,--maxbytes", g_ar.max_bytes, "largest size")->capture_default_str();
  g_ar_cmd->add_option("-f,--stepfactor", g_ar.factor, "size multiplier")->capture_default_str();
  g_ar_cmd->add_option("-n,--iters", g_ar.iters, "timed iterations")->capture_default_str();
  g_ar_cmd->add_option("-w,--warmup_iters", g_ar.warmup, "warm-up iterations")
      ->capture_default_str();
  g_ar_cmd->add_option("-c,--check", g_ar.check, "check results (0/1)")->capture_default_str();
  g_ar_cmd->add_flag("--nonblocking", g_ar.nonblocking, "time the non-blocking allreduce + wait");
  g_ar_cmd->add_option("--backend", g_ar.backend, "mpi (host buffers) or nccl (GPU buffers)")
      ->capture_default_str()
      ->check(CLI::IsMember({"mpi", "nccl"}));
}

int run_extra_commands(CLI::App& /*app*/) {
  if (g_ar_cmd && g_ar_cmd->parsed()) return run_allreduce(g_argc, g_argv);
  return 2;
}

}  // namespace dtrain::bench
