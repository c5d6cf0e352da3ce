// A Communicator is a group of ranks that can combine float buffers. The algorithm (which rank
// sends what) belongs to the engine behind it, MPI or NCCL: we do not write a new MPI. Counts are
// element counts, never bytes. Every failure becomes a dtrain::Error that names this rank, the
// operation and its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace dtrain {

enum class ReduceOp { kSum, kAverage };

// The element types and reductions of allreduce_any: dtrain.torch's Horovod API (integer and
// float64 tensors; sum, min, max, product). Training's gradients take the float allreduce.
enum class ElementType { kUInt8, kInt8, kInt16, kInt32, kInt64, kFloat32, kFloat64 };
enum class Reduction { kSum, kMin, kMax, kProduct };
size_t element_bytes(ElementType type);

// What an operation is, for error messages ("allreduce bucket 3 of step 7"). Formatted only when
// a message needs it: the per-step calls build no strings.
class OpName {
 public:
  OpName(const char* what) : what_(what) {}              // NOLINT: implicit, like a string
  OpName(std::string what) : owned_(std::move(what)) {}  // NOLINT
  OpName(const char* what, size_t index, uint64_t step) : what_(what), index_(index), step_(step) {}
  std::string str() const;
  friend std::string operator+(const OpName& a, const char* b) { return a.str() + b; }
  friend std::ostream& operator<<(std::ostream& os, const OpName& n) { return os << n.str(); }

 private:
  const char* what_ = nullptr;  // a literal; else owned_
  std::string owned_;
  size_t index_ = SIZE_MAX;
  uint64_t step_ = UINT64_MAX;
};

class Communicator {
 public:
  // A pending non-blocking operation.
  class Handle {
   public:
    virtual ~Handle() = default;
    // True once complete; drives progress of the engine.
    virtual bool test() = 0;
    virtual void wait() = 0;
    // Orders the work queued after this call (on a GPU: the compute stream's) behind the
    // operation, without blocking the host where the engine allows it. Default: wait().
    virtual void wait_on_device() { wait(); }
  };

  // Memory that every rank of the job can address directly, `bytes` per rank: offered by an
  // engine when all ranks share one machine. fence() is a barrier of the job that also makes
  // every rank's writes before it visible to every rank after it.
  class SharedSlots {
   public:
    virtual ~SharedSlots() = default;
    virtual void* slot(size_t rank) = 0;
    virtual void fence(const OpName& what) = 0;
  };

  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  virtual size_t rank() const = 0;
  virtual size_t size() const = 0;
  virtual size_t local_rank() const = 0;
  virtual size_t local_size() const = 0;
  virtual size_t cross_rank() const = 0;
  virtual size_t cross_size() const = 0;

  virtual void allreduce(float* data, size_t count, ReduceOp op, const OpName& what) = 0;
  virtual void allreduce(double* data, size_t count, const OpName& what) = 0;  // sum
  // In place, any ElementType and Reduction (integer sums are exact, and wrap as the type does).
  // Engines without it throw.
  virtual void allreduce_any(void* data, size_t count, ElementType type, Reduction op,
                             const OpName& what);
  // Starts an in-place allreduce; the buffer must stay untouched until the handle completes.
  // kAverage is applied when the handle completes (in test() or wait()).
  virtual std::unique_ptr<Handle> iallreduce(float* data, size_t count, ReduceOp op,
                                             const OpName& what) = 0;
  virtual void broadcast(void* data, size_t bytes, size_t root, const OpName& what) = 0;
  // out must hold size() * count elements; rank r's block lands at r * count.
  virtual void allgather(const uint64_t* in, size_t count, uint64_t* out, const OpName& what) = 0;
  // Every rank's string, in rank order.
  virtual std::vector<std::string> allgather(const std::string& in, const OpName& what) = 0;
  virtual void barrier(const OpName& what) = 0;
  // Null when the ranks span machines or the engine has no shared memory.
  virtual std::unique_ptr<SharedSlots> node_shared(size_t /*bytes*/, const OpName& /*what*/) {
    return nullptr;
  }
  // The same for the ranks of this rank's machine only, whatever the job spans: slot(k) is local
  // rank k's, fence() is a barrier of those ranks. Null when the engine has no shared memory.
  virtual std::unique_ptr<SharedSlots> local_shared(size_t /*bytes*/, const OpName& /*what*/) {
    return nullptr;
  }
  // Sum-allreduce among the ranks that have this rank's local rank, one per machine (Horovod's
  // cross communicator): the step between machines of a hierarchical allreduce. Engines without
  // it throw.
  virtual void cross_allreduce(float* data, size_t count, const OpName& what);
  // Ends the whole job now (every rank), with this exit code: the way out of a failure that
  // other ranks would otherwise wait on forever.
  [[noreturn]] virtual void abort(int code) = 0;
};

}  // namespace dtrain
