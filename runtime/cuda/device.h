// CUDA devices and device memory. Buffers are plain cudaMalloc allocations (never managed
// memory); copies go through the stream they are given.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace dtrain::cuda {

// Number of usable devices; 0 with the reason (no driver, no device) in *why.
int device_count(std::string* why);
// The device this process uses: local_rank % device_count (Horovod's convention).
int select_device(size_t local_rank);
// The device's UUID as hex: the same physical GPU has the same UUID in every process, whatever
// CUDA_VISIBLE_DEVICES renumbered it to.
std::string device_uuid(int device);

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { resize(count); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_) {
    o.ptr_ = nullptr;
    o.count_ = 0;
  }
  void resize(size_t count);
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return count_; }
  void upload(const T* host, size_t count, cudaStream_t s = nullptr);
  void download(T* host, size_t count, cudaStream_t s = nullptr) const;

 private:
  void release();
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

extern template class DeviceBuffer<float>;
extern template class DeviceBuffer<unsigned char>;

}  // namespace dtrain::cuda
