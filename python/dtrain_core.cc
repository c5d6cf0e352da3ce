// dtrain._core: the C++ side of `import dtrain.torch` (python/dtrain/torch/, one module per part).
// Allreduce mode: it holds the job's MpiCommunicator (allreduce/mpi_communicator.h: the same
// background-thread allreduce, stall watchdog and error messages as mnist_train's ranks) and
// offers collectives on raw CPU buffers, so the module needs no PyTorch C++ headers: Python
// passes tensor.data_ptr() and sizes.
// Parameter-server mode: a dtrain::Job in ps mode, as mnist_train's. A ps task serves a model it
// learns from the workers' hellos; a worker holds a Model whose one layer is the PyTorch model's
// flat parameters (TorchParameters) and drives the job's ParameterServerSync over it.
// Blocking calls release the GIL.
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "allreduce/allreduce_start.h"
#include "allreduce/mpi_communicator.h"
#include "dtrain/flags.h"
#include "dtrain/job.h"
#include "paramserver/client.h"
#include "runtime/cluster_spec.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace py = pybind11;
using namespace dtrain;

namespace {

std::unique_ptr<MpiCommunicator> g_comm;

MpiCommunicator& comm() {
  if (!g_comm) throw InputError("dtrain.torch is not initialized: call dtrain.torch.init() first");
  return *g_comm;
}

void init(double stall_warning_s, double stall_timeout_s) {
  if (g_comm) return;
  // Open MPI's components are plugins that need libmpi's symbols: a Python extension is loaded
  // RTLD_LOCAL, so make libmpi global first (what mpi4py does).
  dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
  // Python ranks have more threads than cores to spare (the interpreter's, PyTorch's, ours):
  // MPI's busy-polling wait measured 3x slower for 2 ranks on 2 cores. A user's setting wins.
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", /*overwrite=*/0);
  int argc = 0;
  char** argv = nullptr;
  g_comm = std::make_unique<MpiCommunicator>(&argc, &argv);
  set_log_identity("rank", g_comm->rank(), g_comm->size());
  const EnvConfig env = read_env();
  g_comm->watch_stalls(stall_options(stall_warning_s, stall_timeout_s, env),
                       env.network_interfaces.empty() ? "" : env.network_interfaces[0]);
}

// The shared windows handed to Python (SharedWindow): freed here, before MPI ends, whatever
// Python still holds (MPI_Win_free is collective: every rank frees them in the same order).
std::vector<std::shared_ptr<Communicator::SharedSlots>> g_windows;

void shutdown() {
  py::gil_scoped_release release;
  g_windows.clear();
  g_comm.reset();
}

// A window of shared memory among the job's ranks (all on this machine), for the
// DistributedOptimizer's sharded step: each rank's slot address and a fence (a barrier with memory
// synchronization), as SharedMemoryAllreduce uses them.
class SharedWindow {
 public:
  explicit SharedWindow(std::weak_ptr<Communicator::SharedSlots> s) : s_(std::move(s)) {}
  uintptr_t slot(size_t rank) { return reinterpret_cast<uintptr_t>(live()->slot(rank)); }
  void fence(const std::string& what) {
    auto s = live();
    py::gil_scoped_release release;
    s->fence(OpName(what));
  }

 private:
  std::shared_ptr<Communicator::SharedSlots> live() {
    auto s = s_.lock();
    if (!s) throw InputError("dtrain.torch: this shared window ended with dtrain.torch.shutdown()");
    return s;
  }
  std::weak_ptr<Communicator::SharedSlots> s_;
};

// Among the ranks of this rank's machine (slot k: local rank k's); `bytes` may differ between
// ranks. A collective of those ranks.
SharedWindow local_shared(size_t bytes, const std::string& name) {
  MpiCommunicator& c = comm();
  std::unique_ptr<Communicator::SharedSlots> s;
  {
    py::gil_scoped_release release;
    s = c.local_shared(bytes, OpName(name));
  }
  if (!s) throw Error("dtrain.torch: " + name + ": no shared memory on this machine");
  g_windows.push_back(std::move(s));
  return SharedWindow(g_windows.back());
}

// Sums float32s in place among the ranks with this rank's local rank, one per machine.
void cross_allreduce(uintptr_t ptr, size_t count, const std::string& name) {
  MpiCommunicator& c = comm();
  py::gil_scoped_release release;
  c.cross_allreduce(reinterpret_cast<float*>(ptr), count, OpName(name));
}

size_t elem_size(const std::string& dtype) {
  if (dtype == "float32") return 4;
  if (dtype == "float64") return 8;
  throw InputError("dtrain.torch: allreduce supports float32 and float64 tensors, not " + dtype);
}

void allreduce(uintptr_t ptr, size_t count, const std::string& dtype, bool average,
               const std::string& name) {
  MpiCommunicator& c = comm();
  elem_size(dtype);
  py::gil_scoped_release release;
  if (dtype == "float32") {
    c.allreduce(reinterpret_cast<float*>(ptr), count, average ? ReduceOp::kAverage : ReduceOp::kSum,
                OpName(name));
  } else {
    auto* d = reinterpret_cast<double*>(ptr);
    c.allreduce(d, count, OpName(name));
    if (average)
      for (size_t i = 0; i < count; ++i) d[i] /= static_cast<double>(c.size());
  }
}

ElementType element_type(const std::string& dtype) {
  static const std::map<std::string, ElementType> types = {
      {"uint8", ElementType::kUInt8},    {"int8", ElementType::kInt8},
      {"int16", ElementType::kInt16},    {"int32", ElementType::kInt32},
      {"int64", ElementType::kInt64},    {"float32", ElementType::kFloat32},
      {"float64", ElementType::kFloat64}};
  const auto t = types.find(dtype);
  if (t == types.end()) throw InputError("dtrain.torch: cannot reduce " + dtype + " tensors");
  return t->second;
}

Reduction reduction(const std::string& op) {
  static const std::map<std::string, Reduction> ops = {{"sum", Reduction::kSum},
                                                       {"min", Reduction::kMin},
                                                       {"max", Reduction::kMax},
                                                       {"product", Reduction::kProduct}};
  const auto o = ops.find(op);
  if (o == ops.end()) throw InputError("dtrain.torch: no reduction '" + op + "'");
  return o->second;
}

// Any element type and reduction (dtrain.torch's integer tensors, min, max, product).
void allreduce_any(uintptr_t ptr, size_t count, const std::string& dtype, const std::string& op,
                   const std::string& name) {
  const ElementType t = element_type(dtype);
  const Reduction o = reduction(op);
  MpiCommunicator& c = comm();
  py::gil_scoped_release release;
  c.allreduce_any(reinterpret_cast<void*>(ptr), count, t, o, OpName(name));
}

// Rank r gets the reduction of block r of `in` (counts[r] elements each, in rank order) in out.
void reduce_scatter_any(uintptr_t in, uintptr_t out, const std::vector<size_t>& counts,
                        const std::string& dtype, const std::string& op, const std::string& name) {
  const ElementType t = element_type(dtype);
  const Reduction o = reduction(op);
  MpiCommunicator& c = comm();
  py::gil_scoped_release release;
  c.reduce_scatter_any(reinterpret_cast<const void*>(in), reinterpret_cast<void*>(out), counts, t,
                       o, OpName(name));
}

std::vector<py::bytes> alltoall_bytes(const std::vector<std::string>& parts,
                                      const std::string& name) {
  MpiCommunicator& c = comm();
  if (parts.size() != c.size())
    throw InputError(detail::cat("dtrain.torch: alltoall needs one part per rank (", c.size(),
                                 "), not ", parts.size()));
  std::vector<std::string> got;
  {
    py::gil_scoped_release release;
    got = c.alltoall(parts, OpName(name));
  }
  return {got.begin(), got.end()};
}

// A non-blocking float32 allreduce (the DistributedOptimizer's buckets).
class Handle {
 public:
  explicit Handle(std::unique_ptr<Communicator::Handle> h) : h_(std::move(h)) {}
  void wait() {
    py::gil_scoped_release release;
    if (h_) h_->wait();
  }
  bool done() { return !h_ || h_->test(); }

 private:
  std::unique_ptr<Communicator::Handle> h_;
};

Handle iallreduce(uintptr_t ptr, size_t count, bool average, const std::string& name) {
  return Handle(comm().iallreduce(reinterpret_cast<float*>(ptr), count,
                                  average ? ReduceOp::kAverage : ReduceOp::kSum, OpName(name)));
}

void broadcast(uintptr_t ptr, size_t bytes, size_t root, const std::string& name) {
  MpiCommunicator& c = comm();
  if (root >= c.size())
    throw InputError(
        detail::cat("dtrain.torch: root_rank ", root, " but the job has ", c.size(), " ranks"));
  py::gil_scoped_release release;
  c.broadcast(reinterpret_cast<void*>(ptr), bytes, root, OpName(name));
}

py::bytes broadcast_bytes(const std::string& data, size_t root, const std::string& name) {
  MpiCommunicator& c = comm();
  if (root >= c.size())
    throw InputError(
        detail::cat("dtrain.torch: root_rank ", root, " but the job has ", c.size(), " ranks"));
  std::string out;
  {
    py::gil_scoped_release release;
    uint64_t n = c.rank() == root ? data.size() : 0;
    c.broadcast(&n, sizeof(n), root, OpName(name + " (size)"));
    out = c.rank() == root ? data : std::string(n, '\0');
    c.broadcast(out.data(), n, root, OpName(name));
  }
  return py::bytes(out);
}

std::vector<py::bytes> allgather_bytes(const std::string& data, const std::string& name) {
  std::vector<std::string> all;
  {
    py::gil_scoped_release release;
    all = comm().allgather(data, OpName(name));
  }
  return {all.begin(), all.end()};
}

// Every rank's description (JSON object) must equal rank 0's: a ConsistencyError naming the first
// rank and field that differ (the same check mnist_train's ranks make at start-up).
void check_agreement(const std::string& json_object) {
  const nlohmann::json j = nlohmann::json::parse(json_object);
  py::gil_scoped_release release;
  check_job_consistency(comm(), j);
}

// ---- parameter-server mode ----

// A PyTorch model's parameters as the one layer of a dtrain Model: the flat buffers the ps
// strategy pushes from and pulls into. It never runs forward or backward (PyTorch does).
class TorchParameters : public Layer {
 public:
  TorchParameters(size_t count, nlohmann::json tensors)
      : count_(count), tensors_(std::move(tensors)) {}
  std::string kind() const override { return "torch"; }
  nlohmann::json spec() const override {
    return {{"kind", "torch"}, {"param_count", count_}, {"tensors", tensors_}};
  }
  size_t in_size() const override { return 1; }
  size_t out_size() const override { return 1; }
  size_t param_count() const override { return count_; }
  void forward(const float*, float*, size_t) override { throw Error(kNotHere); }
  void backward(const float*, const float*, float*, float*, size_t, const GradReady&) override {
    throw Error(kNotHere);
  }

 private:
  static constexpr const char* kNotHere = "a PyTorch model's parameters: PyTorch runs the layers";
  size_t count_;
  nlohmann::json tensors_;
};

struct PsWorker {
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<GradientSync> sync;
  ps::ParameterServerSync* ps = nullptr;  // sync, as what it is
  Timeline timeline;                      // disabled
  bool started = false;
};

std::unique_ptr<Job> g_ps_job;
std::unique_ptr<PsWorker> g_ps;

Job& ps_job() {
  if (!g_ps_job)
    throw InputError("dtrain.torch is not initialized in ps mode: call dtrain.torch.init() first");
  return *g_ps_job;
}

PsWorker& ps_worker() {
  if (!g_ps || !g_ps->started)
    throw InputError(
        "dtrain.torch (ps mode): this needs the job's parameter servers, which a worker joins "
        "when it creates its DistributedOptimizer: create it first");
  return *g_ps;
}

// Joins a ps-mode job as TF_CONFIG describes this task; the settings the launcher passes through
// the environment (DTRAIN_SECURE, DTRAIN_START_TIMEOUT) are read as mnist_train reads them.
// Returns {"role": "ps" or "worker", "rank", "size"}.
py::dict ps_init(bool ps_async, size_t max_staleness, double start_timeout, double step_timeout,
                 double stall_warning, double stall_timeout, bool verbose) {
  if (g_ps_job || g_comm) throw InputError("dtrain.torch.init(): already initialized");
  JobOptions o;
  CLI::App app;
  add_train_flags(app, o, /*with_model_flags=*/false);
  const char* argv[] = {"dtrain.torch"};
  try {
    app.parse(1, argv);  // no flags: only the environment's settings
  } catch (const CLI::ParseError& e) {
    throw InputError(std::string("dtrain.torch: the environment's settings: ") + e.what());
  }
  o.mode = "ps";
  o.device = "cpu";
  o.ps.sync = !ps_async;
  o.ps.max_staleness = max_staleness;
  if (start_timeout > 0) o.ps.start_timeout_s = start_timeout;
  if (step_timeout > 0) o.ps.step_timeout_s = step_timeout;
  o.stall_warning_s = stall_warning;
  o.stall_timeout_s = stall_timeout;
  o.verbose = verbose || o.verbose;
  if (ps_async == false && max_staleness > 0)
    throw InputError("dtrain.torch.init(): max_staleness needs ps_async=True");
  set_verbose(o.verbose);
  auto job = std::make_unique<Job>(o);
  job->start(nullptr, nullptr);
  g_ps_job = std::move(job);
  // Who this task is, from the same TF_CONFIG the job read.
  const ClusterSpec spec = parse_cluster_spec(*read_env().tf_config, "TF_CONFIG", true);
  py::dict d;
  const bool ps = g_ps_job->is_ps_task();
  d["role"] = ps ? "ps" : "worker";
  d["rank"] = ps ? spec.task_index : spec.worker_rank();
  d["size"] = ps ? spec.job("ps").size() : spec.num_workers();
  // Local rank and size: the training tasks on this task's host, in rank order.
  size_t local_rank = 0, local_size = 0;
  const std::string& me = spec.job(*spec.task_type)[spec.task_index].host;
  for (const auto& [type, index] : spec.training_tasks()) {
    if (spec.job(type)[index].host != me) continue;
    if (!ps && type == *spec.task_type && index == spec.task_index) local_rank = local_size;
    ++local_size;
  }
  d["local_rank"] = local_rank;
  d["local_size"] = local_size;
  return d;
}

// ps task: serves until every worker is done, then ends the job: the ZeroMQ context's end sends
// what is still queued (the last worker's answer), which the process ending at once would drop.
void ps_serve() {
  ps_job();
  py::gil_scoped_release release;
  try {
    g_ps_job->serve(nullptr);  // the model comes with the workers' hellos
  } catch (...) {
    g_ps_job.reset();
    throw;
  }
  g_ps_job.reset();
}

// Worker: the flat buffers for `count` parameters and the optimizer the servers will run.
// Returns {"params", "grads", "state", "state_size"} (addresses of float32 buffers), which
// Python fills (the chief: its parameters and optimizer state) before ps_start().
py::dict ps_connect(size_t count, const std::string& tensors_json,
                    const std::string& optimizer_json) {
  Job& job = ps_job();
  if (g_ps) throw InputError("dtrain.torch (ps mode): one DistributedOptimizer per process");
  auto w = std::make_unique<PsWorker>();
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<TorchParameters>(count, nlohmann::json::parse(tensors_json)));
  w->model = std::make_unique<Model>(1, 1, std::move(layers), cpu_backend());
  const OptimizerOptions oo =
      optimizer_options(nlohmann::json::parse(optimizer_json), "dtrain.torch");
  w->opt = std::make_unique<Optimizer>(oo, count);
  // The hello carries the model and the optimizer the servers are to run.
  w->sync = job.make_sync(*w->model, *w->opt);
  w->ps = dynamic_cast<ps::ParameterServerSync*>(w->sync.get());
  if (!w->ps) throw Error("dtrain.torch: the job did not choose the parameter-server strategy");
  py::dict d;
  d["params"] = reinterpret_cast<uintptr_t>(w->model->params());
  d["grads"] = reinterpret_cast<uintptr_t>(w->model->grads());
  d["state"] = reinterpret_cast<uintptr_t>(w->opt->state());
  d["state_size"] = w->opt->state_size();
  d["rank"] = w->sync->rank();
  d["size"] = w->sync->world();
  g_ps = std::move(w);
  return d;
}

// Returns where this worker continues (ResumePoint): zeros, except for a worker the launcher
// started again (--rejoin-workers), which continues where the servers saw it last.
py::dict ps_start(uint64_t steps) {
  if (!g_ps) throw InputError("dtrain.torch (ps mode): ps_connect first");
  PsWorker& w = *g_ps;
  w.opt->set_steps(steps);
  ResumePoint at;
  {
    py::gil_scoped_release release;
    at = w.sync->start(*w.model, *w.opt, nlohmann::json::object(), ResumePoint{}, w.timeline);
  }
  w.started = true;
  py::dict d;
  d["epoch"] = at.epoch;
  d["step"] = at.step;
  d["step_in_epoch"] = at.step_in_epoch;
  return d;
}

// One step: the gradient in the grads buffer goes to the servers, the new parameters come back
// into the params buffer.
void ps_step() {
  PsWorker& w = ps_worker();
  py::gil_scoped_release release;
  w.sync->finish_step(*w.model, *w.opt);
}

// Sums n doubles over the workers; returns whether the parameters changed first (async mode: an
// outstanding push's answer taken, which a sum must wait for).
bool ps_sum(uintptr_t ptr, size_t n) {
  PsWorker& w = ps_worker();
  py::gil_scoped_release release;
  const bool drained = w.ps->drain(*w.model);
  w.sync->sum(reinterpret_cast<double*>(ptr), n);
  return drained;
}

void ps_shutdown(bool ok) {
  py::gil_scoped_release release;
  if (g_ps && g_ps->started) g_ps->sync->finish(ok);
  g_ps.reset();
  g_ps_job.reset();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dtrain's communicator for dtrain.torch (raw CPU buffers; see dtrain/torch)";
  // pybind11 tries the translator registered last first: the most derived class goes last.
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);
  py::register_exception<InputError>(m, "InputError", PyExc_ValueError);
  m.def("init", &init, py::arg("stall_warning") = -1.0, py::arg("stall_timeout") = -1.0);
  m.def("shutdown", &shutdown);
  m.def("is_initialized", [] { return g_comm != nullptr || g_ps_job != nullptr; });
  m.def("ps_init", &ps_init, py::arg("ps_async"), py::arg("max_staleness"),
        py::arg("start_timeout"), py::arg("step_timeout"), py::arg("stall_warning"),
        py::arg("stall_timeout"), py::arg("verbose"));
  m.def("ps_serve", &ps_serve);
  m.def("ps_connect", &ps_connect);
  m.def("ps_start", &ps_start);
  m.def("ps_step", &ps_step);
  m.def("ps_sum", &ps_sum);
  m.def("ps_shutdown", &ps_shutdown, py::arg("ok") = true);
  m.def("rank", [] { return comm().rank(); });
  m.def("size", [] { return comm().size(); });
  m.def("local_rank", [] { return comm().local_rank(); });
  m.def("local_size", [] { return comm().local_size(); });
  m.def("cross_rank", [] { return comm().cross_rank(); });
  m.def("cross_size", [] { return comm().cross_size(); });
  m.def("allreduce", &allreduce);
  m.def("allreduce_any", &allreduce_any);
  m.def("reduce_scatter_any", &reduce_scatter_any);
  m.def("alltoall_bytes", &alltoall_bytes);
  py::class_<Handle>(m, "Handle").def("wait", &Handle::wait).def("done", &Handle::done);
  m.def("iallreduce", &iallreduce);
  m.def("broadcast", &broadcast);
  m.def("broadcast_bytes", &broadcast_bytes);
  m.def("allgather_bytes", &allgather_bytes);
  m.def("check_agreement", &check_agreement);
  m.def("abort", [](int code) { comm().abort(code); });
  py::class_<SharedWindow>(m, "SharedWindow")
      .def("slot", &SharedWindow::slot)
      .def("fence", &SharedWindow::fence);
  m.def("local_shared", &local_shared);
  m.def("cross_allreduce", &cross_allreduce);
  // DTRAIN_ALLREDUCE_SHM and DTRAIN_HIERARCHICAL as mnist_train reads them: false turns the
  // shared-memory path off; None (unset), True or False.
  m.def("allreduce_shm", [] { return read_env().allreduce_shm; });
  m.def("hierarchical", [] { return read_env().hierarchical; });
  // DTRAIN_FUSION_THRESHOLD as mnist_train reads it (units and all), default 64 MB.
  m.def("fusion_threshold", [] {
    return read_env().fusion_threshold_bytes.value_or(AllreduceOptions{}.fusion_threshold_bytes);
  });
}
