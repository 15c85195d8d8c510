// MPIRuntime under mpirun: Open MPI runs the Reducer's non-blocking all-reduces with the
// bandwidth-optimal algorithm that prefer_bandwidth_optimal_iallreduce() asks for.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "distributed/mpi_runtime.h"
#include "tests/mpi/mpi_test_main.h"

namespace lf::dist {
namespace {

TEST(MPIRuntimeTuning, LibnbcReadsTheIallreduceAlgorithmFromTheEnvironment) {
  // MPIRuntime set the variable before MPI_Init (or the user did, and that value stands).
  const char* env = std::getenv(kIallreduceAlgorithmVariable);
  ASSERT_NE(env, nullptr) << kIallreduceAlgorithmVariable << " is not set after MPIRuntime";
  // What Open MPI itself holds, through the MPI tool interface (MPI 3.1 sec. 14.3.6).
  int provided = 0;
  ASSERT_EQ(MPI_T_init_thread(MPI_THREAD_SINGLE, &provided), MPI_SUCCESS);
  int index = -1;
  if (MPI_T_cvar_get_index("coll_libnbc_iallreduce_algorithm", &index) != MPI_SUCCESS) {
    MPI_T_finalize();
    GTEST_SKIP() << "this MPI has no coll_libnbc_iallreduce_algorithm (not Open MPI 4.x)";
  }
  MPI_T_cvar_handle handle;
  int count = 0;
  ASSERT_EQ(MPI_T_cvar_handle_alloc(index, nullptr, &handle, &count), MPI_SUCCESS);
  int value = -1;
  EXPECT_EQ(MPI_T_cvar_read(handle, &value), MPI_SUCCESS);
  MPI_T_cvar_handle_free(&handle);
  MPI_T_finalize();
  EXPECT_EQ(std::to_string(value), std::string(env));
}

}  // namespace
}  // namespace lf::dist
