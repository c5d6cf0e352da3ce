// dtrain_bench allreduce --backend nccl: the same sweep as the MPI backend over GPU buffers, one
// GPU per rank (local_rank % devices), timed with CUDA events on the communicator's stream.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "allreduce/nccl_communicator.h"
#include "examples/bench_commands.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"

namespace dtrain::bench {

int run_allreduce_nccl(MpiCommunicator& mpi, size_t lo, size_t hi, double factor, size_t warmup,
                       size_t iters) {
  const int dev = cuda::select_device(mpi.local_rank());
  cudaStream_t compute;
  CUDA_CHECK(cudaStreamCreate(&compute));
  NcclCommunicator nccl(mpi, dev, compute);
  const size_t n = mpi.size();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  int errors = 0;
  for (double bytes_d = double(lo); bytes_d <= double(hi) * 1.0000001; bytes_d *= factor) {
    const size_t count = static_cast<size_t>(bytes_d) / sizeof(float);
    std::vector<float> h(count);
    for (size_t i = 0; i < count; ++i) h[i] = float((mpi.rank() + 1) * ((i % 7) + 1));
    cuda::DeviceBuffer<float> d(count);
    d.upload(h.data(), count, compute);
    for (size_t i = 0; i < warmup; ++i) nccl.allreduce(d.data(), count, ReduceOp::kSum, "warm-up");
    mpi.barrier("bench");
    CUDA_CHECK(cudaEventRecord(a, nccl.stream()));
    for (size_t i = 0; i < iters; ++i) nccl.iallreduce(d.data(), count, ReduceOp::kSum, "bench");
    CUDA_CHECK(cudaEventRecord(b, nccl.stream()));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    double t = double(ms) / 1e3 / double(iters);
    mpi.allreduce(&t, 1, "bench time");  // the mean over ranks
    t /= double(n);
    // Check: average of (r+1)*k over ranks is k*(n+1)/2.
    d.upload(h.data(), count, compute);
    nccl.allreduce(d.data(), count, ReduceOp::kAverage, "bench check");
    std::vector<float> got(count);
    d.download(got.data(), count, nccl.stream());
    double wrong = 0;
    for (size_t i = 0; i < count; ++i) {
      const float want = float((i % 7) + 1) * float(n + 1) / 2.0f;
      if (std::fabs(got[i] - want) > 1e-5f * want) ++wrong;
    }
    mpi.allreduce(&wrong, 1, "bench check");
    if (wrong > 0) errors = 1;
    const size_t bytes = count * sizeof(float);
    const double algbw = double(bytes) / t / 1e9;
    if (mpi.rank() == 0) {
      const nlohmann::json j = {
          {"bench", "allreduce"},
          {"backend", "nccl"},
          {"ranks", n},
          {"bytes", bytes},
          {"count", count},
          {"time_us", t * 1e6},
          {"algbw_gbps", algbw},
          {"busbw_gbps", n > 1 ? algbw * 2.0 * double(n - 1) / double(n) : algbw},
          {"wrong", long(wrong)}};
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(compute);
  return errors;
}

}  // namespace dtrain::bench
