// The NCCL backend of Communicator, for buffers in GPU memory. Rank 0 makes the ncclUniqueId and
// broadcasts it over MPI; every collective runs on the communicator's own stream, ordered after
// the compute stream's work with an event, so reductions overlap whatever the compute stream
// does next. Counts are element counts. Errors come from ncclGetErrorString and
// ncclGetLastError and name the rank.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "allreduce/communicator.h"
#include "allreduce/mpi_communicator.h"

namespace dtrain {

class NcclCommunicator : public Communicator {
 public:
  // mpi: the job's MPI communicator (for the unique id and host-side metadata); device: this
  // rank's GPU (see cuda::select_device); compute: the stream whose work collectives follow.
  NcclCommunicator(MpiCommunicator& mpi, int device, cudaStream_t compute);
  ~NcclCommunicator() override;

  std::string backend() const override { return "nccl"; }
  size_t rank() const override { return mpi_.rank(); }
  size_t size() const override { return mpi_.size(); }
  size_t local_rank() const override { return mpi_.local_rank(); }
  size_t local_size() const override { return mpi_.local_size(); }
  size_t cross_rank() const override { return mpi_.cross_rank(); }
  size_t cross_size() const override { return mpi_.cross_size(); }

  // Device pointers. kAverage uses ncclAvg.
  void allreduce(float* data, size_t count, ReduceOp op, const OpName& what) override;
  // Host doubles (metrics) go over MPI.
  void allreduce(double* data, size_t count, const OpName& what) override;
  std::unique_ptr<Handle> iallreduce(float* data, size_t count, ReduceOp op,
                                     const OpName& what) override;
  // Several buckets in one NCCL group (one launch); wait on the returned handle.
  std::unique_ptr<Handle> iallreduce_group(const std::vector<std::pair<float*, size_t>>& buckets,
                                           ReduceOp op, const OpName& what);
  void broadcast(void* data, size_t bytes, size_t root, const OpName& what) override;
  void allgather(const uint64_t* in, size_t count, uint64_t* out, const OpName& what) override;
  std::vector<std::string> allgather(const std::string& in, const OpName& what) override;
  void barrier(const OpName& what) override { mpi_.barrier(what); }
  [[noreturn]] void abort(int code) override;

  cudaStream_t stream() const { return stream_; }
  void check(ncclResult_t rc, const OpName& what, size_t count) const;

  // Events for the handles of collectives, reused: a bucket's handle takes one and gives it back
  // when it goes, so no event is created or destroyed per bucket per step. Shared with the
  // handles, which may outlive a failed communicator.
  struct EventPool;

 private:
  void order_after_compute();
  MpiCommunicator& mpi_;
  int device_;
  cudaStream_t compute_, stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::shared_ptr<EventPool> events_;
};

}  // namespace dtrain
