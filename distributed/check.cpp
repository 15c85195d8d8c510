// The error path shared by LF_MPI_CHECK, LF_NCCL_CHECK and LF_CUDA_CHECK.
#include "distributed/check.h"

#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/rank_context.h"

namespace lf::dist {

void throw_call_error(const char* api, const char* call, const char* file, int line,
                      const std::string& detail) {
  throw std::runtime_error(
      lf::str(file, ":", line, " ", rank_tag(), " ", api, " call `", call, "` failed: ", detail));
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  // MPI_Error_string may be called before MPI_Init and after MPI_Finalize (MPI 4.1 §8.7).
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return lf::str("MPI error code ", code);
  return lf::str(std::string(text, static_cast<size_t>(length)), " (code ", code, ")");
}

}  // namespace lf::dist
