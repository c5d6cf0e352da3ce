// NCCL allreduce across ranks under mpirun (one GPU each). Skipped, saying why, without GPUs (or
// with fewer GPUs than ranks).
#include <gtest/gtest.h>

#include <cmath>

#include "allreduce/bucketed_allreduce.h"
#include "allreduce/nccl_communicator.h"
#include "runtime/batcher.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "runtime/dataset.h"
#include "runtime/model.h"
#include "runtime/timeline.h"
#include "tests/gpu_skip.h"
#include "tests/mpi_world.h"
#include "tests/reference_training.h"

namespace dtrain {
namespace {

using testing::world;

// True when every rank has a GPU of its own (NCCL refuses two ranks on one GPU). Every rank
// decides the same way, or the collectives would hang.
bool every_rank_has_its_own_gpu(std::string* why) {
  const int n = cuda::device_count(why);
  double have[1] = {size_t(n) >= world().local_size() ? 1.0 : 0.0};
  world().allreduce(have, 1, "gpu census");
  if (have[0] < double(world().size()) && why->empty()) *why = "fewer GPUs than ranks on some node";
  return have[0] == double(world().size());
}

TEST(Nccl, AllreduceSumAverageAndGroupedBuckets) {
  std::string why;
  if (!every_rank_has_its_own_gpu(&why))
    DTRAIN_SKIP_WITHOUT_GPU("needs a CUDA device for every rank (" << why << ")");
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

// BucketedAllreduce with GPU models over NCCL: ranks hold bitwise-identical parameters after every
// step, and they match one CPU process at the global batch over the same samples (float
// tolerance: cuBLAS and OpenBLAS sum in different orders).
TEST(Nccl, AllreduceSyncOnGpuModelsMatchesOneCpuProcess) {
  std::string why;
  if (!every_rank_has_its_own_gpu(&why))
    DTRAIN_SKIP_WITHOUT_GPU("needs a CUDA device for every rank (" << why << ")");
  auto& c = world();
  const Dataset d = make_synthetic(300, 10, 4);
  const size_t b = 6, steps = 8;
  cuda::CudaBackend gpu(cuda::select_device(c.local_rank()));
  NcclCommunicator nccl(c, gpu.device(), gpu.stream());
  auto m = build_mlp(d.features(), {24, 12}, 10, gpu);
  m->init(9 + c.rank());  // start() must broadcast rank 0's
  Optimizer opt(OptimizerOptions{}, m->param_count(), &gpu);
  AllreduceOptions o;
  o.fusion_threshold_bytes = 1024;  // several buckets per step
  BucketedAllreduce sync(nccl, o, &c);
  Timeline tl;
  sync.start(*m, opt, {{"batch_size", b}}, {}, tl);
  Batcher batcher(d.train.size(), b, c.rank(), c.size(), 9);
  batcher.start_epoch(0);
  std::vector<float> x(b * d.features());
  std::vector<uint8_t> y(b);
  for (size_t s = 0; s < steps; ++s) {
    gather_batch(batcher.indices(s), d.train.images.data(), d.train.labels.data(), d.features(),
                 x.data(), y.data());
    m->train_step(x.data(), y.data(), b, [&](size_t off, size_t n) { sync.ready(off, n); });
    sync.finish_step(*m, opt);
    EXPECT_GT(sync.last_step_buckets(), 1u);
  }
  std::vector<float> got(m->param_count());
  m->read_params(got.data());
  for (size_t r = 0; r < c.size(); ++r) {
    std::vector<float> theirs = got;
    c.broadcast(theirs.data(), theirs.size() * sizeof(float), r, "parameters of rank r");
    EXPECT_EQ(theirs, got) << "rank " << r << " diverged";
  }
  auto ref = testing::train_one_process(d, {24, 12}, b * c.size(), steps, 9);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - double(ref->params()[i])));
  EXPECT_LT(worst, 2e-3);
}

}  // namespace
}  // namespace dtrain
