// The subcommands of dtrain_bench.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>

namespace dtrain {
class MpiCommunicator;
}

namespace dtrain::bench {

struct TrainBenchOptions {
  size_t batch_size = 50;
  size_t steps = 1500;
  size_t repeats = 3;
  std::string optimizer = "adam";
  int threads = 1;
  std::string model = "mlp";
  std::string device = "cpu";  // cpu, cuda or auto
};
int run_train(const TrainBenchOptions& o);

struct PsBenchOptions {
  size_t servers = 1, workers = 1, rounds = 2000;
  bool sync = false;
  std::string transport = "tcp";  // tcp: payload frames; shm: floats through shared memory
};
int run_ps(const PsBenchOptions& o);

// NCCL allreduce over GPU buffers, nccl-tests style (CUDA builds only).
int run_allreduce_nccl(MpiCommunicator& mpi, size_t lo, size_t hi, double factor, size_t warmup,
                       size_t iters);

// Subcommands that live with the modes (allreduce, ps); they register themselves here.
void register_extra_commands(CLI::App& app);
int run_extra_commands(CLI::App& app);

}  // namespace dtrain::bench
