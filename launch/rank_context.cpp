// Logging and job-wide failure (see rank_context.h), on distributed/'s rank context: the rank
// is known from the launcher's environment before MPI starts, so every line carries it.
#include "launch/rank_context.h"

#include <glog/logging.h>

#include <cstdio>

#include "distributed/abort.h"
#include "distributed/logging.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"
#include "distributed/rank_info.h"

namespace lf::launch {

void init_logging(const char* argv0) {
  static bool done = false;
  if (done) return;
  done = true;
  try {
    dist::RankInfo info = dist::discover_rank_info();
    dist::set_rank_context({info.rank, info.world_size, dist::local_host_name()});
  } catch (const std::exception&) {
    // Inconsistent launcher variables: Runtime reports them with the full message.
  }
  dist::init_rank_logging(argv0);
  FLAGS_colorlogtostderr = false;
}

void fail_job(const std::string& message, int code) {
  // With other ranks alive, MPI_Abort ends them all within seconds (never returns).
  if (dist::mpi_is_active() && dist::rank_context().world_size > 1) dist::abort_job(message, code);
  std::fprintf(stderr, "%s %s\n", dist::rank_tag().c_str(), message.c_str());
  std::fflush(stderr);
}

}  // namespace lf::launch
