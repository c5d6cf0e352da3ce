#include "allreduce/allreduce_start.h"

#include <vector>

#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace dtrain {

void check_job_consistency(Communicator& comm, const nlohmann::json& job) {
  const std::vector<std::string> all = comm.allgather(job.dump(), "start-up consistency check");
  const nlohmann::json ref = nlohmann::json::parse(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    for (auto it = ref.begin(); it != ref.end(); ++it) {
      const nlohmann::json theirs = other.contains(it.key()) ? other[it.key()] : nlohmann::json();
      if (theirs != it.value())
        throw ConsistencyError(detail::cat("rank ", r, " disagrees with rank 0 on ", it.key(),
                                           ": rank 0 has ", it.value().dump(), ", rank ", r,
                                           " has ", theirs.dump()));
    }
    for (auto it = other.begin(); it != other.end(); ++it)
      if (!ref.contains(it.key()))
        throw ConsistencyError(
            detail::cat("rank ", r, " has ", it.key(), " that rank 0 does not have"));
  }
}

ResumePoint start_from_rank0(Communicator& comm, Model& model, Optimizer& opt,
                             const nlohmann::json& job, const std::string& strategy,
                             ResumePoint chief) {
  nlohmann::json j = job;
  j["allreduce_strategy"] = strategy;
  check_job_consistency(comm, j);
  uint64_t resume[3] = {chief.epoch, chief.step, chief.step_in_epoch};
  comm.broadcast(resume, sizeof(resume), 0, "broadcast resume point");
  std::vector<float> host(model.param_count() + opt.state_size());
  model.read_params(host.data());
  opt.read_state(host.data() + model.param_count());
  comm.broadcast(host.data(), host.size() * sizeof(float), 0,
                 "broadcast parameters and optimizer state");
  model.write_params(host.data());
  opt.write_state(host.data() + model.param_count());
  uint64_t t = opt.steps();
  comm.broadcast(&t, sizeof(t), 0, "broadcast optimizer step");
  opt.set_steps(t);
  return {resume[0], resume[1], resume[2]};
}

}  // namespace dtrain
