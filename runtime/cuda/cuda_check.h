// Every CUDA, cuBLAS and cuDNN call is wrapped: a failure becomes a dtrain::Error that says which
// call, where, and the library's own words.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "runtime/error.h"

namespace dtrain::cuda {

[[noreturn]] void fail_call(const char* lib, const char* expr, const char* file, int line,
                            const std::string& why);

// DTRAIN_CUDA_SYNC=1 (read once): after_launch waits for `stream` and fails naming `what` (the
// kernel or library call just queued) if the GPU reported an error.
bool sync_after_launch();
void check_launch(cudaStream_t stream, const char* what, const char* file, int line);

}  // namespace dtrain::cuda

#define CUDA_CHECK(expr)                                                                      \
  do {                                                                                        \
    const cudaError_t dtrain_rc_ = (expr);                                                    \
    if (dtrain_rc_ != cudaSuccess)                                                            \
      ::dtrain::cuda::fail_call(                                                              \
          "CUDA", #expr, __FILE__, __LINE__,                                                  \
          std::string(cudaGetErrorName(dtrain_rc_)) + ": " + cudaGetErrorString(dtrain_rc_)); \
  } while (0)

// After queueing work: the launch's own error at once; with DTRAIN_CUDA_SYNC=1, its execution's.
#define CUDA_LAUNCHED(stream, what) \
  ::dtrain::cuda::check_launch((stream), (what), __FILE__, __LINE__)

#define CUBLAS_CHECK(expr)                                                            \
  do {                                                                                \
    const cublasStatus_t dtrain_rc_ = (expr);                                         \
    if (dtrain_rc_ != CUBLAS_STATUS_SUCCESS)                                          \
      ::dtrain::cuda::fail_call("cuBLAS", #expr, __FILE__, __LINE__,                  \
                                std::string(cublasGetStatusName(dtrain_rc_)) + ": " + \
                                    cublasGetStatusString(dtrain_rc_));               \
  } while (0)

#define CUDNN_CHECK(expr)                                           \
  do {                                                              \
    const cudnnStatus_t dtrain_rc_ = (expr);                        \
    if (dtrain_rc_ != CUDNN_STATUS_SUCCESS)                         \
      ::dtrain::cuda::fail_call("cuDNN", #expr, __FILE__, __LINE__, \
                                cudnnGetErrorString(dtrain_rc_));   \
  } while (0)
