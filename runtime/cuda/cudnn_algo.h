// Which cuDNN algorithm a convolution runs: the first one cuDNN's heuristics rank that reports
// success and computes in plain FP32 (default or FMA math: no tensor-op math, which rounds
// through TF32 or FP16 and would break parity with the CPU reference); if none does, a safe
// fallback that needs no workspace. Header-only so tests can check the choice on made-up
// rankings without a GPU.
#pragma once

#include <cudnn.h>

namespace dtrain::cuda {

template <typename Perf, typename Algo>
Algo choose_cudnn_algo(const Perf* ranked, int found, Algo fallback) {
  for (int i = 0; i < found; ++i)
    if (ranked[i].status == CUDNN_STATUS_SUCCESS &&
        (ranked[i].mathType == CUDNN_DEFAULT_MATH || ranked[i].mathType == CUDNN_FMA_MATH))
      return ranked[i].algo;
  return fallback;
}

}  // namespace dtrain::cuda
