// LF_NCCL_CHECK and LF_CUDA_CHECK: failures throw std::runtime_error naming the call,
// file:line, the library's error text, host and rank (see distributed/check.h).
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "distributed/check.h"

#define LF_NCCL_CHECK(call)                                                                    \
  do {                                                                                         \
    const ncclResult_t lf_nccl_rc_ = (call);                                                   \
    if (lf_nccl_rc_ != ncclSuccess)                                                            \
      ::lf::dist::throw_call_error("NCCL", #call, __FILE__, __LINE__,                          \
                                   std::string(ncclGetErrorString(lf_nccl_rc_)));              \
  } while (0)

#define LF_CUDA_CHECK(call)                                                                    \
  do {                                                                                         \
    const cudaError_t lf_cuda_rc_ = (call);                                                    \
    if (lf_cuda_rc_ != cudaSuccess)                                                            \
      ::lf::dist::throw_call_error(                                                            \
          "CUDA", #call, __FILE__, __LINE__,                                                   \
          std::string(cudaGetErrorName(lf_cuda_rc_)) + ": " + cudaGetErrorString(lf_cuda_rc_)); \
  } while (0)
