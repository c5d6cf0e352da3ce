// Chooses the Backend for --device: cpu, cuda, or auto (cuda when this build has the CUDA backend
// and a GPU is present, else cpu). Knows about CUDA so that runtime/
// does not have to.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"

namespace dtrain {

struct DeviceChoice {
  std::unique_ptr<Backend> owned;  // null for the shared CPU backend
  Backend* backend = nullptr;
  bool cuda = false;
  int gpu = -1;
  std::string note;  // why auto chose what it chose
};

// local_rank picks the GPU (local_rank % device count). --device cuda without a usable GPU, or
// in a build without CUDA, is an InputError saying which.
DeviceChoice choose_device(const std::string& device, size_t local_rank);

// NCCL needs a GPU per rank. Given every rank's GPU UUID (in rank order), the ranks that would
// share one, as an error message; empty when each rank has its own. Counting GPUs is not enough:
// with CUDA_VISIBLE_DEVICES set per rank (Slurm --gpus-per-task, Kubernetes) every rank sees one
// GPU, and they are all different.
std::string gpu_sharing_problem(const std::vector<std::string>& uuid_per_rank);

// Every rank of an allreduce job must train on the same kind of device: given each rank's
// ("cpu" or "cuda", in rank order), the first rank that differs from rank 0, as an error message;
// empty when they agree. --device auto decides per machine, so a machine whose GPU is unusable
// chose the CPU while the others went on to the GPUs' collectives (a hang).
std::string device_kind_problem(const std::vector<std::string>& kind_per_rank);

// True when this build has the CUDA backend.
bool built_with_cuda();

}  // namespace dtrain
