#include "examples/sync_factory.h"

#include "allreduce/allreduce_sync.h"
#include "allreduce/mpi_communicator.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain {

namespace {
// Owns the communicator its AllreduceSync uses.
class OwningAllreduceSync : public AllreduceSync {
 public:
  OwningAllreduceSync(std::unique_ptr<MpiCommunicator> comm, AllreduceOptions o)
      : AllreduceSync(*comm, o), comm_(std::move(comm)) {}
  void abort_job(int code) override { comm_->abort(code); }

 private:
  std::unique_ptr<MpiCommunicator> comm_;
};
}  // namespace

std::unique_ptr<GradientSync> make_sync(const TrainFlags& flags, int& argc, char**& argv) {
  std::string mode = flags.mode;
  const EnvConfig env = read_env();
  if (mode == "auto") mode = launched_by_mpi_with_peers() ? "allreduce" : "local";
  if (mode == "local") {
    set_log_identity("worker", 0, 1);
    return std::make_unique<LocalSync>();
  }
  if (mode == "allreduce") {
    auto comm = std::make_unique<MpiCommunicator>(&argc, &argv);
    set_log_identity("rank", comm->rank(), comm->size());
    AllreduceOptions o;
    if (env.fusion_threshold_bytes) o.fusion_threshold_bytes = *env.fusion_threshold_bytes;
    if (flags.fusion_threshold_mb >= 0)
      o.fusion_threshold_bytes = static_cast<size_t>(flags.fusion_threshold_mb * 1024 * 1024);
    return std::make_unique<OwningAllreduceSync>(std::move(comm), o);
  }
  throw InputError("--mode " + mode + " is not available in this build");
}

}  // namespace dtrain
