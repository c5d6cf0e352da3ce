// What every allreduce strategy does before the first step, and its options. The strategies
// themselves are one class each: BucketedAllreduce (bucketed_allreduce.h, MPI or NCCL) and
// SharedMemoryAllreduce (shared_memory_allreduce.h); dtrain/job.cc chooses between them.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>

#include "allreduce/communicator.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

struct AllreduceOptions {
  // Horovod's default. On CPU ranks with no spare core, one fused allreduce per step measured
  // fastest (129k vs 121k samples/s at 0.25 MB buckets, 2 ranks on 2 cores); smaller buckets pay
  // off where a core or a GPU stream is free to overlap them with backward.
  size_t fusion_threshold_bytes = 64 * 1024 * 1024;
  // When every rank is on one machine and the model is in host memory: reduce through MPI-3
  // shared memory, summing the ranks' gradients inside the optimizer's pass
  // (SharedMemoryAllreduce). Read by the chooser in dtrain/.
  bool shared_memory = true;
};

// Checks that every rank's job description agrees with rank 0's; throws a ConsistencyError on
// every rank naming the first rank and field that differ.
void check_job_consistency(Communicator& comm, const nlohmann::json& job);

// The start every allreduce strategy shares: the consistency check (the strategy's name is part
// of the job, so ranks that chose different strategies stop with a clear error instead of
// waiting on each other), then rank 0's resume point, parameters and optimizer state become
// everybody's, through host memory whatever the backend (once per job; no GPU-aware MPI needed).
ResumePoint start_from_rank0(Communicator& comm, Model& model, Optimizer& opt,
                             const nlohmann::json& job, const std::string& strategy,
                             ResumePoint chief);

}  // namespace dtrain
