// NCCL allreduce across ranks under mpirun (one GPU each). Skipped, saying why, without GPUs (or
// with fewer GPUs than ranks).
#include <gtest/gtest.h>

#include "allreduce/nccl_communicator.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "tests/mpi_world.h"

namespace dtrain {
namespace {

using testing::world;

TEST(Nccl, AllreduceSumAverageAndGroupedBuckets) {
  std::string why;
  const int n = cuda::device_count(&why);
  // Every rank decides the same way, or the collectives below would hang.
  double have[1] = {n > 0 ? 1.0 : 0.0};
  world().allreduce(have, 1, "gpu census");
  if (have[0] < double(world().size()))
    GTEST_SKIP() << "needs a CUDA device on every rank (" << (n ? "some rank has none" : why)
                 << ")";
  const int dev = cuda::select_device(world().local_rank());
  cudaStream_t compute;
  CUDA_CHECK(cudaStreamCreate(&compute));
  NcclCommunicator nccl(world(), dev, compute);
  const size_t w = world().size();
  for (size_t count : {size_t(1), size_t(7), size_t(1001), (size_t(3) << 20) + 3}) {
    std::vector<float> h(count);
    for (size_t i = 0; i < count; ++i) h[i] = float(world().rank() + 1) * float(i % 11 + 1);
    cuda::DeviceBuffer<float> d(count);
    d.upload(h.data(), count, compute);
    nccl.allreduce(d.data(), count, ReduceOp::kSum, "test sum");
    std::vector<float> got(count);
    d.download(got.data(), count, nccl.stream());
    for (size_t i = 0; i < count; ++i)
      ASSERT_FLOAT_EQ(got[i], float(i % 11 + 1) * float(w * (w + 1) / 2)) << i;
    d.upload(h.data(), count, compute);
    auto hd =
        nccl.iallreduce_group({{d.data(), count / 2}, {d.data() + count / 2, count - count / 2}},
                              ReduceOp::kAverage, "test avg buckets");
    hd->wait();
    d.download(got.data(), count, nccl.stream());
    for (size_t i = 0; i < count; ++i)
      ASSERT_NEAR(got[i], float(i % 11 + 1) * float(w + 1) / 2.0f, 1e-5 * got[i]) << i;
  }
  cudaStreamDestroy(compute);
}

}  // namespace
}  // namespace dtrain
