// dtrain._core: the C++ side of `import dtrain.torch` (python/dtrain/torch/__init__.py). It holds
// the job's MpiCommunicator (allreduce/mpi_communicator.h: the same background-thread
// allreduce, stall watchdog and error messages as mnist_train's ranks) and offers collectives
// on raw CPU buffers, so the module needs no PyTorch C++ headers: Python passes
// tensor.data_ptr() and sizes. Blocking calls release the GIL.
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "allreduce/allreduce_start.h"
#include "allreduce/mpi_communicator.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"

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

void shutdown() {
  py::gil_scoped_release release;
  g_comm.reset();
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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dtrain's communicator for dtrain.torch (raw CPU buffers; see dtrain/torch)";
  // pybind11 tries the translator registered last first: the most derived class goes last.
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<TimeoutError>(m, "TimeoutError", PyExc_TimeoutError);
  py::register_exception<InputError>(m, "InputError", PyExc_ValueError);
  m.def("init", &init, py::arg("stall_warning") = -1.0, py::arg("stall_timeout") = -1.0);
  m.def("shutdown", &shutdown);
  m.def("is_initialized", [] { return g_comm != nullptr; });
  m.def("rank", [] { return comm().rank(); });
  m.def("size", [] { return comm().size(); });
  m.def("local_rank", [] { return comm().local_rank(); });
  m.def("local_size", [] { return comm().local_size(); });
  m.def("cross_rank", [] { return comm().cross_rank(); });
  m.def("cross_size", [] { return comm().cross_size(); });
  m.def("allreduce", &allreduce);
  py::class_<Handle>(m, "Handle").def("wait", &Handle::wait).def("done", &Handle::done);
  m.def("iallreduce", &iallreduce);
  m.def("broadcast", &broadcast);
  m.def("broadcast_bytes", &broadcast_bytes);
  m.def("allgather_bytes", &allgather_bytes);
  m.def("check_agreement", &check_agreement);
  m.def("abort", [](int code) { comm().abort(code); });
  // DTRAIN_FUSION_THRESHOLD as mnist_train reads it (units and all), default 64 MB.
  m.def("fusion_threshold", [] {
    return read_env().fusion_threshold_bytes.value_or(AllreduceOptions{}.fusion_threshold_bytes);
  });
}
