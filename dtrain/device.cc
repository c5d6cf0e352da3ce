#include "dtrain/device.h"

#include <filesystem>

#include "dtrain/cuda_plugin.h"
#include "runtime/error.h"

namespace dtrain {

std::string gpu_sharing_problem(const std::vector<std::string>& uuid_per_rank) {
  for (size_t a = 0; a < uuid_per_rank.size(); ++a)
    for (size_t b = a + 1; b < uuid_per_rank.size(); ++b)
      if (uuid_per_rank[a] == uuid_per_rank[b])
        return detail::cat("--device cuda: ranks ", a, " and ", b, " would share GPU ",
                           uuid_per_rank[a],
                           "; NCCL needs a GPU per rank (start fewer ranks per node, give each its "
                           "own GPU with CUDA_VISIBLE_DEVICES, or pass --device cpu)");
  return {};
}

std::string device_kind_problem(const std::vector<std::string>& kind_per_rank) {
  for (size_t r = 1; r < kind_per_rank.size(); ++r)
    if (kind_per_rank[r] != kind_per_rank[0])
      return detail::cat("rank ", r, " trains on the ", kind_per_rank[r],
                         " where rank 0 trains on the ", kind_per_rank[0],
                         ": every rank needs the same kind of device (--device auto decides per "
                         "machine; one whose GPU is unusable chose the CPU): pass --device cuda or "
                         "--device cpu, or fix that machine");
  return {};
}

bool built_with_cuda() {
#if defined(DTRAIN_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

DeviceChoice choose_device(const std::string& device, size_t local_rank) {
  DeviceChoice c;
  c.backend = &cpu_backend();
  if (device == "cpu") return c;
  if (device != "auto" && device != "cuda")
    throw InputError("--device " + device + ": expected auto, cpu or cuda");
  // --device auto on a machine without NVIDIA device nodes: no GPU, and no need to load the CUDA
  // libraries to learn that (they cost a CPU run ~100 MB).
  if (device == "auto" && built_with_cuda() && !std::filesystem::exists("/dev/nvidiactl") &&
      !std::filesystem::exists("/dev/dxg")) {
    c.note = "no NVIDIA device nodes (/dev/nvidiactl), training on the CPU";
    return c;
  }
  // The CUDA libraries are loaded only now, through the plugin.
  std::string why;
  const CudaPlugin* cuda = cuda_plugin(&why);
  const int n = cuda ? cuda->device_count(&why) : 0;
  if (n == 0) {
    if (device == "cuda") throw InputError("--device cuda: no usable CUDA device (" + why + ")");
    c.note = "no usable CUDA device (" + why + "), training on the CPU";
    return c;
  }
  c.gpu = cuda->select_device(local_rank);
  c.owned.reset(cuda->make_backend(c.gpu));
  c.backend = c.owned.get();
  c.cuda = true;
  c.note = "training on " + c.backend->name();
  return c;
}

}  // namespace dtrain
