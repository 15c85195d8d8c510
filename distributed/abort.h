// Ending the whole job from one rank: the only sanctioned way out after an error on a
// multi-rank job, so that no peer is left waiting in a collective.
#pragma once
#include <string>

namespace lf::dist {

// Logs "[rank r/N host] <message>" to stderr (and to glog's files when glog is initialised),
// then MPI_Abort(MPI_COMM_WORLD, exit_code): mpirun/srun kill every rank within seconds. Without
// an active MPI, exits the process with `exit_code`. Callable from any thread; never returns.
// main()'s catch-all calls it with the exception's what().
[[noreturn]] void abort_job(const std::string& message, int exit_code = 1);

}  // namespace lf::dist
