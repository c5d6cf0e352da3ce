// From dtrainrun's options to the processes to start: a JobPlan is a list of tasks, each with its
// name ("worker:1"), its log folder, its argv and the environment it adds. Planning does no I/O
// beyond reading the cluster-spec file and picking free ports, so it is tested without processes.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "launcher/launcher_options.h"

namespace dtrain::launcher {

struct Task {
  std::string name;     // ps:0, worker:1, chief:0, or mpirun
  std::string log_dir;  // logs/ps.0
  std::string host;     // where it runs; "" = here
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to the launcher's environment
  // For the mpirun task: its ranks' lines come tagged and are split into worker:r.
  bool mpi_tagged_output = false;
  // >= 0: run pinned to this CPU (local tasks only; --bind-to).
  int cpu = -1;
};

struct JobPlan {
  std::string mode;
  std::vector<Task> tasks;
};

// Validates the options (throws InputError saying what is wrong) and plans the job.
// tf_config: the launcher's own TF_CONFIG, if any; is_root: add --allow-run-as-root.
// cpus: the CPUs this launcher may use, in order (empty: read its affinity mask).
JobPlan plan_job(const LauncherOptions& o, const std::string& tf_config, bool is_root,
                 std::vector<int> cpus = {});

// The command line of a task as a person would type it (env assignments, taskset when it is
// pinned, then argv), quoted.
std::string shell_line(const Task& t);

// Loopback ports nobody is listening on, distinct.
std::vector<uint16_t> free_ports(size_t n);

}  // namespace dtrain::launcher
