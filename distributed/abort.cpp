// abort_job: log with the rank tag, then MPI_Abort.
#include "distributed/abort.h"

#include <glog/logging.h>
#include "distributed/mpi_include.h"

#include <cstdio>
#include <cstdlib>

#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"
#include "distributed/reaper.h"

namespace lf::dist {

void abort_job(const std::string& message, int exit_code) {
  // Timeout and check messages already open with the tag; do not repeat it.
  const std::string tag = rank_tag();
  const std::string line = message.rfind(tag, 0) == 0 ? message : tag + " " + message;
  // stderr first and unbuffered: it is what mpirun forwards and what the user reads.
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  if (google::IsGoogleLoggingInitialized() && !FLAGS_logtostderr) {
    LOG(ERROR) << message;
    google::FlushLogFiles(google::GLOG_INFO);
  }
  std::fflush(stdout);
  if (mpi_is_active()) {
    // mpirun/orted may never end the job when a host does not answer (reaper.h).
    leave_launcher_reaper();
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  std::_Exit(exit_code);
}

}  // namespace lf::dist
