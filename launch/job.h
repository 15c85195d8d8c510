// One run of a subcommand as a job: logging with the rank in every line, the mapping from
// failures to exit codes, and ending the whole multi-rank job when this rank fails.
#pragma once
#include <functional>
#include <string>

namespace lf::launch {

// Exit codes beyond cli.h's 0/1/2, used by train and vae train (docs/cli.md, cluster/slurm).
constexpr int kExitRequeue = 75;      // SIGUSR1: checkpoint written, requeue me (EX_TEMPFAIL)
constexpr int kExitTerminated = 143;  // SIGTERM: checkpoint written, do not requeue (128+15)

class Job {
 public:
  // Initialises glog once for the process (to stderr, "[rank r/N host]" prefix, rank > 0 logs
  // warnings and errors only).
  Job(const std::string& name, const char* argv0);

  // Runs body; std::invalid_argument -> 2, any other exception -> 1, each logged with the rank.
  // When other ranks exist, a failing rank ends them all (MPI_Abort) with its message.
  int run(const std::function<int()>& body);

 private:
  std::string name_;
};

}  // namespace lf::launch
