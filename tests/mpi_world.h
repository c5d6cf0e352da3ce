#pragma once

#include "allreduce/mpi_communicator.h"

namespace dtrain::testing {
extern MpiCommunicator* g_world;
inline MpiCommunicator& world() {
  return *g_world;
}
}  // namespace dtrain::testing
