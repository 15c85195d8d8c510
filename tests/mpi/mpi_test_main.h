// Shared by the test_mpi sources: the communicator every test uses, and the failure modes
// (main.cpp runs one instead of the tests when given --fail-mode=...).
#pragma once
#include <memory>
#include <string>

#include "distributed/mpi_communicator.h"

namespace lf::dist::testkit {

// A fresh duplicate of MPI_COMM_WORLD with a 60 s timeout, so a test whose ranks diverge ends
// with a named timeout instead of hanging ctest.
std::unique_ptr<MPICommunicator> test_world();

// Runs a failure scenario for failure_test.cpp's child jobs: "throw" (rank 1 throws, rank 0
// waits at a barrier), "hang" (rank 1 stalls, rank 0's barrier deadline fires), "die" (rank 1
// exits without a word). Any exception reaches main()'s catch-all, which calls abort_job.
int run_fail_mode(const std::string& mode);

}  // namespace lf::dist::testkit
