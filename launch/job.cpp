// Job: logging set-up and the failure policy of one subcommand run (see job.h). Job::run is the
// one catch-all of the program: an exception from any subcommand ends here, is logged with the
// rank, and ends the whole job.
#include "launch/job.h"

#include <glog/logging.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/abort.h"
#include "distributed/logging.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"
#include "distributed/rank_info.h"
#include "launch/cli.h"
#include "launch/config_registry.h"

namespace lf::launch {

namespace {

// glog to stderr with "[rank r/N host]" in every line; ranks > 0 log warnings and errors only.
// The rank is known from the launcher's environment before MPI starts.
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

// Logs `message` with this rank; with other ranks running under MPI, aborts all of them
// (MPI_Abort, never returns) with `code`.
void fail_job(const std::string& message, int code) {
  if (dist::mpi_is_active() && dist::rank_context().world_size > 1) dist::abort_job(message, code);
  std::fprintf(stderr, "%s %s\n", dist::rank_tag().c_str(), message.c_str());
  std::fflush(stderr);
}

}  // namespace

Job::Job(const std::string& name, const char* argv0) : name_(name) { init_logging(argv0); }

int Job::run(const std::function<int()>& body) {
  int code = kExitOk;
  std::string message;
  try {
    return body();
  } catch (const std::invalid_argument& e) {
    code = kExitUsage;
    message = e.what();
  } catch (const c10::Error& e) {
    code = kExitRuntime;
    message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    code = kExitRuntime;
    message = e.what();
  }
  fail_job(str(name_, ": error: ", message), code);
  return code;
}

}  // namespace lf::launch
