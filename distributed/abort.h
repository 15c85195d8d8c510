// Ending the whole job from one rank: the only sanctioned way out after an error on a
// multi-rank job, so that no peer is left waiting in a collective.
#pragma once
#include <string>

namespace lf::dist {

// Logs "[rank r/N host] <message>" to stderr (and to glog's files when glog is initialised),
// then MPI_Abort(MPI_COMM_WORLD, exit_code): mpirun/srun kill every rank within seconds. Under
// Open MPI's mpirun it first leaves a reaper (reaper.h) that ends this process and its mpirun
// or orted should they still be alive 10 s later (a host that does not answer). Without
// an active MPI, exits the process with `exit_code`. Callable from any thread; never returns.
// main()'s catch-all calls it with the exception's what().
[[noreturn]] void abort_job(const std::string& message, int exit_code = 1);

}  // namespace lf::dist
