// Check macros for every MPI, NCCL and CUDA call: a failure throws std::runtime_error naming
// the call, file:line, the library's own error text, host and rank.
// LF_NCCL_CHECK and LF_CUDA_CHECK live in distributed/cuda/nccl_check.h (they need nccl.h).
#pragma once
#include "distributed/mpi_include.h"

#include <string>

namespace lf::dist {

// Throws std::runtime_error: "<file>:<line> [rank r/N host] <api> call `<call>` failed: <detail>".
[[noreturn]] void throw_call_error(const char* api, const char* call, const char* file, int line,
                                   const std::string& detail);

// Open MPI's text for an MPI error code ("MPI_ERR_TRUNCATE: message truncated"...).
std::string mpi_error_text(int code);

}  // namespace lf::dist

// Communicators use MPI_ERRORS_RETURN (set by MPIRuntime), so failures reach this check
// instead of Open MPI's default abort without a rank or call site.
#define LF_MPI_CHECK(call)                                                                    \
  do {                                                                                        \
    const int lf_mpi_rc_ = (call);                                                            \
    if (lf_mpi_rc_ != MPI_SUCCESS)                                                            \
      ::lf::dist::throw_call_error("MPI", #call, __FILE__, __LINE__,                          \
                                   ::lf::dist::mpi_error_text(lf_mpi_rc_));                   \
  } while (0)
