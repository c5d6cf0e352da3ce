// What a failed job across machines leaves behind (launcher/leftovers.h): the script that ends a
// job's processes on a machine ends those of that job only, a machine that cannot be reached is
// reported as such, and the machines asked are the job's others.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "launcher/job_plan.h"
#include "launcher/leftovers.h"
#include "runtime/error.h"

namespace dtrain::launcher {
namespace {

pid_t sleeper(const std::string& job_id) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("DTRAIN_JOB_ID", job_id.c_str(), 1);
    execlp("sleep", "sleep", "30", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// /proc/PID/environ is written at exec: wait until the child is sleep, not our fork.
void wait_for_exec(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    char buf[64] = "";
    FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/comm").c_str(), "r");
    if (f) {
      (void)!std::fgets(buf, sizeof(buf), f);
      std::fclose(f);
    }
    if (std::string(buf).rfind("sleep", 0) == 0) return;
    usleep(10000);
  }
}

TEST(Leftovers, TheScriptEndsThisJobsProcessesOnly) {
  const pid_t ours = sleeper("4242424201"), other = sleeper("4242424202");
  wait_for_exec(ours);
  wait_for_exec(other);
  FILE* p = popen(leftovers_script("4242424201").c_str(), "r");  // popen runs it with sh -c
  ASSERT_NE(p, nullptr);
  char line[256] = "";
  ASSERT_NE(std::fgets(line, sizeof(line), p), nullptr);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_EQ(std::string(line), "dtrain-leftovers ended 1\n");
  int status = 0;
  ASSERT_EQ(waitpid(ours, &status, 0), ours);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_EQ(waitpid(other, &status, WNOHANG), 0) << "another job's process was ended";
  kill(other, SIGKILL);
  waitpid(other, &status, 0);
}

TEST(Leftovers, AJobIdThatIsNotANumberIsRefused) {
  EXPECT_THROW(leftovers_script("1'; reboot; '"), Error);
  EXPECT_THROW(leftovers_script(""), Error);
}

TEST(Leftovers, AMachineThatCannotBeReachedIsSaidSo) {
  if (system("command -v ssh >/dev/null 2>&1") != 0) GTEST_SKIP() << "no ssh client installed";
  const auto r = end_leftovers({"dtrain-no-such-host.invalid"}, "1", 4.0);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].host, "dtrain-no-such-host.invalid");
  EXPECT_FALSE(r[0].reached);
  EXPECT_FALSE(r[0].error.empty());
}

TEST(Leftovers, TheMachinesAskedAreTheJobsOthersOnce) {
  JobPlan plan;
  Task mpirun;
  mpirun.name = "mpirun";
  mpirun.rank_hosts = {"localhost", "n2", "n2", "n3"};
  Task ps;
  ps.name = "ps:0";
  ps.host = "n4";
  Task here;
  here.name = "worker:0";
  plan.tasks = {mpirun, ps, here};
  EXPECT_EQ(remote_hosts(plan), (std::vector<std::string>{"n2", "n3", "n4"}));
}

}  // namespace
}  // namespace dtrain::launcher
