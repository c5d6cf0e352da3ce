// The MPI backend of Communicator (Open MPI): collectives on a duplicate of MPI_COMM_WORLD with
// MPI_ERRORS_RETURN, so a failure comes back as an error code we turn into a dtrain::Error
// naming the rank, the operation and the size, instead of MPI's default abort.
//
// Non-blocking allreduce runs as a blocking MPI_Allreduce on a background thread, as Horovod's
// background thread does, not as MPI_Iallreduce: Open MPI's non-blocking collectives (libnbc)
// measured 2x slower than its tuned blocking ones on 0.25-4 MB here, and they progress only
// inside MPI calls. Every MPI call is made under one mutex (MPI_THREAD_SERIALIZED).
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "allreduce/communicator.h"
#include "allreduce/stall_watchdog.h"

namespace dtrain {

class MpiCommunicator : public Communicator {
 public:
  // Initializes MPI when nobody has (MPI_THREAD_SERIALIZED: all our calls come from one thread at
  // a time), and finalizes it in the destructor if it did.
  MpiCommunicator(int* argc, char*** argv);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  std::string backend() const override { return "mpi"; }
  size_t rank() const override { return rank_; }
  size_t size() const override { return size_; }
  size_t local_rank() const override { return local_rank_; }
  size_t local_size() const override { return local_size_; }
  size_t cross_rank() const override { return cross_rank_; }
  size_t cross_size() const override { return cross_size_; }

  void allreduce(float* data, size_t count, ReduceOp op, const OpName& what) override;
  void allreduce(double* data, size_t count, const OpName& what) override;
  void allreduce_any(void* data, size_t count, ElementType type, Reduction op,
                     const OpName& what) override;
  // MPI_Reduce_scatter: `data` holds sum(counts) elements; rank r receives the reduction of its
  // block (counts[r] elements, the blocks in rank order) in `out`. dtrain.torch's reducescatter.
  void reduce_scatter_any(const void* data, void* out, const std::vector<size_t>& counts,
                          ElementType type, Reduction op, const OpName& what);
  // parts[r] goes to rank r; returns what each rank sent this one, in rank order (alltoall).
  std::vector<std::string> alltoall(const std::vector<std::string>& parts, const OpName& what);
  std::unique_ptr<Handle> iallreduce(float* data, size_t count, ReduceOp op,
                                     const OpName& what) override;
  void broadcast(void* data, size_t bytes, size_t root, const OpName& what) override;
  void allgather(const uint64_t* in, size_t count, uint64_t* out, const OpName& what) override;
  std::vector<std::string> allgather(const std::string& in, const OpName& what) override;
  void barrier(const OpName& what) override;
  // MPI-3 shared memory (MPI_Win_allocate_shared) on the machine's ranks, when that is all of
  // them.
  std::unique_ptr<SharedSlots> node_shared(size_t bytes, const OpName& what) override;
  // MPI-3 shared memory on the ranks of this machine (the local communicator).
  std::unique_ptr<SharedSlots> local_shared(size_t bytes, const OpName& what) override;
  void cross_allreduce(float* data, size_t count, const OpName& what) override;
  [[noreturn]] void abort(int code) override;

  // Starts the stall watchdog (stall_watchdog.h) on every rank: a collective. Heartbeats go to
  // each rank's address on `interface` when given (DTRAIN_NETWORK_INTERFACE), else to its host
  // name's address, or 127.0.0.1 when all ranks share one machine. on_timeout runs before the
  // process exits on a stall (NCCL aborts its communicator there).
  void watch_stalls(const StallOptions& o, const std::string& interface,
                    std::function<void()> on_timeout = {});

  struct Job;
  class Window;
  MPI_Comm comm() const { return comm_; }
  // "[rank 1/4 host:pid]"
  const std::string& who() const { return who_; }
  // Throws a dtrain::Error for a failed MPI call: who, what, the size and MPI's own message.
  void check(int rc, const OpName& what, size_t count, size_t elem_bytes) const;

 private:
  bool owns_mpi_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL, local_ = MPI_COMM_NULL, cross_ = MPI_COMM_NULL;
  size_t rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, cross_rank_ = 0, cross_size_ = 1;
  std::string who_;

  void worker_loop();
  // A blocking collective from any thread but the background one first waits for the queued
  // non-blocking ones: every rank then issues its collectives in its program's order, whatever
  // the timing (two threads taking mpi_mu_ in different orders on two ranks would deadlock).
  void drain();
  bool busy_ = false;  // the background thread is running a queued job (under q_mu_)
  std::unique_ptr<StallWatchdog> watchdog_;
  // Around every MPI call: queued non-blocking work first (drain), then the MPI lock, and the
  // stall watchdog told that this rank waits in `what`.
  class Call {
   public:
    Call(MpiCommunicator& c, const OpName& what)
        : lock_((c.drain(), c.mpi_mu_)),
          waiting_(c.watchdog_ ? std::optional(c.watchdog_->waiting(what)) : std::nullopt) {}

   private:
    std::lock_guard<std::mutex> lock_;
    std::optional<StallWatchdog::Waiting> waiting_;
  };
  // In-place MPI_SUM (or `op`) of count elements on comm (the job's or the cross communicator).
  void sum(void* data, size_t count, MPI_Datatype type, size_t elem_bytes, MPI_Comm comm,
           const OpName& what, MPI_Op op = MPI_SUM);
  friend class Window;
  std::mutex mpi_mu_;  // held for every MPI call
  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

// True when this process was started by mpirun/srun with more than one rank.
bool launched_by_mpi_with_peers();

}  // namespace dtrain
