// What a job across machines leaves behind after it fails or is stopped, ended from the launcher.
//
// The launcher ends everything it started on its own machine (it is their subreaper), and a remote
// task's ssh wrapper stops the task when its connection closes. Behind a partition neither reaches
// the far side in time, and a launcher on a machine that runs no task (a login or head node) has
// no local ranks to see die. So after a failed or stopped job the launcher asks every other machine
// the job ran on, over ssh and all at once, to end every process whose environment holds the job's
// DTRAIN_JOB_ID (its ranks, ps tasks and workers; Open MPI's daemons end with their ranks and
// mpirun). A machine that does not answer within the time limit cannot be checked: the launcher
// names it rather than claim it clean.
#pragma once

#include <string>
#include <vector>

namespace dtrain::launcher {

struct HostSweep {
  std::string host;
  bool reached = false;  // ssh ran the check there
  size_t ended = 0;      // processes of the job it ended
  std::string error;     // why it was not reached (ssh's last line, or the time limit)
};

// The shell script that ends, on the machine it runs on, every process of job `job_id` in that
// machine's network namespace (the simulated cluster's "machines" share one process table), and
// prints "dtrain-leftovers ended N".
std::string leftovers_script(const std::string& job_id);

// Runs leftovers_script on every host over ssh (BatchMode, connect timeout), in parallel; a host
// that has not answered after timeout_s is given up (its ssh is killed).
std::vector<HostSweep> end_leftovers(const std::vector<std::string>& hosts,
                                     const std::string& job_id, double timeout_s);

}  // namespace dtrain::launcher
