#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "runtime/env.h"

namespace dtrain::cuda {

void fail_call(const char* lib, const char* expr, const char* file, int line,
               const std::string& why) {
  int dev = -1;
  cudaGetDevice(&dev);
  throw Error(detail::cat(lib, " call failed on device ", dev, " (", file, ":", line, "): ", expr,
                          ": ", why));
}

bool sync_after_launch() {
  static const bool on = read_env().cuda_sync;
  return on;
}

void check_launch(cudaStream_t stream, const char* what, const char* file, int line) {
  const cudaError_t queued = cudaGetLastError();
  if (queued != cudaSuccess)
    fail_call("CUDA", what, file, line,
              std::string(cudaGetErrorName(queued)) + ": " + cudaGetErrorString(queued));
  if (!sync_after_launch()) return;
  const cudaError_t ran = cudaStreamSynchronize(stream);
  if (ran != cudaSuccess)
    fail_call("CUDA", what, file, line,
              std::string("(DTRAIN_CUDA_SYNC=1: failed while running) ") + cudaGetErrorName(ran) +
                  ": " + cudaGetErrorString(ran));
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
    cudaGetLastError();  // clear the sticky error so later calls report their own
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA runtime reports no device";
  return n;
}

int select_device(size_t local_rank) {
  std::string why;
  const int n = device_count(&why);
  if (n == 0) throw InputError("no CUDA device (" + why + ")");
  const int dev = static_cast<int>(local_rank % static_cast<size_t>(n));
  CUDA_CHECK(cudaSetDevice(dev));
  return dev;
}

template <typename T>
void DeviceBuffer<T>::resize(size_t count) {
  if (count == count_) return;
  release();
  if (count) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)));
  count_ = count;
}

template <typename T>
void DeviceBuffer<T>::release() {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  count_ = 0;
}

template <typename T>
void DeviceBuffer<T>::upload(const T* host, size_t count, cudaStream_t s) {
  DTRAIN_CHECK_LE(count, count_);
  CUDA_CHECK(cudaMemcpyAsync(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice, s));
}

template <typename T>
void DeviceBuffer<T>::download(T* host, size_t count, cudaStream_t s) const {
  DTRAIN_CHECK_LE(count, count_);
  CUDA_CHECK(cudaMemcpyAsync(host, ptr_, count * sizeof(T), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

template class DeviceBuffer<float>;
template class DeviceBuffer<unsigned char>;

std::string device_uuid(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char b : prop.uuid.bytes) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

}  // namespace dtrain::cuda
