# The CUDA backend is optional. DTRAIN_CUDA=AUTO (default) builds it when the toolkit is found
# (nvcc on PATH or under /usr/local/cuda); ON requires it; OFF skips it. A build without it is
# the CPU build, complete.
set(DTRAIN_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE DTRAIN_CUDA PROPERTY STRINGS AUTO ON OFF)
set(DTRAIN_HAVE_CUDA OFF)
if(NOT DTRAIN_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Data-center GPUs of today: A100 (80) and H100/H200 (90); override with
    # -DCMAKE_CUDA_ARCHITECTURES=...
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    list(APPEND CMAKE_MODULE_PATH ${CMAKE_CURRENT_LIST_DIR})
    find_package(NCCL REQUIRED)
    find_package(CUDNN REQUIRED)
    set(DTRAIN_HAVE_CUDA ON)
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 dialect for nvcc; kernels need 17
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # Host-side warnings as for C++, and nvcc's own as errors under CI.
    # --fmad=false: no a*b+c contracted into one FMA, as -ffp-contract=off on the CPU, so the
    # shared functors round alike on both executors (the cost on a GPU is still to be measured).
    set(DTRAIN_CUDA_FLAGS -Xcompiler=-Wall,-Wextra --expt-relaxed-constexpr --fmad=false)
    if(DEFINED ENV{CI} AND NOT "$ENV{CI}" STREQUAL "" AND NOT "$ENV{CI}" STREQUAL "false")
      list(APPEND DTRAIN_CUDA_FLAGS -Werror=all-warnings -Xcompiler=-Werror)
    endif()
    message(STATUS "dtrain: CUDA backend on (${CMAKE_CUDA_COMPILER_VERSION}, archs "
                   "${CMAKE_CUDA_ARCHITECTURES}, NCCL ${NCCL_LIBRARY}, cuDNN ${CUDNN_LIBRARY})")
  elseif(DTRAIN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "DTRAIN_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "dtrain: no CUDA toolkit found; CPU-only build")
  endif()
endif()
