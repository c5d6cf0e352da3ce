// Runs a JobPlan's tasks and watches them. Every line a task prints reaches the console with the
// task's name in front ("[worker:1] ...") and that task's log file (logs/worker.1/stdout). When a
// task exits non-zero or dies by a signal, the others are stopped (SIGTERM, then SIGKILL after the
// grace period) and the run reports that task, its exit code or signal and its last lines (a
// rejoinable ps worker is started again instead, while rejoins are allowed). SIGINT
// or SIGTERM to the launcher stops the whole job the same way. Each task runs in a process group
// of its own and dies with the launcher (PR_SET_PDEATHSIG), so nothing is left behind.
#pragma once

#include <deque>
#include <string>

#include "launcher/job_plan.h"

namespace dtrain::launcher {

struct RunResult {
  int exit_code = 0;        // 0, the failed task's code, or 128 + signal
  std::string failed_task;  // empty on success
  std::string failed_host;  // where it ran, when not here (a remote task, an mpirun rank)
  std::string reason;       // "exited with code 2", "killed by signal 9 (Killed)"
  std::deque<std::string> last_lines;
  // A rank's stall watchdog ended the job: what it said ("waited 600 s in ...; not responding:
  // rank 1 (node2) silent for 600 s") and which task said it.
  std::string stall, stall_task;
  // The last stall warning a rank printed ("waiting 6 s in ...; not responding: rank 1 (node2)
  // silent for 6 s") and its task: what names the machine behind a partition when mpirun ends
  // the job before any watchdog's timeout.
  std::string stall_warning, stall_warning_task;
  bool interrupted = false;  // the launcher itself got SIGINT/SIGTERM
};

class Supervisor {
 public:
  Supervisor(std::string output_dir, double grace_period_s, bool verbose);
  RunResult run(const JobPlan& plan);
  // Rejoinable tasks (Task::rejoinable) that fail are started again, up to n times in all over
  // this supervisor's runs, while the others keep running.
  void allow_rejoins(size_t n) { rejoins_left_ = n; }

 private:
  std::string output_dir_;
  double grace_s_;
  bool verbose_;
  size_t rejoins_left_ = 0, rejoins_ = 0;
};

// Installs SIGINT/SIGTERM handlers that ask a running Supervisor to stop the job.
void install_stop_handlers();

}  // namespace dtrain::launcher
