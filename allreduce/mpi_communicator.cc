#include "allreduce/mpi_communicator.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <limits>

#include "runtime/cpu_ops.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/functors.h"
#include "runtime/log.h"
#include "runtime/netif.h"

namespace dtrain {

namespace {

std::string mpi_error_string(int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(msg, static_cast<size_t>(len));
}

std::string human_bytes(size_t b) {
  char buf[64];
  if (b >= 1000000)
    std::snprintf(buf, sizeof(buf), "%.1f MB", double(b) / 1e6);
  else if (b >= 1000)
    std::snprintf(buf, sizeof(buf), "%.1f KB", double(b) / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%zu B", b);
  return buf;
}

int to_int_count(size_t count, const OpName& what) {
  if (count > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error(detail::cat(what, ": ", count, " elements exceed MPI's int count"));
  return static_cast<int>(count);
}

void scale(float* data, size_t count, float s) {
  cpu::for_each(count, fn::Scale{data, s});
}

}  // namespace

struct MpiCommunicator::Job {
  float* data;
  size_t count;
  ReduceOp op;
  OpName what{""};
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
};

namespace {
class ThreadHandle : public Communicator::Handle {
 public:
  explicit ThreadHandle(std::shared_ptr<MpiCommunicator::Job> job) : job_(std::move(job)) {}
  bool test() override {
    std::lock_guard<std::mutex> lock(job_->mu);
    if (job_->done && job_->error) std::rethrow_exception(job_->error);
    return job_->done;
  }
  void wait() override {
    std::unique_lock<std::mutex> lock(job_->mu);
    job_->cv.wait(lock, [&] { return job_->done; });
    if (job_->error) std::rethrow_exception(job_->error);
  }

 private:
  std::shared_ptr<MpiCommunicator::Job> job_;
};
}  // namespace

bool launched_by_mpi_with_peers() {
  return read_env().mpi_world_size > 1;
}

MpiCommunicator::MpiCommunicator(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Open MPI's shared-memory single-copy path (CMA) measured 1.5-2x slower than copy-in/out
    // for 0.25-16 MB allreduces on our VMs; a user's own setting wins.
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", /*overwrite=*/0);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
      throw Error("MPI_Init_thread failed");
    owns_mpi_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", 0, 0);
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  int r = 0, s = 1;
  MPI_Comm_rank(comm_, &r);
  MPI_Comm_size(comm_, &s);
  rank_ = size_t(r);
  size_ = size_t(s);
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  who_ = detail::cat("[rank ", rank_, "/", size_, " ", host, ":", getpid(), "]");
  // Ranks sharing a machine (shared memory) form the local communicator; ranks with the same
  // local rank across machines form the cross communicator, as Horovod defines them.
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &local_),
        "MPI_Comm_split_type", 0, 0);
  int lr = 0, ls = 1;
  MPI_Comm_rank(local_, &lr);
  MPI_Comm_size(local_, &ls);
  local_rank_ = size_t(lr);
  local_size_ = size_t(ls);
  check(MPI_Comm_split(comm_, lr, r, &cross_), "MPI_Comm_split", 0, 0);
  int cr = 0, cs = 1;
  MPI_Comm_rank(cross_, &cr);
  MPI_Comm_size(cross_, &cs);
  cross_rank_ = size_t(cr);
  cross_size_ = size_t(cs);
  if (size_ > 1) worker_ = std::thread([this] { worker_loop(); });
}

void MpiCommunicator::worker_loop() {
  // Sums gradients as the training thread would (the shared-memory path sums inside the
  // optimizer's pass): both flush denormals, so the two agree bit for bit.
  cpu::flush_denormals_on_this_thread();
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(q_mu_);
      q_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
      busy_ = true;
    }
    std::exception_ptr err;
    try {
      allreduce(job->data, job->count, job->op, job->what);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(job->mu);
      job->done = true;
      job->error = err;
    }
    job->cv.notify_all();
    {
      std::lock_guard<std::mutex> lock(q_mu_);
      busy_ = false;
    }
    q_cv_.notify_all();  // drain() waits for this too
  }
}

MpiCommunicator::~MpiCommunicator() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(q_mu_);
      stopping_ = true;
    }
    q_cv_.notify_all();
    worker_.join();
  }
  if (cross_ != MPI_COMM_NULL) MPI_Comm_free(&cross_);
  if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

void MpiCommunicator::drain() {
  if (!worker_.joinable() || std::this_thread::get_id() == worker_.get_id()) return;
  std::unique_lock<std::mutex> lock(q_mu_);
  q_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
}

void MpiCommunicator::check(int rc, const OpName& what, size_t count, size_t elem_bytes) const {
  if (rc == MPI_SUCCESS) return;
  const std::string size =
      elem_bytes ? detail::cat(" (", human_bytes(count * elem_bytes), ")") : std::string();
  throw PeerError(detail::cat(who_, " ", what, size, ": ", mpi_error_string(rc)));
}

void MpiCommunicator::sum(void* data, size_t count, MPI_Datatype type, size_t elem_bytes,
                          MPI_Comm comm, const OpName& what, MPI_Op op) {
  const Call call(*this, what);
  check(MPI_Allreduce(MPI_IN_PLACE, data, to_int_count(count, what), type, op, comm), what, count,
        elem_bytes);
}

namespace {

MPI_Datatype mpi_type(ElementType type) {
  switch (type) {
    case ElementType::kUInt8:
      return MPI_UINT8_T;
    case ElementType::kInt8:
      return MPI_INT8_T;
    case ElementType::kInt16:
      return MPI_INT16_T;
    case ElementType::kInt32:
      return MPI_INT32_T;
    case ElementType::kInt64:
      return MPI_INT64_T;
    case ElementType::kFloat32:
      return MPI_FLOAT;
    case ElementType::kFloat64:
      return MPI_DOUBLE;
  }
  return MPI_FLOAT;
}

MPI_Op mpi_op(Reduction op) {
  switch (op) {
    case Reduction::kSum:
      return MPI_SUM;
    case Reduction::kMin:
      return MPI_MIN;
    case Reduction::kMax:
      return MPI_MAX;
    case Reduction::kProduct:
      return MPI_PROD;
  }
  return MPI_SUM;
}

}  // namespace

void MpiCommunicator::allreduce_any(void* data, size_t count, ElementType type, Reduction op,
                                    const OpName& what) {
  if (count == 0 || size_ == 1) return;
  sum(data, count, mpi_type(type), element_bytes(type), comm_, what, mpi_op(op));
}

void MpiCommunicator::reduce_scatter_any(const void* data, void* out,
                                         const std::vector<size_t>& counts, ElementType type,
                                         Reduction op, const OpName& what) {
  DTRAIN_CHECK_EQ(counts.size(), size_);
  std::vector<int> n(size_);
  size_t total = 0;
  for (size_t r = 0; r < size_; ++r) {
    n[r] = to_int_count(counts[r], what);
    total += counts[r];
  }
  const Call call(*this, what);
  check(MPI_Reduce_scatter(data, out, n.data(), mpi_type(type), mpi_op(op), comm_), what, total,
        element_bytes(type));
}

std::vector<std::string> MpiCommunicator::alltoall(const std::vector<std::string>& parts,
                                                   const OpName& what) {
  DTRAIN_CHECK_EQ(parts.size(), size_);
  std::vector<int> send_n(size_), recv_n(size_), send_at(size_), recv_at(size_);
  std::string send;
  for (size_t r = 0; r < size_; ++r) {
    send_n[r] = to_int_count(parts[r].size(), what);
    send_at[r] = to_int_count(send.size(), what);
    send += parts[r];
  }
  const Call call(*this, what);
  check(MPI_Alltoall(send_n.data(), 1, MPI_INT, recv_n.data(), 1, MPI_INT, comm_), what, size_,
        sizeof(int));
  size_t total = 0;
  for (size_t r = 0; r < size_; ++r) {
    recv_at[r] = to_int_count(total, what);
    total += size_t(recv_n[r]);
  }
  std::string recv(total, '\0');
  check(MPI_Alltoallv(send.data(), send_n.data(), send_at.data(), MPI_BYTE, recv.data(),
                      recv_n.data(), recv_at.data(), MPI_BYTE, comm_),
        what, total, 1);
  std::vector<std::string> out(size_);
  for (size_t r = 0; r < size_; ++r) out[r] = recv.substr(size_t(recv_at[r]), size_t(recv_n[r]));
  return out;
}

void MpiCommunicator::allreduce(float* data, size_t count, ReduceOp op, const OpName& what) {
  if (count == 0 || size_ == 1) return;
  sum(data, count, MPI_FLOAT, sizeof(float), comm_, what);
  if (op == ReduceOp::kAverage) scale(data, count, 1.0f / static_cast<float>(size_));
}

void MpiCommunicator::allreduce(double* data, size_t count, const OpName& what) {
  if (count == 0 || size_ == 1) return;
  sum(data, count, MPI_DOUBLE, sizeof(double), comm_, what);
}

std::unique_ptr<Communicator::Handle> MpiCommunicator::iallreduce(float* data, size_t count,
                                                                  ReduceOp op, const OpName& what) {
  auto job = std::make_shared<Job>();
  job->data = data;
  job->count = count;
  job->op = op;
  job->what = what;
  if (count == 0 || size_ == 1) {
    job->done = true;
  } else {
    std::lock_guard<std::mutex> lock(q_mu_);
    queue_.push_back(job);
  }
  q_cv_.notify_all();  // the worker, and any drain() waiting
  return std::make_unique<ThreadHandle>(std::move(job));
}

void MpiCommunicator::broadcast(void* data, size_t bytes, size_t root, const OpName& what) {
  if (size_ == 1 || bytes == 0) return;
  const Call call(*this, what);
  // Counted in bytes here because the payload is opaque; chunked to stay within int counts.
  const size_t chunk = size_t(1) << 30;
  for (size_t off = 0; off < bytes; off += chunk) {
    const size_t n = std::min(chunk, bytes - off);
    check(MPI_Bcast(static_cast<char*>(data) + off, int(n), MPI_BYTE, int(root), comm_), what, n,
          1);
  }
}

void MpiCommunicator::allgather(const uint64_t* in, size_t count, uint64_t* out,
                                const OpName& what) {
  const Call call(*this, what);
  check(MPI_Allgather(in, to_int_count(count, what), MPI_UINT64_T, out, int(count), MPI_UINT64_T,
                      comm_),
        what, count, sizeof(uint64_t));
}

std::vector<std::string> MpiCommunicator::allgather(const std::string& in, const OpName& what) {
  const Call call(*this, what);
  const int len = to_int_count(in.size(), what);
  std::vector<int> lens(size_), displs(size_);
  check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_), what, 1, sizeof(int));
  size_t total = 0;
  for (size_t r = 0; r < size_; ++r) {
    displs[r] = int(total);
    total += size_t(lens[r]);
  }
  std::string all(total, '\0');
  check(MPI_Allgatherv(in.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                       comm_),
        what, total, 1);
  std::vector<std::string> out(size_);
  for (size_t r = 0; r < size_; ++r) out[r] = all.substr(size_t(displs[r]), size_t(lens[r]));
  return out;
}

void MpiCommunicator::barrier(const OpName& what) {
  const Call call(*this, what);
  check(MPI_Barrier(comm_), what, 0, 0);
}

// A shared window held in a passive-target epoch for its whole life (MPI_Win_lock_all): writes
// become visible to the other ranks through MPI_Win_sync around a barrier, the "unified memory
// model" idiom of MPI-3.
class MpiCommunicator::Window : public Communicator::SharedSlots {
 public:
  Window(MpiCommunicator& c, MPI_Win win, std::vector<void*> slots)
      : c_(c), win_(win), slots_(std::move(slots)) {}
  ~Window() override {
    std::lock_guard<std::mutex> lock(c_.mpi_mu_);
    MPI_Win_unlock_all(win_);
    MPI_Win_free(&win_);
  }
  void* slot(size_t rank) override { return slots_.at(rank); }
  void fence(const OpName& what) override {
    const Call call(c_, what);
    c_.check(MPI_Win_sync(win_), what + ": MPI_Win_sync", 0, 0);
    c_.check(MPI_Barrier(c_.local_), what + ": MPI_Barrier", 0, 0);
    c_.check(MPI_Win_sync(win_), what + ": MPI_Win_sync", 0, 0);
  }

 private:
  MpiCommunicator& c_;
  MPI_Win win_;
  std::vector<void*> slots_;
};

std::unique_ptr<Communicator::SharedSlots> MpiCommunicator::node_shared(size_t bytes,
                                                                        const OpName& what) {
  if (size_ < 2 || local_size_ != size_) return nullptr;
  return local_shared(bytes, what);  // local ranks are the job's ranks here
}

void MpiCommunicator::cross_allreduce(float* data, size_t count, const OpName& what) {
  if (count == 0 || cross_size_ == 1) return;
  sum(data, count, MPI_FLOAT, sizeof(float), cross_, what);
}

std::unique_ptr<Communicator::SharedSlots> MpiCommunicator::local_shared(size_t bytes,
                                                                         const OpName& what) {
  const Call call(*this, what);
  MPI_Info info;
  MPI_Info_create(&info);
  // Each rank's slot on its own pages (first touch by its owner), not one block.
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  void* base = nullptr;
  MPI_Win win;
  const int rc =
      MPI_Win_allocate_shared(static_cast<MPI_Aint>(bytes), 1, info, local_, &base, &win);
  MPI_Info_free(&info);
  check(rc, what + ": MPI_Win_allocate_shared", bytes, 1);
  std::vector<void*> slots(local_size_);
  for (size_t r = 0; r < local_size_; ++r) {
    MPI_Aint sz = 0;
    int disp = 0;
    check(MPI_Win_shared_query(win, static_cast<int>(r), &sz, &disp, &slots[r]),
          what + ": MPI_Win_shared_query", 0, 0);
    // Ranks may ask for different sizes (the hierarchical allreduce's local rank 0 holds the
    // result too); each one's own slot must be what it asked for.
    if (r == local_rank_ && static_cast<size_t>(sz) < bytes)
      throw Error(detail::cat(who_, " ", what, ": rank ", r, "'s shared slot has ", sz,
                              " bytes, not ", bytes));
  }
  check(MPI_Win_lock_all(MPI_MODE_NOCHECK, win), what + ": MPI_Win_lock_all", 0, 0);
  return std::make_unique<Window>(*this, win, std::move(slots));
}

void MpiCommunicator::watch_stalls(const StallOptions& o, const std::string& interface,
                                   std::function<void()> on_timeout) {
  if (size_ < 2) return;
  // The allgathers run on every rank, whatever its own settings (a rank with the watchdog off, by
  // a variable mpirun did not carry to its machine, skipped them, and its next collective met
  // the others' host-name allgather).
  const std::vector<std::string> hosts = allgather(host_name(), "stall watchdog: host names");
  bool one_machine = true;
  for (const auto& h : hosts) one_machine = one_machine && h == hosts[0];
  std::string ip = "127.0.0.1";
  if (!interface.empty()) {
    ip = interface_address(interface, "DTRAIN_NETWORK_INTERFACE");
  } else if (!one_machine) {
    ip = reachable_ipv4();
  }
  uint16_t port = 0;
  const int fd = StallWatchdog::open_socket(&port);
  const std::vector<std::string> peers =
      allgather(detail::cat(ip, ":", port), "stall watchdog: addresses");
  if (o.warning_s <= 0 && o.timeout_s <= 0) {
    ::close(fd);
    return;
  }
  std::vector<std::string> names;
  for (size_t r = 0; r < size_; ++r) names.push_back(detail::cat("rank ", r, " (", hosts[r], ")"));
  watchdog_ = std::make_unique<StallWatchdog>(rank_, peers, names, fd, o);
  watchdog_->on_timeout([f = std::move(on_timeout)] {
    if (f) f();
    // Behind a network partition mpirun cannot reach this machine's Open MPI daemon to stop it,
    // and the daemon would wait for mpirun forever: the job is over, so this rank takes its
    // daemon down with it (never mpirun itself, which runs the ranks of its own machine).
    std::ifstream comm("/proc/" + std::to_string(getppid()) + "/comm");
    std::string parent;
    std::getline(comm, parent);
    if (parent == "orted" || parent == "prted") kill(getppid(), SIGTERM);
  });
}

void MpiCommunicator::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]]
}

}  // namespace dtrain
