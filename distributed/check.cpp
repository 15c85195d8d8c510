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
  // Open MPI 4.1 aborts on MPI_Error_string outside MPI_Init..MPI_Finalize (MPI 4.0 allowed
  // it only after); MPI_Initialized and MPI_Finalized are always callable.
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return lf::str("MPI error code ", code, " (MPI is not active)");
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return lf::str("MPI error code ", code);
  return lf::str(std::string(text, static_cast<size_t>(length)), " (code ", code, ")");
}

}  // namespace lf::dist
