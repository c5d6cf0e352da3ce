#include "allreduce/nccl_communicator.h"

#include <cstdlib>
#include <mutex>
#include <vector>

#include "runtime/cuda/cuda_check.h"

namespace dtrain {

struct NcclCommunicator::EventPool {
  std::mutex m;
  std::vector<cudaEvent_t> free;
  cudaEvent_t take() {
    {
      std::lock_guard<std::mutex> lock(m);
      if (!free.empty()) {
        cudaEvent_t e = free.back();
        free.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void give(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(m);
    free.push_back(e);
  }
  ~EventPool() {
    for (cudaEvent_t e : free) cudaEventDestroy(e);
  }
};

namespace {
class StreamHandle : public Communicator::Handle {
 public:
  StreamHandle(cudaStream_t s, cudaStream_t compute,
               std::shared_ptr<NcclCommunicator::EventPool> pool)
      : compute_(compute), pool_(std::move(pool)), done_(pool_->take()) {
    CUDA_CHECK(cudaEventRecord(done_, s));
  }
  ~StreamHandle() override {
    if (done_) pool_->give(done_);
  }
  bool test() override {
    const cudaError_t rc = cudaEventQuery(done_);
    if (rc == cudaErrorNotReady) return false;
    CUDA_CHECK(rc);
    return true;
  }
  void wait() override { CUDA_CHECK(cudaEventSynchronize(done_)); }
  void wait_on_device() override { CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0)); }

 private:
  cudaStream_t compute_;
  std::shared_ptr<NcclCommunicator::EventPool> pool_;
  cudaEvent_t done_ = nullptr;
};
}  // namespace

NcclCommunicator::NcclCommunicator(MpiCommunicator& mpi, int device, cudaStream_t compute)
    : mpi_(mpi), device_(device), compute_(compute), events_(std::make_shared<EventPool>()) {
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  ncclUniqueId id;
  if (mpi_.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId", 0);
  mpi_.broadcast(&id, sizeof(id), 0, "broadcast the NCCL unique id");
  check(ncclCommInitRank(&comm_, static_cast<int>(mpi_.size()), id, static_cast<int>(mpi_.rank())),
        "ncclCommInitRank", 0);
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
  if (ready_) cudaEventDestroy(ready_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::check(ncclResult_t rc, const OpName& what, size_t count) const {
  if (rc == ncclSuccess) return;
  std::string last;
  if (comm_) last = ncclGetLastError(comm_);
  throw PeerError(detail::cat(mpi_.who(), " [gpu ", device_, "] ", what,
                              count ? detail::cat(" (", count * sizeof(float), " bytes)") : "",
                              ": ", ncclGetErrorString(rc), last.empty() ? "" : " (" + last + ")"));
}

void NcclCommunicator::order_after_compute() {
  // The collective must see everything the compute stream wrote: an event, not a device sync,
  // so the compute stream can keep going.
  CUDA_CHECK(cudaEventRecord(ready_, compute_));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

void NcclCommunicator::allreduce(float* data, size_t count, ReduceOp op, const OpName& what) {
  iallreduce(data, count, op, what)->wait();
}

void NcclCommunicator::allreduce(double* data, size_t count, const OpName& what) {
  mpi_.allreduce(data, count, what);
}

std::unique_ptr<Communicator::Handle> NcclCommunicator::iallreduce(float* data, size_t count,
                                                                   ReduceOp op,
                                                                   const OpName& what) {
  return iallreduce_group({{data, count}}, op, what);
}

std::unique_ptr<Communicator::Handle> NcclCommunicator::iallreduce_group(
    const std::vector<std::pair<float*, size_t>>& buckets, ReduceOp op, const OpName& what) {
  order_after_compute();
  const ncclRedOp_t nop = op == ReduceOp::kAverage ? ncclAvg : ncclSum;
  check(ncclGroupStart(), what + ": ncclGroupStart", 0);
  size_t total = 0;
  for (const auto& [ptr, n] : buckets) {
    if (n == 0) continue;
    total += n;
    check(ncclAllReduce(ptr, ptr, n, ncclFloat, nop, comm_, stream_), what, n);
  }
  check(ncclGroupEnd(), what + ": ncclGroupEnd", total);
  return std::make_unique<StreamHandle>(stream_, compute_, events_);
}

void NcclCommunicator::broadcast(void* data, size_t bytes, size_t root, const OpName& what) {
  order_after_compute();
  check(ncclBroadcast(data, data, bytes, ncclChar, static_cast<int>(root), comm_, stream_), what,
        0);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::allgather(const uint64_t* in, size_t count, uint64_t* out,
                                 const OpName& what) {
  order_after_compute();
  check(ncclAllGather(in, out, count, ncclUint64, comm_, stream_), what, count);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::vector<std::string> NcclCommunicator::allgather(const std::string& in, const OpName& what) {
  return mpi_.allgather(in, what);
}

void NcclCommunicator::abort(int code) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  mpi_.abort(code);
  std::_Exit(code);  // not reached: MPI_Abort ends the process
}

}  // namespace dtrain
