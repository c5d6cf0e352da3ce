// dtrainrun's options: one typed struct and the one function that registers them with CLI11
// (tests/test_launcher.cc checks docs/launcher.md's table against the parser).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace dtrain::launcher {

struct LauncherOptions {
  size_t np = 0;                   // allreduce: ranks (0: from hosts or node config, else 1)
  std::vector<std::string> hosts;  // -H host[:slots], repeatable or comma-separated
  std::string hostfile;
  size_t node_count = 0;  // MPI configuration (node_count x process_count_per_node)
  size_t process_count_per_node = 0;
  std::string mode = "allreduce";  // allreduce | ps
  size_t num_ps = 1, num_workers = 2;
  std::string cluster_spec;      // a TF_CONFIG-style file with a cluster (and no task)
  std::string output_dir = ".";  // logs/ go under it
  double start_timeout_s = 60;
  size_t max_restarts = 0;
  // Elastic allreduce jobs: after a failure, drop the failed host (or slot) and go on from the
  // latest checkpoint while at least min_np ranks remain (0: not elastic); hosts the discovery
  // script prints join at the next restart, up to max_np (0: no cap).
  size_t min_np = 0, max_np = 0;
  std::string host_discovery_script;
  // ps jobs (asynchronous): a worker other than the chief that fails is started again and
  // rejoins the running job, up to this many times in all (0: a failure ends the job).
  size_t rejoin_workers = 0;
  bool dry_run = false;
  bool verbose = false;
  bool secure = false;
  double grace_period_s = 5;
  // core: allreduce ranks bound by mpirun, ps-mode workers on this machine each on a core of
  // their own (when there are enough); none: nothing bound.
  std::string bind_to = "none";
  // --network-interface IF[,IF] (horovodrun's name): MPI's TCP traffic and the ps tasks use it.
  std::string network_interface;
  std::vector<std::string> command;  // after --
};

void add_launcher_flags(CLI::App& app, LauncherOptions& o);

// mpirun's and horovodrun's spelling "-np N" becomes "--np N" (CLI11 takes one-letter short
// options only); arguments after "--" belong to the command and are left alone.
std::vector<std::string> normalize_args(int argc, char** argv);

}  // namespace dtrain::launcher
