// dtrain::Job: the one place that turns a job description into a running job, as horovod_init
// and ps-lite's ps::Start do for theirs. It reads what the environment says about this process
// (TF_CONFIG, mpirun's variables, DTRAIN_*), decides its role (a lone worker, an allreduce rank,
// a parameter-server worker or a ps task), and owns what that role needs, created and destroyed
// in a fixed order: the backend first (a GPU's stream outlives everything that queues work on
// it), then the MPI and NCCL communicators or the ZeroMQ context and CURVE keys, then the
// GradientSync strategy that uses them.
//
// The strategy is chosen in one place (choose_strategy in job.cc): a new strategy is one class
// plus one line there.
//
//   JobOptions o = ...;                      // from flags (dtrain/flags.h) or by hand
//   dtrain::Job job(o, &argc, &argv);
//   if (job.is_ps_task()) job.serve(make_model);
//   else job.train(make_model, data);
//
// or simply `return dtrain::run_job(o, argc, argv, make_model);` from main().
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dtrain/device.h"
#include "runtime/dataset.h"
#include "runtime/gradient_sync.h"
#include "runtime/job_spec.h"
#include "runtime/model.h"
#include "runtime/trainer.h"

namespace zmq {
class context_t;
}

namespace dtrain {

class Communicator;
class MpiCommunicator;
namespace ps {
struct CurveKeys;
}

// Parameter-server settings: shared by the ps tasks and their workers.
struct PsJobOptions {
  bool sync = true;          // false: asynchronous updates
  size_t max_staleness = 0;  // async: steps a worker may run ahead of the slowest (0: no bound)
  double start_timeout_s = 60;
  double step_timeout_s = 60;
  bool secure = false;  // CURVE: keys from DTRAIN_PS_* variables
};

// Everything that decides a job: the shared description plus how this process runs it.
struct JobOptions {
  JobSpec spec;
  std::string mode = "auto";    // auto, local, allreduce, ps
  std::string device = "auto";  // auto, cpu, cuda
  std::string data_folder = "data/mnist";
  size_t synthetic_data = 0;  // > 0: train on this many generated samples instead of MNIST
  bool verbose = false;
  double fusion_threshold_mb = -1;  // allreduce buckets; < 0: DTRAIN_FUSION_THRESHOLD or 64
  // Allreduce stall watchdog (allreduce/stall_watchdog.h): seconds in one collective before a
  // warning, and before the job ends (0: never); < 0: DTRAIN_STALL_WARNING / _TIMEOUT, else 60
  // and 600.
  double stall_warning_s = -1, stall_timeout_s = -1;
  PsJobOptions ps;
};

// Builds the job's model on a backend: the same call in every process (a ps task calls it on
// the CPU to learn the parameter count and layout it serves).
using ModelFactory = std::function<std::unique_ptr<Model>(const JobSpec& spec, Backend& backend)>;

// The built-in models: spec.model.name "mlp" or "cnn".
std::unique_ptr<Model> build_builtin_model(const JobSpec& spec, Backend& backend);

// MNIST from o.data_folder, or o.synthetic_data generated samples.
Dataset load_job_data(const JobOptions& o);

class Job {
 public:
  // Decides the role and starts what it needs (start(): MPI_Init for allreduce ranks, the
  // device, NCCL). Throws InputError for a configuration that cannot run, naming what is wrong.
  Job(JobOptions o, int* argc, char*** argv);
  // The same in two steps, for callers that must be able to abort() the job when start() fails
  // on some ranks only (the others would wait for them forever): run_job does this.
  explicit Job(JobOptions o);
  void start(int* argc, char*** argv);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // A TF_CONFIG "ps" task: call serve(), not train().
  bool is_ps_task() const { return ps_task_; }
  // ps task: serves this task's shard of the model's parameters until every worker is done.
  // Without a factory the task learns the model (parameter count, optimizer) from the workers'
  // hellos: for models that live in another framework (dtrain.torch).
  void serve(const ModelFactory& make_model);
  // Worker: builds the model on the job's backend and trains it on `data`.
  TrainResult train(const ModelFactory& make_model, const Dataset& data);

  const JobOptions& options() const { return o_; }
  // The job's backend (after start(); before it, an Error saying so).
  Backend& backend();
  // "local", "allreduce" or "ps" (after construction; a ps task says "ps").
  const std::string& mode() const { return mode_; }
  // A failure only this process knows about: ends every process of the job now (MPI_Abort), so
  // none waits forever for this one. For main()s; the library never calls it itself.
  void abort(int code);

  // The job's strategy for `model` trained with `opt` (what train() uses; built once per call):
  // for programs that run their own training loop over the model's flat buffers (dtrain.torch's
  // ps workers). The job must outlive it.
  std::unique_ptr<GradientSync> make_sync(const Model& model, const Optimizer& opt);

 private:
  // Throws an Error naming `what` when start() has not run (or failed).
  void require_started(const char* what) const;
  // The model `make_model` builds on `backend`, checked: not null, and on that backend.
  std::unique_ptr<Model> build_model(const ModelFactory& make_model, Backend& backend) const;

  JobOptions o_;
  bool started_ = false;
  std::string mode_;
  bool ps_task_ = false;
  // Declared in the order they are created; destroyed in reverse.
  DeviceChoice device_;
  std::unique_ptr<MpiCommunicator> mpi_;
  bool even_machines_ = false;  // every machine holds the same number of ranks (allreduce)
  std::unique_ptr<Communicator> nccl_;
  std::unique_ptr<zmq::context_t> zmq_;
  std::unique_ptr<ps::CurveKeys> keys_;
  std::unique_ptr<GradientSync> sync_;
};

// A training program's main() after its flags: runs the job (serving or training), logs an
// error and turns it into the exit code (2: bad input, 1: anything else), taking the other ranks
// down when only this one failed.
int run_job(const JobOptions& o, int argc, char** argv, const ModelFactory& make_model);

}  // namespace dtrain
