// From dtrainrun's options to the processes to start: a JobPlan is a list of tasks, each with its
// name ("worker:1"), its log folder, its argv and the environment it adds. Planning does no I/O
// beyond reading the cluster-spec file and picking free ports, so it is tested without processes.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "launcher/launcher_options.h"
#include "launcher/slurm.h"

namespace dtrain::launcher {

struct Task {
  std::string name;     // ps:0, worker:1, chief:0, or mpirun
  std::string log_dir;  // logs/ps.0
  std::string host;     // where it runs; "" = here
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to the launcher's environment
  // Added to the environment too, but never on a command line: a local task gets them in its
  // environment; a remote one through ssh's standard input into a 0600 key file (remote_command).
  std::map<std::string, std::string> secrets;
  // For the mpirun task: its ranks' lines come tagged and are split into worker:r.
  bool mpi_tagged_output = false;
  // For the mpirun task with hosts: the host of each rank as mpirun places them (each host's
  // slots in turn, in the order given), so that a failed rank's machine is known even when
  // mpirun names only the rank (an elastic job drops that machine, not this one).
  std::vector<std::string> rank_hosts;
  // >= 0: run pinned to this CPU (local tasks only; --bind-to).
  int cpu = -1;
  // ps mode with --rejoin-workers: a worker other than the chief; when it fails it is started
  // again and rejoins the running job instead of ending it.
  bool rejoinable = false;
};

struct JobPlan {
  std::string mode;
  std::vector<Task> tasks;
};

// `s` as one word for sh: as it is when it needs no quoting, else in single quotes.
std::string shell_quote(const std::string& s);

// The machines other than this one that a planned job runs tasks on (remote ps tasks' hosts,
// mpirun's ranks' hosts), each once, in the order the plan names them.
std::vector<std::string> remote_hosts(const JobPlan& plan);

// Validates the options (throws InputError saying what is wrong) and plans the job.
// tf_config: the launcher's own TF_CONFIG, if any; is_root: add --allow-run-as-root.
// cpus: the CPUs this launcher may use, in order (empty: read its affinity mask).
// slurm: the Slurm allocation the launcher runs in, if any: its nodes and tasks per node stand
// in for -H (allreduce) and for --num-workers on 127.0.0.1 (ps: the first --num-ps task slots
// are ps tasks, the rest workers, on ports kSlurmPortBase and up on each node).
JobPlan plan_job(const LauncherOptions& o, const std::string& tf_config, bool is_root,
                 std::vector<int> cpus = {}, const SlurmAllocation* slurm = nullptr);

constexpr uint16_t kSlurmPortBase = 29400;

// An allreduce job's machines and their slots as planned: -H (with --process-count-per-node),
// else the hostfile, else the Slurm allocation; {{"", np}} for a job on this machine alone.
// The whole pool (a host named twice counts once, with its slots added): the ranks that run
// are capped when the job is planned (cap_hosts, elastic_cap).
// The elastic launcher (--min-np) shrinks this list after a failure and plans again from it.
std::vector<std::pair<std::string, size_t>> allreduce_hosts(const LauncherOptions& o,
                                                            const SlurmAllocation* slurm);

// Hosts named more than once become one entry with their slots added (as mpirun merges them).
std::vector<std::pair<std::string, size_t>> merge_hosts(
    std::vector<std::pair<std::string, size_t>> hosts);
// The first `cap` slots of `hosts`, each host's in turn (0: all).
std::vector<std::pair<std::string, size_t>> cap_hosts(
    const std::vector<std::pair<std::string, size_t>>& hosts, size_t cap);
// The most ranks an elastic job runs: -np, else --max-np, the smaller when both (0: every slot).
size_t elastic_cap(const LauncherOptions& o);

// The options that run an allreduce job on exactly `hosts` (one "" entry: this machine).
LauncherOptions with_hosts(LauncherOptions o,
                           const std::vector<std::pair<std::string, size_t>>& hosts);

// Elastic: the hosts an allreduce job goes on with after a failure. The machine the failure
// names goes into `dropped` (they stay out for good); when it names none, or this machine, one
// slot of this machine's goes (else of the last host's). The discovery script's hosts, when
// given, then stand for `hosts`; at most max_np slots remain (0: no cap).
std::vector<std::pair<std::string, size_t>> shrink_hosts(
    std::vector<std::pair<std::string, size_t>> hosts, const std::string& failed_host,
    std::set<std::string>* dropped,
    const std::optional<std::vector<std::pair<std::string, size_t>>>& discovered, size_t max_np);

// A new job id (DTRAIN_JOB_ID): random, below 2^63.
uint64_t new_job_id();

// Adds NAME=VALUE to every task's environment; mpirun forwards it to its ranks (-x NAME).
void set_task_env(JobPlan& plan, const std::string& name, const std::string& value);

// "node1:2,node2:1" (this machine's entry "" by its name).
std::string describe_hosts(const std::vector<std::pair<std::string, size_t>>& hosts);

// Parses a host discovery script's output (Horovod's --host-discovery-script): one host[:slots]
// per line, '#' comments and blank lines ignored. `what` names the source in errors.
std::vector<std::pair<std::string, size_t>> parse_host_lines(const std::string& text,
                                                             const std::string& what);

// The command line of a task as a person would type it (env assignments, taskset when it is
// pinned, then argv), quoted; its secrets show as NAME=<secret>.
std::string shell_line(const Task& t);

// What ssh runs on a remote task's host (a POSIX sh script, quoted as one argument of sh -c): it
// reads the task's secrets as NAME=VALUE lines from its standard input up to a line ".", into
// a file of mode 0600 in a fresh private folder (in /dev/shm when it can, else /tmp), starts the
// task in `cwd` with DTRAIN_PS_KEY_FILE naming that file, and removes the folder when the task
// ends, however it ends. When its standard input closes (the launcher exited or was killed, or
// the ssh connection dropped) it stops the task: SIGTERM, then SIGKILL after `grace_s`. A task
// that cannot start (no such folder or program) is reported with the host's name. No secret is in
// the script.
std::string remote_command(const Task& t, const std::string& cwd, double grace_s);

// What the launcher writes to that script's standard input: the secrets, then ".".
std::string remote_stdin(const Task& t);

// Loopback ports nobody is listening on, distinct.
std::vector<uint16_t> free_ports(size_t n);

}  // namespace dtrain::launcher
