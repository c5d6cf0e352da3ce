// dtrain_bench ps: push+pull round trips per second of the MLP's whole gradient (6 tensors,
// 266,610 floats) between worker and server threads over loopback TCP, the way ps-lite's
// benchmark measures them: each round trip pushes every server its range and gets the updated
// parameters back. --transport shm moves the floats through shared memory (headers still over
// TCP), as co-located ps jobs do by default.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "examples/bench_commands.h"
#include "paramserver/client.h"
#include "paramserver/server.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain::bench {

int run_ps(const PsBenchOptions& b) {
  zmq::context_t ctx(2);
  auto proto = build_mlp(784, {300, 100}, 10);
  const size_t params = proto->param_count();
  OptimizerOptions sgd;
  sgd.name = "sgd";
  sgd.learning_rate = 1e-9f;
  std::vector<std::unique_ptr<ps::Server>> servers;
  std::vector<std::string> eps;
  for (size_t s = 0; s < b.servers; ++s) {
    ps::ServerOptions o;
    o.bind = "tcp://127.0.0.1:*";
    o.index = s;
    o.num_servers = b.servers;
    o.num_workers = b.workers;
    o.param_count = params;
    o.optimizer = sgd;
    o.async = !b.sync;
    o.job_id = 1;
    servers.push_back(std::make_unique<ps::Server>(ctx, o));
    eps.push_back(servers.back()->endpoint());
  }
  std::vector<std::thread> threads;
  for (auto& s : servers) threads.emplace_back([&s] { s->run(); });
  std::vector<double> rate(b.workers);
  for (size_t w = 0; w < b.workers; ++w)
    threads.emplace_back([&, w] {
      auto m = build_mlp(784, {300, 100}, 10);
      m->init(1);
      Optimizer opt(sgd, m->param_count());
      ps::ClientOptions o;
      o.servers = eps;
      o.worker_rank = w;
      o.num_workers = b.workers;
      o.job_id = 1;
      o.sync = b.sync;
      o.shm = b.transport == "shm";
      ps::ParameterServerSync sync(ctx, o);
      Timeline tl;
      sync.start(*m, opt, {}, {}, tl);
      for (size_t i = 0; i < 50; ++i) sync.finish_step(*m, opt);
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t i = 0; i < b.rounds; ++i) sync.finish_step(*m, opt);
      rate[w] = double(b.rounds) /
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sync.finish(true);
    });
  for (auto& t : threads) t.join();
  double total = 0;
  for (double r : rate) total += r;
  const nlohmann::json j = {
      {"bench", "ps"},
      {"transport",
       b.transport == "shm" ? "zeromq tcp 127.0.0.1 + shared memory" : "zeromq tcp 127.0.0.1"},
      {"servers", b.servers},
      {"workers", b.workers},
      {"sync", b.sync},
      {"floats", params},
      {"bytes_each_way", params * sizeof(float)},
      {"round_trips_per_sec_per_worker", total / double(b.workers)},
      {"round_trips_per_sec_total", total},
      {"round_trip_ms", 1e3 * double(b.workers) / total}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace dtrain::bench
