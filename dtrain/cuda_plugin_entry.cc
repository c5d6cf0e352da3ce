// The entry point of libdtrain_cuda.so (dtrain/cuda_plugin.h): the only symbol it exports.
#include "allreduce/nccl_communicator.h"
#include "dtrain/cuda_plugin.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device.h"

namespace {

dtrain::Backend* make_backend(int device) {
  return new dtrain::cuda::CudaBackend(device);
}

dtrain::Communicator* make_nccl(dtrain::MpiCommunicator& mpi, dtrain::Backend& gpu) {
  auto& g = dynamic_cast<dtrain::cuda::CudaBackend&>(gpu);
  return new dtrain::NcclCommunicator(mpi, g.device(), g.stream());
}

const dtrain::CudaPlugin kPlugin = {&dtrain::cuda::device_count, &dtrain::cuda::select_device,
                                    &dtrain::cuda::device_uuid, &make_backend, &make_nccl};

}  // namespace

extern "C" __attribute__((visibility("default"))) const dtrain::CudaPlugin*
dtrain_cuda_plugin_v1() {
  return &kPlugin;
}
