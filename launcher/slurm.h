// Inside a Slurm allocation dtrainrun needs no -H: the nodes and the tasks per node come from
// Slurm's environment (SLURM_JOB_NODELIST, SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE), as
// sbatch and salloc set it. No Slurm controller is asked anything.
#pragma once

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace dtrain::launcher {

struct SlurmAllocation {
  std::vector<std::string> nodes;      // in Slurm's order
  std::vector<size_t> tasks_per_node;  // one entry per node
};

// "node[01-04,07],login1" -> node01 node02 node03 node04 node07 login1 (zero padding kept).
// Malformed lists are an InputError naming the variable.
std::vector<std::string> expand_hostlist(const std::string& list, const std::string& var);

// "2(x3),1" -> 2 2 2 1; a single "2" applies to every node. The count must match `nodes`.
std::vector<size_t> expand_tasks_per_node(const std::string& s, size_t nodes,
                                          const std::string& var);

// The allocation this process runs in, read through `get` (getenv by default); nullopt outside
// one (no SLURM_JOB_NODELIST / SLURM_NODELIST). Tasks per node: SLURM_NTASKS_PER_NODE, else
// SLURM_TASKS_PER_NODE, else 1.
std::optional<SlurmAllocation> slurm_allocation(
    const std::function<const char*(const char*)>& get = [](const char* n) {
      return static_cast<const char*>(std::getenv(n));
    });

}  // namespace dtrain::launcher
