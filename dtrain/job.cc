#include "dtrain/job.h"

#include <pthread.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "allreduce/bucketed_allreduce.h"
#include "allreduce/hierarchical_allreduce.h"
#include "allreduce/mpi_communicator.h"
#include "allreduce/shared_memory_allreduce.h"
#include "dtrain/cuda_plugin.h"
#include "paramserver/client.h"
#include "paramserver/curve.h"
#include "paramserver/endpoints.h"
#include "paramserver/server.h"
#include "runtime/cluster_spec.h"
#include "runtime/cpu_ops.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/trainer.h"

namespace dtrain {

namespace {

ClusterSpec tf_config_for_ps(const EnvConfig& env) {
  if (!env.tf_config)
    throw InputError(
        "--mode ps needs TF_CONFIG (a cluster with ps and worker tasks, and this task)");
  ClusterSpec spec = parse_cluster_spec(*env.tf_config, "TF_CONFIG", /*require_task=*/true);
  validate_for_ps(spec, "TF_CONFIG");
  return spec;
}

bool wants_ps(const JobOptions& o, const EnvConfig& env) {
  if (o.mode == "ps") return true;
  if (o.mode != "auto" || !env.tf_config) return false;
  return !parse_cluster_spec(*env.tf_config, "TF_CONFIG", false).job("ps").empty();
}

// What every ps task and worker of a job must agree on. Without a model (a ps task that learns
// it from the workers) the model and optimizer are left to the first hello.
nlohmann::json ps_agreement(const JobOptions& o, const Model* model, const OptimizerOptions& opt,
                            size_t workers) {
  nlohmann::json j = {{"workers", workers},
                      {"batch_size", o.spec.batch_size},
                      {"sync", o.ps.sync},
                      {"max_staleness", o.ps.max_staleness}};
  if (model) {
    j["model"] = model->spec();
    j["optimizer"] = optimizer_spec(opt);
  }
  return j;
}

std::string ps_task_name(const ClusterSpec& spec, size_t i) {
  return detail::cat("ps:", i, " (", spec.job("ps")[i].str(), ")");
}

uint64_t job_id(const EnvConfig& env, const ClusterSpec& spec) {
  return env.job_id.value_or(ps::job_id_of(spec));
}

}  // namespace

std::unique_ptr<Model> build_builtin_model(const JobSpec& spec, Backend& backend) {
  const ModelSpec& m = spec.model;
  return build_model(m.name, m.rows, m.cols, m.first_layer_neurons, m.second_layer_neurons,
                     m.classes, backend);
}

Dataset load_job_data(const JobOptions& o) {
  if (o.synthetic_data)
    return make_synthetic(o.synthetic_data, std::max<size_t>(o.synthetic_data / 6, 1), o.spec.seed);
  return load_mnist(o.data_folder);
}

Job::Job(JobOptions o, int* argc, char*** argv) : Job(std::move(o)) {
  start(argc, argv);
}

Job::Job(JobOptions o) : o_(std::move(o)) {}

void Job::start(int* argc, char*** argv) {
  if (started_ || device_.backend)
    throw Error("Job::start: this job was started already (a Job starts once)");
  const EnvConfig env = read_env();
  mode_ = o_.mode;
  if (mode_ == "auto")
    mode_ = wants_ps(o_, env) ? "ps" : launched_by_mpi_with_peers() ? "allreduce" : "local";
  if (mode_ != "ps") {
    // ps-mode settings would do nothing here; --secure above all must not look like it did
    // (MPI traffic is not encrypted).
    if (o_.ps.secure)
      throw InputError(
          detail::cat("--secure (DTRAIN_SECURE) encrypts a ps job's traffic; this is a ", mode_,
                      " job (an allreduce job's MPI traffic is not encrypted)"));
    if (!o_.ps.sync || o_.ps.max_staleness > 0)
      throw InputError(
          detail::cat("--ps-async and --max-staleness are for ps mode; this is a ", mode_, " job"));
  }
  if (mode_ == "ps") {
    if (o_.ps.sync && o_.ps.max_staleness > 0)
      throw InputError(
          "--max-staleness bounds an asynchronous job: give --ps-async too (a synchronous step "
          "waits for every worker already)");
    const ClusterSpec spec = tf_config_for_ps(env);
    if (*spec.task_type == "evaluator")
      throw InputError(
          "TF_CONFIG: evaluator tasks are not supported by mnist_train (the chief evaluates)");
    ps_task_ = *spec.task_type == "ps";
    if (ps_task_) {
      set_log_identity("ps", spec.task_index, spec.job("ps").size());
    } else {
      if (o_.device == "cuda")
        throw InputError(
            "--device cuda: parameter-server workers train on the CPU in this version (use "
            "--mode allreduce for GPUs, or --device cpu)");
      set_log_identity(*spec.task_type, spec.task_index, spec.num_workers());
    }
    device_ = choose_device("cpu", 0);
    zmq_ = std::make_unique<zmq::context_t>(2);
    if (o_.ps.secure) keys_ = std::make_unique<ps::CurveKeys>(ps::load_curve_keys(ps_task_, env));
    started_ = true;
    return;
  }
  if (mode_ == "local") {
    set_log_identity("worker", 0, 1);
    device_ = choose_device(o_.device, 0);
    started_ = true;
    return;
  }
  if (mode_ == "allreduce") {
    mpi_ = std::make_unique<MpiCommunicator>(argc, argv);
    set_log_identity("rank", mpi_->rank(), mpi_->size());
    device_ = choose_device(o_.device, mpi_->local_rank());
    // Collectives every rank makes, whatever it chooses later.
    even_machines_ = HierarchicalAllreduce::machines_even(*mpi_);
    // Where the rank landed: the node, its place there (which picks its GPU) and the device.
    // The cross communicator joins the ranks of one local rank across machines: its rank and
    // size are the machine's index and count when every machine has as many ranks, and nothing
    // meaningful otherwise (rank 2 of dtn1:1,dtn2:3 said 'node 0 of 1'), so then they go.
    log_debug("node ", host_name(), ": local rank ", mpi_->local_rank(), " of ", mpi_->local_size(),
              even_machines_
                  ? detail::cat(", node ", mpi_->cross_rank(), " of ", mpi_->cross_size())
                  : std::string(),
              ", device ", device_.cuda ? detail::cat("cuda:", device_.gpu) : std::string("cpu"));
    const std::string kinds = device_kind_problem(
        mpi_->allgather(device_.cuda ? "cuda" : "cpu", "agreeing on the device"));
    if (!kinds.empty()) throw ConsistencyError(kinds);  // every rank sees the same list
    const EnvConfig env = read_env();
    const StallOptions stall = stall_options(o_.stall_warning_s, o_.stall_timeout_s, env);
    // On a stall timeout NCCL's communicator is aborted first, so no GPU kernel waits on.
    mpi_->watch_stalls(stall, env.network_interfaces.empty() ? "" : env.network_interfaces[0],
                       [this] {
                         if (nccl_) nccl_->abort(kStallExitCode);
                       });
    if (device_.cuda) {
      const CudaPlugin* cuda = cuda_plugin(nullptr);  // loaded by choose_device
      // Refused only when ranks really share a GPU (same UUID), not by counting devices.
      const std::string problem = gpu_sharing_problem(
          mpi_->allgather(cuda->device_uuid(device_.gpu), "gathering the ranks' GPU UUIDs"));
      if (!problem.empty()) throw ConsistencyError(problem);  // every rank sees the same list
      nccl_.reset(cuda->make_nccl(*mpi_, *device_.backend));
    }
    started_ = true;
    return;
  }
  throw InputError("--mode " + mode_ + " is not available in this build");
}

Job::~Job() = default;

void Job::abort(int code) {
  if (!mpi_ || mpi_->size() < 2) return;  // nobody waits for a lone process or a ps task
  if (nccl_) nccl_->abort(code);
  mpi_->abort(code);
}

// The chooser: the one place that maps a role to a strategy.
void Job::require_started(const char* what) const {
  if (!started_)
    throw Error(detail::cat(what,
                            ": the job is not started (construct it with argc and argv, or "
                            "call start() first and check that it returned)"));
}

Backend& Job::backend() {
  require_started("Job::backend");
  return *device_.backend;
}

std::unique_ptr<Model> Job::build_model(const ModelFactory& make_model, Backend& backend) const {
  if (!make_model) throw InputError("the job was given no model factory");
  std::unique_ptr<Model> model = make_model(o_.spec, backend);
  if (!model) throw InputError("the model factory returned no model (a null pointer)");
  if (&model->backend() != &backend)
    throw InputError(detail::cat("the model factory built the model on the ",
                                 model->backend().name(), " backend, not on the ", backend.name(),
                                 " backend it was given: pass that backend to the Model"));
  return model;
}

std::unique_ptr<GradientSync> Job::make_sync(const Model& model, const Optimizer& opt) {
  require_started("Job::make_sync");
  if (mode_ == "local") return std::make_unique<LocalSync>();
  const EnvConfig env = read_env();
  if (mode_ == "allreduce") {
    AllreduceOptions ao;
    if (env.fusion_threshold_bytes) ao.fusion_threshold_bytes = *env.fusion_threshold_bytes;
    if (o_.fusion_threshold_mb >= 0)
      ao.fusion_threshold_bytes = static_cast<size_t>(o_.fusion_threshold_mb * 1024 * 1024);
    ao.shared_memory = env.allreduce_shm;
    if (nccl_) {
      if (env.hierarchical.value_or(false))
        log_info(
            "note: DTRAIN_HIERARCHICAL=1 is for CPU ranks; GPUs reduce through NCCL, whose "
            "rings and trees already follow the machines");
      return std::make_unique<BucketedAllreduce>(*nccl_, ao, mpi_.get());
    }
    // Shared memory needs CPU ranks; the one-machine and the hierarchical path both use it, and
    // room in Open MPI's backing folder: each rank's gradient slot and its published pieces of
    // the parameters and optimizer state. A small /dev/shm (Docker's 64 MB: the CNN with Adam on
    // 2 ranks needs 105 MB) failed with MPI_ERR_INTERN; now the job says so and uses
    // MPI_Allreduce. (Ranks of one machine see the same folder; should they still decide
    // differently, the start-up check names the strategy they disagree on.)
    if (ao.shared_memory && model.on_host()) {
      const char* dir = std::getenv("OMPI_MCA_osc_sm_backing_directory");
      const std::string backing = dir && *dir ? dir : "/dev/shm";
      const double need = double(mpi_->local_size()) * double(model.param_count()) * sizeof(float) *
                          double(2 + opt.slots());
      struct statvfs fs {};
      if (statvfs(backing.c_str(), &fs) == 0 && double(fs.f_bavail) * double(fs.f_frsize) < need) {
        log_info("note: ", backing, " has ", (fs.f_bavail * fs.f_frsize) >> 20,
                 " MB free; the shared-memory allreduce of this machine's ", mpi_->local_size(),
                 " ranks needs about ", static_cast<size_t>(need) >> 20,
                 " MB: using MPI_Allreduce (a larger ", backing,
                 ", e.g. docker run --shm-size, keeps the faster path)");
        ao.shared_memory = false;
      }
    }
    // Every rank of the job decides together: one machine short of room left its ranks on
    // MPI_Allreduce and the others on the hierarchical path, and the start-up check ended the
    // job ('rank 2 disagrees with rank 0 on allreduce_strategy'). Every CPU rank makes this sum.
    if (model.on_host()) {
      double short_of_room = env.allreduce_shm && !ao.shared_memory ? 1 : 0;
      mpi_->allreduce(&short_of_room, 1, OpName{"shared-memory room"});
      if (short_of_room > 0 && ao.shared_memory) {
        if (mpi_->rank() == 0)
          log_info("note: ", static_cast<int>(short_of_room),
                   " rank(s) of this job have too little room for the shared-memory allreduce "
                   "(see their note): every rank uses MPI_Allreduce");
        ao.shared_memory = false;
      }
      if (short_of_room > 0 && env.hierarchical.value_or(false))
        throw InputError(
            "DTRAIN_HIERARCHICAL=1 needs the shared-memory allreduce on every machine, and a "
            "machine of this job has too little room for it (its ranks' note says how much)");
    }
    if (env.hierarchical.value_or(false)) {
      if (!model.on_host() || !even_machines_)
        throw InputError(detail::cat(
            "DTRAIN_HIERARCHICAL=1 needs CPU ranks and the same number of ranks on every machine "
            "(this rank's machine has ",
            mpi_->local_size(), " of the job's ", mpi_->size(), ")"));
      return std::make_unique<HierarchicalAllreduce>(*mpi_, ao);
    }
    if (ao.shared_memory && model.on_host()) {
      if (SharedMemoryAllreduce::available(*mpi_))  // every rank on this machine
        return std::make_unique<SharedMemoryAllreduce>(*mpi_, ao);
      const size_t per_machine = mpi_->local_size();
      if (!env.hierarchical.has_value() && even_machines_ && per_machine > 1 &&
          per_machine < mpi_->size())
        return std::make_unique<HierarchicalAllreduce>(*mpi_, ao);
    }
    return std::make_unique<BucketedAllreduce>(*mpi_, ao);
  }
  // A parameter-server worker.
  const ClusterSpec spec = tf_config_for_ps(env);
  ps::ClientOptions c;
  for (size_t i = 0; i < spec.job("ps").size(); ++i) {
    c.servers.push_back(ps::tcp_connect_endpoint(spec.job("ps")[i], env.network_interfaces));
    c.server_names.push_back(ps_task_name(spec, i));
  }
  c.worker_rank = spec.worker_rank();
  c.num_workers = spec.num_workers();
  c.start_timeout_s = o_.ps.start_timeout_s;
  c.step_timeout_s = o_.ps.step_timeout_s;
  c.stall_warning_s = stall_options(o_.stall_warning_s, o_.stall_timeout_s, env).warning_s;
  c.job_id = job_id(env, spec);
  c.job = ps_agreement(o_, &model, opt.options(), c.num_workers);
  c.overlap = !o_.ps.sync && o_.ps.max_staleness == 0;
  c.sync = o_.ps.sync;
  c.shm = env.ps_shm && !o_.ps.secure;
  c.curve = keys_.get();
  return std::make_unique<ps::ParameterServerSync>(*zmq_, c);
}

void Job::serve(const ModelFactory& make_model) {
  require_started("Job::serve");
  if (!ps_task_) throw Error("Job::serve: this process is not a ps task");
  const EnvConfig env = read_env();
  const ClusterSpec spec = tf_config_for_ps(env);
  // The layout the workers train: built on the CPU only to learn its size and description (or
  // learnt from the workers' hellos when there is no factory).
  const std::unique_ptr<Model> model =
      make_model ? build_model(make_model, cpu_backend()) : nullptr;
  ps::ServerOptions s;
  s.name = ps_task_name(spec, spec.task_index);
  for (const auto& [type, index] : spec.training_tasks())
    s.worker_names.push_back(detail::cat(type, ":", index, " (", spec.job(type)[index].str(), ")"));
  std::optional<ps::ZapHandler> zap;
  if (keys_) {
    zap.emplace(*zmq_, keys_->client_public, s.name);
    s.curve = keys_.get();
  }
  s.bind = ps::tcp_bind_endpoint(spec.job("ps")[spec.task_index], env.network_interfaces);
  s.index = spec.task_index;
  s.num_servers = spec.job("ps").size();
  s.num_workers = spec.num_workers();
  s.learn_model = !model;
  s.param_count = model ? model->param_count() : 0;
  s.optimizer = o_.spec.optimizer;
  s.async = !o_.ps.sync;
  s.max_staleness = o_.ps.sync ? 0 : o_.ps.max_staleness;
  s.start_timeout_s = o_.ps.start_timeout_s;
  s.step_timeout_s = o_.ps.step_timeout_s;
  s.stall_warning_s = stall_options(o_.stall_warning_s, o_.stall_timeout_s, env).warning_s;
  s.job_id = job_id(env, spec);
  s.job = ps_agreement(o_, model.get(), o_.spec.optimizer, s.num_workers);
  ps::Server server(*zmq_, s);
  server.run();
}

TrainResult Job::train(const ModelFactory& make_model, const Dataset& data) {
  require_started("Job::train");
  if (ps_task_) throw Error("Job::train: this process is a ps task (call serve)");
  // --device auto settling for the CPU is said at the normal level, with the reason.
  if (!device_.note.empty()) {
    if (o_.device == "auto" && !device_.cuda && built_with_cuda())
      log_info("note: --device auto: ", device_.note);
    else
      log_debug(device_.note);
  }
  if (device_.backend->host_memory()) {
    // A slow path is never silent: below AVX2, oneDNN has no fast kernels for this CPU.
    const std::string isa = cpu::cpu_isa();
    if (isa == "sse41" || isa == "avx")
      log_info("warning: oneDNN runs its ", isa,
               " kernels on this CPU (no AVX2), so training is slow; is DNNL_MAX_CPU_ISA set?");
    else
      log_debug("CPU kernels: oneDNN ", isa);
  }
  std::unique_ptr<Model> model = build_model(make_model, *device_.backend);
  Optimizer opt(o_.spec.optimizer, model->param_count(), device_.backend);
  sync_ = make_sync(*model, opt);
  log_debug("training ", model->param_count(), " parameters on ", device_.backend->name(), " with ",
            sync_->name(), " sync, world size ", sync_->world());
  Trainer trainer(*model, opt, *sync_, data, o_.spec);
  TrainResult r = trainer.run();
  sync_.reset();  // before the model whose gradient buffer it may lend
  return r;
}

namespace {

std::atomic<bool> g_graceful_stop{false};

// SIGTERM (preemption, the launcher stopping the job). Once training runs, it ends training after
// the current step with a checkpoint there (Trainer, request_stop); another one more than 2 s
// later ends the process at once (mpirun forwards the launcher's SIGTERM, so two arrive together);
// before training (start-up, data, a ps task serving) it ends the process at once, as the default
// action did. No thread runs a signal handler: SIGTERM is blocked in every thread (they inherit
// the mask from here) and one thread waits for it with sigwait. A handler runs on whatever thread
// the signal interrupts, and oneDNN's JIT kernels keep data below their stack pointer, which a
// handler's frame overwrote (heap corruption in 5 of 12 runs stopped by SIGTERM).
void watch_sigterm() {
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      std::chrono::steady_clock::time_point first;
      for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        const auto now = std::chrono::steady_clock::now();
        if (!g_graceful_stop || (stop_requested() && now - first > std::chrono::seconds(2)))
          _exit(128 + SIGTERM);
        if (!stop_requested()) first = now;
        request_stop();
      }
    }).detach();
  });
}

}  // namespace

int run_job(const JobOptions& o, int argc, char** argv, const ModelFactory& make_model) {
  std::unique_ptr<Job> job;
  // An error all ranks share exits normally; one only this rank has takes the others down with
  // it, since they would wait for it forever.
  auto fail = [&](const std::exception& e, int code, bool shared) {
    log_info("error: ", e.what());
    if (job && !shared) job->abort(code);
    return code;
  };
  try {
    watch_sigterm();
    set_verbose(o.verbose);
    cpu::set_blas_threads(1);
    cpu::flush_denormals_on_this_thread();
    job = std::make_unique<Job>(o);
    job->start(&argc, &argv);  // a failure here on one rank only can still abort the job
    if (job->is_ps_task()) {
      job->serve(make_model);
      return 0;
    }
    // From here on training may stop gracefully on SIGTERM (see watch_sigterm).
    g_graceful_stop = true;
    const Dataset data = load_job_data(o);
    job->train(make_model, data);
    return 0;
  } catch (const StopRequested& e) {
    log_info(e.what());
    return 128 + SIGTERM;
  } catch (const ConsistencyError& e) {
    return fail(e, 2, true);
  } catch (const InputError& e) {
    return fail(e, 2, false);
  } catch (const std::exception& e) {
    return fail(e, 1, false);
  }
}

}  // namespace dtrain
