#include "dtrain/device.h"

#include "runtime/error.h"

#if defined(DTRAIN_HAVE_CUDA)
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device.h"
#endif

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
#if defined(DTRAIN_HAVE_CUDA)
  std::string why;
  const int n = cuda::device_count(&why);
  if (n == 0) {
    if (device == "cuda") throw InputError("--device cuda: no usable CUDA device (" + why + ")");
    c.note = "no usable CUDA device (" + why + "), training on the CPU";
    return c;
  }
  c.gpu = cuda::select_device(local_rank);
  c.owned = std::make_unique<cuda::CudaBackend>(c.gpu);
  c.backend = c.owned.get();
  c.cuda = true;
  c.note = "training on " + c.backend->name();
  return c;
#else
  (void)local_rank;
  if (device == "cuda")
    throw InputError(
        "--device cuda: this build has no CUDA backend (the CUDA toolkit was not found at build "
        "time; see DTRAIN_CUDA in the README)");
  c.note = "this build has no CUDA backend, training on the CPU";
  return c;
#endif
}

}  // namespace dtrain
