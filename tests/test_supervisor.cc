// The supervisor's reading of mpirun's output, with a stand-in for mpirun (a shell script printing
// what Open MPI 4.1 prints): the rank is named when mpirun's MPI_Abort report is lost, and
// mpirun's "will terminate the job" stops the job at once even when mpirun then hangs.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "launcher/supervisor.h"

namespace dtrain::launcher {
namespace {

JobPlan fake_mpirun(const std::string& script) {
  Task t;
  t.name = "mpirun";
  t.log_dir = "logs/mpirun";
  t.argv = {"sh", "-c", script};
  t.mpi_tagged_output = true;
  JobPlan plan;
  plan.mode = "allreduce";
  plan.tasks.push_back(t);
  return plan;
}

std::string scratch() {
  const auto d =
      std::filesystem::temp_directory_path() /
      ("dtrain-supervisor-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
       "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

TEST(Supervisor, ARankIsNamedByItsErrorLineWhenMpirunLosesTheAbortReport) {
  const std::string dir = scratch();
  Supervisor sup(dir, 1.0, false);
  const RunResult r = sup.run(fake_mpirun(
      "echo '[1,1]<stderr>:[rank 1/2 h:7] error: data folder /x does not exist' >&2; "
      "echo '[h:3] [[1,0],0] ORTE_ERROR_LOG: Data unpack would read past end of buffer' >&2; "
      "exit 2"));
  EXPECT_EQ(r.failed_task, "worker:1");
  EXPECT_EQ(r.reason, "reported an error; mpirun exited with code 2");
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_FALSE(r.last_lines.empty());
  EXPECT_NE(r.last_lines.back().find("does not exist"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Supervisor, MpirunSayingItWillTerminateStopsTheJobAtOnce) {
  const std::string dir = scratch();
  Supervisor sup(dir, 1.0, false);
  const auto start = std::chrono::steady_clock::now();
  // As behind a partition: a warning naming the silent rank, mpirun's report, then mpirun waits
  // for a daemon it cannot reach (here: forever, ignoring SIGTERM).
  const RunResult r = sup.run(fake_mpirun(
      "trap '' TERM; "
      "echo \"[1,0]<stderr>:[rank 0/2 n1:5] stall: waiting 6 s in 'allreduce bucket 0 of step 9'; "
      "not responding: rank 1 (n2) silent for 6 s\" >&2; "
      "echo 'ORTE has lost communication with a remote daemon.' >&2; "
      "echo '  Remote daemon: [[4,0],1] on node n1' >&2; "
      "echo 'therefore will terminate the job.' >&2; "
      "while :; do sleep 0.1; done"));
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 5.0) << "the supervisor waited for mpirun";
  EXPECT_EQ(r.failed_task, "mpirun");
  EXPECT_EQ(r.reason, "lost contact with its daemon on n1 and ended the job");
  EXPECT_EQ(r.stall_warning_task, "worker:0");
  EXPECT_NE(r.stall_warning.find("not responding: rank 1 (n2)"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dtrain::launcher
