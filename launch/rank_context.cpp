// Logging and job-wide failure (see rank_context.h). Rank facts come from the launcher's
// environment until distributed/ has initialised MPI.
#include "launch/rank_context.h"

#include <glog/logging.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "core/util/strings.h"

namespace lf::launch {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::atoi(v) : fallback;
}

std::string rank_tag() {
  int rank = env_int("OMPI_COMM_WORLD_RANK", env_int("SLURM_PROCID", 0));
  int world = env_int("OMPI_COMM_WORLD_SIZE", env_int("SLURM_NTASKS", 1));
  char host[256] = "?";
  gethostname(host, sizeof host);
  return str("[rank ", rank, "/", world, " ", host, "]");
}

}  // namespace

void init_logging(const char* argv0) {
  static bool done = false;
  if (done) return;
  done = true;
  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = false;
  if (env_int("OMPI_COMM_WORLD_RANK", env_int("SLURM_PROCID", 0)) > 0) FLAGS_minloglevel = google::WARNING;
  google::InitGoogleLogging(argv0);
}

void fail_job(const std::string& message, int code) {
  std::cerr << rank_tag() << " " << message << std::endl;
}

}  // namespace lf::launch
