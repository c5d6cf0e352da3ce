#include "examples/sync_factory.h"

#include <zmq.hpp>

#include "allreduce/allreduce_sync.h"
#include "allreduce/mpi_communicator.h"
#include "paramserver/client.h"
#include "paramserver/curve.h"
#include "paramserver/endpoints.h"
#include "paramserver/server.h"
#include "runtime/cluster_spec.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"

#if defined(DTRAIN_HAVE_CUDA)
#include "allreduce/nccl_communicator.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device.h"
#endif

namespace dtrain {

namespace {
// The communicator outlives the AllreduceSync that uses it: a base listed first is destroyed last.
struct CommHolder {
  std::unique_ptr<MpiCommunicator> owned_comm_;
};
class OwningAllreduceSync : private CommHolder, public AllreduceSync {
 public:
  OwningAllreduceSync(std::unique_ptr<MpiCommunicator> comm, AllreduceOptions o)
      : CommHolder{std::move(comm)}, AllreduceSync(*owned_comm_, o) {}
  void abort_job(int code) override { owned_comm_->abort(code); }
};
#if defined(DTRAIN_HAVE_CUDA)
// GPU ranks: gradients over NCCL, everything on the host over MPI. The MPI communicator outlives
// the NCCL one, which outlives the sync.
struct NcclHolder {
  std::unique_ptr<MpiCommunicator> mpi_;
  std::unique_ptr<NcclCommunicator> nccl_;
};
class OwningNcclAllreduceSync : private NcclHolder, public AllreduceSync {
 public:
  OwningNcclAllreduceSync(std::unique_ptr<MpiCommunicator> mpi,
                          std::unique_ptr<NcclCommunicator> nccl, AllreduceOptions o)
      : NcclHolder{std::move(mpi), std::move(nccl)}, AllreduceSync(*nccl_, o, mpi_.get()) {}
  void abort_job(int code) override { nccl_->abort(code); }
};
#endif
// The ZeroMQ context and keys outlive the sockets of the ParameterServerSync using them (a base
// listed first is destroyed last; a context destroyed before its sockets blocks forever).
struct PsResources {
  zmq::context_t ctx{2};
  std::optional<ps::CurveKeys> keys;
};
struct PsHolder {
  std::unique_ptr<PsResources> res_;
};
class OwningPsSync : private PsHolder, public ps::ParameterServerSync {
 public:
  OwningPsSync(std::unique_ptr<PsResources> res, ps::ClientOptions o)
      : PsHolder{std::move(res)}, ParameterServerSync(res_->ctx, fix(o, *res_)) {}

 private:
  static ps::ClientOptions fix(ps::ClientOptions o, PsResources& r) {
    if (r.keys) o.curve = &*r.keys;
    return o;
  }
};

std::optional<ClusterSpec> tf_config_spec(const EnvConfig& env) {
  if (!env.tf_config) return std::nullopt;
  return parse_cluster_spec(*env.tf_config, "TF_CONFIG", /*require_task=*/true);
}

// What every ps task and worker of a job must agree on.
nlohmann::json ps_job(const TrainFlags& f, size_t workers) {
  auto m = build_model(f.model, 28, 28, f.first_layer_neurons, f.second_layer_neurons, 10);
  Optimizer opt(f.optimizer, 0);
  return {{"model", m->spec()}, {"optimizer", opt.spec()},
          {"workers", workers}, {"batch_size", f.batch_size},
          {"sync", f.ps_sync},  {"max_staleness", f.max_staleness}};
}

bool wants_ps(const TrainFlags& f, const EnvConfig& env) {
  if (f.mode == "ps") return true;
  if (f.mode != "auto" || !env.tf_config) return false;
  auto spec = parse_cluster_spec(*env.tf_config, "TF_CONFIG", false);
  return !spec.job("ps").empty();
}
}  // namespace

std::optional<int> run_if_ps_task(const TrainFlags& flags) {
  const EnvConfig env = read_env();
  if (!wants_ps(flags, env)) return std::nullopt;
  auto spec = tf_config_spec(env);
  if (!spec)
    throw InputError(
        "--mode ps needs TF_CONFIG (a cluster with ps and worker tasks, and this task)");
  validate_for_ps(*spec, "TF_CONFIG");
  if (*spec->task_type == "evaluator")
    throw InputError(
        "TF_CONFIG: evaluator tasks are not supported by mnist_train (the chief evaluates)");
  if (*spec->task_type != "ps") return std::nullopt;
  set_log_identity("ps", spec->task_index, spec->job("ps").size());
  zmq::context_t ctx(2);
  std::optional<ps::CurveKeys> keys;
  std::optional<ps::ZapHandler> zap;
  ps::ServerOptions o;
  o.name = detail::cat("ps:", spec->task_index, " (", spec->job("ps")[spec->task_index].str(), ")");
  if (flags.secure) {
    keys = ps::load_curve_keys(true, env);
    zap.emplace(ctx, keys->client_public, o.name);
    o.curve = &*keys;
  }
  o.bind = ps::tcp_endpoint(spec->job("ps")[spec->task_index]);
  o.index = spec->task_index;
  o.num_servers = spec->job("ps").size();
  o.num_workers = spec->num_workers();
  o.param_count =
      build_model(flags.model, 28, 28, flags.first_layer_neurons, flags.second_layer_neurons, 10)
          ->param_count();
  o.optimizer = flags.optimizer;
  o.async = !flags.ps_sync;
  o.max_staleness = flags.ps_sync ? 0 : flags.max_staleness;
  o.start_timeout_s = flags.start_timeout_s;
  o.step_timeout_s = flags.step_timeout_s;
  o.job_id = env.job_id.value_or(ps::job_id_of(*spec));
  o.job = ps_job(flags, o.num_workers);
  ps::Server server(ctx, o);
  server.run();
  return 0;
}

std::unique_ptr<GradientSync> make_sync(const TrainFlags& flags, int& argc, char**& argv,
                                        DeviceChoice& device) {
  std::string mode = flags.mode;
  const EnvConfig env = read_env();
  if (mode == "auto")
    mode = wants_ps(flags, env) ? "ps" : launched_by_mpi_with_peers() ? "allreduce" : "local";
  if (mode == "ps") {
    auto spec = tf_config_spec(env);
    if (!spec)
      throw InputError(
          "--mode ps needs TF_CONFIG (a cluster with ps and worker tasks, and this task)");
    validate_for_ps(*spec, "TF_CONFIG");
    if (flags.device == "cuda")
      throw InputError(
          "--device cuda: parameter-server workers train on the CPU in this version (use --mode "
          "allreduce for GPUs, or --device cpu)");
    device = choose_device("cpu", 0);
    const size_t rank = spec->worker_rank();
    set_log_identity(*spec->task_type, spec->task_index, spec->num_workers());
    auto res = std::make_unique<PsResources>();
    if (flags.secure) res->keys = ps::load_curve_keys(false, env);
    ps::ClientOptions o;
    for (size_t i = 0; i < spec->job("ps").size(); ++i) {
      o.servers.push_back(ps::tcp_endpoint(spec->job("ps")[i]));
      o.server_names.push_back(detail::cat("ps:", i, " (", spec->job("ps")[i].str(), ")"));
    }
    o.worker_rank = rank;
    o.num_workers = spec->num_workers();
    o.start_timeout_s = flags.start_timeout_s;
    o.step_timeout_s = flags.step_timeout_s;
    o.job_id = env.job_id.value_or(ps::job_id_of(*spec));
    o.job = ps_job(flags, o.num_workers);
    o.overlap = !flags.ps_sync && flags.max_staleness == 0;
    o.sync = flags.ps_sync;
    o.shm = env.ps_shm && !flags.secure;
    return std::make_unique<OwningPsSync>(std::move(res), o);
  }
  if (mode == "local") {
    set_log_identity("worker", 0, 1);
    device = choose_device(flags.device, 0);
    return std::make_unique<LocalSync>();
  }
  if (mode == "allreduce") {
    auto comm = std::make_unique<MpiCommunicator>(&argc, &argv);
    set_log_identity("rank", comm->rank(), comm->size());
    AllreduceOptions o;
    if (env.fusion_threshold_bytes) o.fusion_threshold_bytes = *env.fusion_threshold_bytes;
    o.shared_memory = env.allreduce_shm;
    if (flags.fusion_threshold_mb >= 0)
      o.fusion_threshold_bytes = static_cast<size_t>(flags.fusion_threshold_mb * 1024 * 1024);
    device = choose_device(flags.device, comm->local_rank());
#if defined(DTRAIN_HAVE_CUDA)
    if (device.cuda) {
      std::string why;
      const size_t gpus = static_cast<size_t>(cuda::device_count(&why));
      if (comm->local_size() > gpus)
        throw InputError(detail::cat("--device cuda: ", comm->local_size(),
                                     " ranks on this node but ", gpus,
                                     " GPU(s); NCCL needs a GPU per rank (start fewer ranks per "
                                     "node, or pass --device cpu)"));
      auto& gpu = static_cast<cuda::CudaBackend&>(*device.backend);
      auto nccl = std::make_unique<NcclCommunicator>(*comm, gpu.device(), gpu.stream());
      return std::make_unique<OwningNcclAllreduceSync>(std::move(comm), std::move(nccl), o);
    }
#endif
    return std::make_unique<OwningAllreduceSync>(std::move(comm), o);
  }
  throw InputError("--mode " + mode + " is not available in this build");
}

}  // namespace dtrain
