// The CUDA side of dtrain (CudaBackend, NCCL) as a plugin, libdtrain_cuda.so next to the
// binaries, opened with dlopen only when a job asks for a GPU (--device cuda, or auto). A CPU run
// never loads libcudart, libcublas(Lt), libcudnn or libnccl: in a CPU run of a CUDA build they
// cost ~84 MB of private memory (libcublasLt's relocated data) and ~60 MB resident.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace dtrain {

class Backend;
class Communicator;
class MpiCommunicator;

// The plugin's entry points (one table, looked up by name once).
struct CudaPlugin {
  int (*device_count)(std::string* why);
  int (*select_device)(size_t local_rank);
  std::string (*device_uuid)(int device);
  Backend* (*make_backend)(int device);  // a new CudaBackend, owned by the caller
  // A new NCCL communicator for the GPU of `gpu` (a backend this plugin made); mpi carries the
  // start-up exchange and must outlive it.
  Communicator* (*make_nccl)(MpiCommunicator& mpi, Backend& gpu);
};

// Opens the plugin on first use. Null, with *why saying what is missing (this build has no CUDA,
// the plugin file, or a library it needs, as dlopen names it), when it cannot be loaded.
const CudaPlugin* cuda_plugin(std::string* why);

}  // namespace dtrain
