#include "paramserver/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/error.h"

namespace dtrain::ps {

namespace {
constexpr uint64_t kShmMagic = 0x4d48535350544424ull;  // "$DTPSSHM"
constexpr size_t kHead = 64;

struct ShmHeader {
  uint64_t magic, nonce, count;
};

size_t area_bytes(size_t count) {
  return (count * sizeof(float) + 63) / 64 * 64;
}
size_t total_bytes(size_t count) {
  return kHead + 2 * area_bytes(count);
}
}  // namespace

ShmSegment::ShmSegment(std::string name, void* base, size_t bytes, size_t count, uint64_t nonce,
                       bool owner)
    : name_(std::move(name)),
      base_(base),
      bytes_(bytes),
      count_(count),
      nonce_(nonce),
      linked_(owner),
      grads_(reinterpret_cast<float*>(static_cast<char*>(base) + kHead)),
      params_(reinterpret_cast<float*>(static_cast<char*>(base) + kHead + area_bytes(count))) {}

std::unique_ptr<ShmSegment> ShmSegment::create(const std::string& name, size_t count,
                                               uint64_t nonce) {
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0)
    throw Error(detail::cat("shared memory ", name, ": shm_open: ", std::strerror(errno)));
  const size_t bytes = total_bytes(count);
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    close(fd);
    shm_unlink(name.c_str());
    throw Error(detail::cat("shared memory ", name, ": ftruncate to ", bytes,
                            " bytes: ", std::strerror(e)));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(name.c_str());
    throw Error(detail::cat("shared memory ", name, ": mmap: ", std::strerror(e)));
  }
  ShmHeader h{kShmMagic, nonce, count};
  std::memcpy(base, &h, sizeof(h));
  return std::unique_ptr<ShmSegment>(new ShmSegment(name, base, bytes, count, nonce, true));
}

std::unique_ptr<ShmSegment> ShmSegment::open(const std::string& name, size_t count, uint64_t nonce,
                                             std::string* why) {
  if (name.empty() || name[0] != '/' || name.find('/', 1) != std::string::npos ||
      name.size() > 200) {
    *why = "not a shared-memory name";
    return nullptr;
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    *why = detail::cat("shm_open: ", std::strerror(errno));
    return nullptr;
  }
  struct stat st {};
  const size_t bytes = total_bytes(count);
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
    close(fd);
    *why = detail::cat("size ", st.st_size, " bytes, expected ", bytes);
    return nullptr;
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    *why = detail::cat("mmap: ", std::strerror(errno));
    return nullptr;
  }
  ShmHeader h{};
  std::memcpy(&h, base, sizeof(h));
  if (h.magic != kShmMagic || h.nonce != nonce || h.count != count) {
    munmap(base, bytes);
    *why = "not the segment this worker created (magic, nonce or size differ)";
    return nullptr;
  }
  return std::unique_ptr<ShmSegment>(new ShmSegment(name, base, bytes, count, nonce, false));
}

void ShmSegment::unlink() {
  if (linked_) shm_unlink(name_.c_str());
  linked_ = false;
}

ShmSegment::~ShmSegment() {
  unlink();
  munmap(base_, bytes_);
}

}  // namespace dtrain::ps
