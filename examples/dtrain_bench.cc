// dtrain_bench: benchmarks as programs (DESIGN.md), one JSON object per measurement on stdout.
//   dtrain_bench train      training samples/s of one model on one process (forward, backward,
//   step) dtrain_bench allreduce  allreduce time, algbw and busbw over MPI (run under mpirun)
//   dtrain_bench ps         push+pull round trips/s to parameter servers over ZeroMQ
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "examples/bench_commands.h"
#include "runtime/error.h"

int main(int argc, char** argv) {
  CLI::App app{"dtrain_bench: dtrain's benchmarks; one JSON object per measurement"};
  app.require_subcommand(1);
  dtrain::bench::TrainBenchOptions train;
  auto* t = app.add_subcommand(
      "train", "training samples/s of one model on one process (forward, backward, step)");
  t->add_option("--batch-size", train.batch_size, "minibatch size")->capture_default_str();
  t->add_option("--steps", train.steps, "timed steps per repetition")->capture_default_str();
  t->add_option("--repeats", train.repeats, "repetitions; the best is reported")
      ->capture_default_str();
  t->add_option("--optimizer", train.optimizer, "sgd, momentum, adam or rmsprop")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "rmsprop"}));
  t->add_option("--threads", train.threads, "threads of the CPU backend's GEMMs (oneDNN)")
      ->capture_default_str();
  t->add_option("--model", train.model, "mlp or cnn")
      ->capture_default_str()
      ->check(CLI::IsMember({"mlp", "cnn"}));
  t->add_option("--device", train.device, "cpu, cuda or auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  dtrain::bench::PsBenchOptions psb;
  auto* p = app.add_subcommand("ps", "push+pull round trips/s of the MLP's gradient over ZeroMQ");
  p->add_option("--servers", psb.servers, "ps tasks")->capture_default_str();
  p->add_option("--workers", psb.workers, "workers")->capture_default_str();
  p->add_option("--rounds", psb.rounds, "timed round trips per worker")->capture_default_str();
  p->add_flag("--sync", psb.sync, "servers wait for every worker each round");
  p->add_option("--transport", psb.transport,
                "tcp (floats in ZeroMQ frames) or shm (floats through shared memory)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tcp", "shm"}));
  dtrain::bench::register_extra_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // --help is success; any bad flag is bad input
  }
  try {
    if (t->parsed()) return dtrain::bench::run_train(train);
    if (p->parsed()) return dtrain::bench::run_ps(psb);
    return dtrain::bench::run_extra_commands(app);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtrain_bench: error: %s\n", e.what());
    return 1;
  }
}
