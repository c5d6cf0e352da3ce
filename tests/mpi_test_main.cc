// Tests that need several ranks run as one gtest binary per rank under mpirun (see
// tests/CMakeLists.txt). This main owns the world communicator; only rank 0 prints results, and
// a failure on any rank fails the job.
#include <gtest/gtest.h>

#include "allreduce/mpi_communicator.h"
#include "tests/mpi_world.h"

namespace dtrain::testing {
MpiCommunicator* g_world = nullptr;
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  dtrain::MpiCommunicator comm(&argc, &argv);
  dtrain::testing::g_world = &comm;
  if (comm.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  // Every rank learns whether any rank failed, so the exit status is the same everywhere.
  double f = failed ? 1 : 0;
  comm.allreduce(&f, 1, "test result");
  if (f > 0 && comm.rank() == 0) std::fprintf(stderr, "a test failed on %g rank(s)\n", f);
  return f > 0 ? 1 : 0;
}
