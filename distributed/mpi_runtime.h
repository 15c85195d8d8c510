// MPI start-up and shut-down: initialise with the thread level the Reducer needs, check what
// Open MPI granted, make errors return (so LF_MPI_CHECK sees them), and set the rank context.
#pragma once
#include "distributed/mpi_include.h"

#include <mutex>
#include <string>

namespace lf::dist {

enum class ThreadLevel { kSingle, kFunneled, kSerialized, kMultiple };
std::string to_string(ThreadLevel level);

// Throws std::runtime_error when `provided` is below `required`, naming both and the fix.
// Pure; used by MPIRuntime and tested on its own.
void check_thread_level(ThreadLevel required, ThreadLevel provided);

// The Open MPI variable naming libnbc's MPI_Iallreduce algorithm (ompi_info --param coll
// libnbc --level 9), and the value this module sets when the user has not: see
// prefer_bandwidth_optimal_iallreduce().
inline constexpr const char* kIallreduceAlgorithmVariable = "OMPI_MCA_coll_libnbc_iallreduce_algorithm";
inline constexpr const char* kIallreduceAlgorithm = "3";

// Sets kIallreduceAlgorithmVariable to kIallreduceAlgorithm (Rabenseifner's reduce-scatter +
// all-gather) unless it is already set. Open MPI's default for the Reducer's in-place
// all-reduces is a binomial tree at about half the bandwidth. Call before MPI_Init on every
// rank (MPIRuntime does): all ranks must run the same algorithm.
void prefer_bandwidth_optimal_iallreduce();

// RAII over MPI_Init_thread / MPI_Finalize. Construct once in main(), before any thread that
// may call MPI starts. Requests MPI_THREAD_MULTIPLE and accepts down to `minimum`:
// the Reducer's communication thread and the main thread both call MPI, which needs MULTIPLE,
// or SERIALIZED with every MPI call of this module taken under one lock (mpi_call_lock()).
// Also: prefer_bandwidth_optimal_iallreduce() before MPI_Init, MPI_ERRORS_RETURN on
// MPI_COMM_WORLD, the rank context (rank, size, host) for log and
// error tags, and a check that the launcher's environment (rank_info.h) agrees with MPI.
class MPIRuntime {
 public:
  MPIRuntime(int* argc, char*** argv, ThreadLevel minimum = ThreadLevel::kSerialized);
  ~MPIRuntime();  // MPI_Finalize, except while an exception unwinds (abort_job then ends MPI)
  MPIRuntime(const MPIRuntime&) = delete;
  MPIRuntime& operator=(const MPIRuntime&) = delete;

  ThreadLevel provided() const { return provided_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

 private:
  ThreadLevel provided_ = ThreadLevel::kSingle;
  int rank_ = 0;
  int world_size_ = 1;
};

// True between MPI_Init and MPI_Finalize.
bool mpi_is_active();

// The lock every MPI call of this module takes: engaged only when MPI granted less than
// MPI_THREAD_MULTIPLE (then MPI calls from different threads must not overlap).
std::unique_lock<std::mutex> mpi_call_lock();

}  // namespace lf::dist
