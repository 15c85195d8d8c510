// MPI_Init_thread with a checked thread level, error handlers, rank context.
#include "distributed/mpi_runtime.h"

#include <cstdlib>
#include <exception>
#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/check.h"
#include "distributed/rank_context.h"
#include "distributed/rank_info.h"

namespace lf::dist {
namespace {

bool g_serialize_calls = false;
std::mutex g_mpi_mutex;

int to_mpi(ThreadLevel level) {
  switch (level) {
    case ThreadLevel::kSingle: return MPI_THREAD_SINGLE;
    case ThreadLevel::kFunneled: return MPI_THREAD_FUNNELED;
    case ThreadLevel::kSerialized: return MPI_THREAD_SERIALIZED;
    case ThreadLevel::kMultiple: return MPI_THREAD_MULTIPLE;
  }
  return MPI_THREAD_SINGLE;
}

ThreadLevel from_mpi(int level) {
  if (level >= MPI_THREAD_MULTIPLE) return ThreadLevel::kMultiple;
  if (level >= MPI_THREAD_SERIALIZED) return ThreadLevel::kSerialized;
  if (level >= MPI_THREAD_FUNNELED) return ThreadLevel::kFunneled;
  return ThreadLevel::kSingle;
}

}  // namespace

void prefer_bandwidth_optimal_iallreduce() {
  // Open MPI 4.x's libnbc picks a binomial tree for every in-place MPI_Iallreduce, and for any
  // on fewer than 4 ranks (nbc_iallreduce.c, nbc_allreduce_init's algorithm selection): the
  // root receives and sends the whole buffer, so the Reducer's in-place bucket all-reduces ran
  // at about half the speed of a blocking MPI_Allreduce of the same bytes (bench/allreduce.cpp).
  // 3 = Rabenseifner's reduce-scatter + all-gather (Thakur, Rabenseifner & Gropp, "Optimization
  // of Collective Communication Operations in MPICH", IJHPCA 2005, the allreduce section),
  // what libnbc itself picks for large out-of-place buffers on 4+ ranks; it falls back
  // to a ring for buffers with fewer elements than ranks. Overwrite 0: a value given by the
  // user (environment, mpirun --mca) wins. Other MPIs ignore the variable.
  setenv(kIallreduceAlgorithmVariable, kIallreduceAlgorithm, /*overwrite=*/0);
}

std::string to_string(ThreadLevel level) {
  switch (level) {
    case ThreadLevel::kSingle: return "MPI_THREAD_SINGLE";
    case ThreadLevel::kFunneled: return "MPI_THREAD_FUNNELED";
    case ThreadLevel::kSerialized: return "MPI_THREAD_SERIALIZED";
    case ThreadLevel::kMultiple: return "MPI_THREAD_MULTIPLE";
  }
  return "?";
}

void check_thread_level(ThreadLevel required, ThreadLevel provided) {
  if (static_cast<int>(provided) < static_cast<int>(required))
    throw std::runtime_error(
        lf::str("MPI_Init_thread granted ", to_string(provided), " but LatentForge needs at least ",
            to_string(required),
            " (the gradient reducer's communication thread calls MPI beside the main thread); "
            "use an MPI built with thread support (Open MPI: ompi_info | grep 'Thread support' "
            "should say MPI_THREAD_MULTIPLE: yes), or set the reducer's overlap off"));
}

MPIRuntime::MPIRuntime(int* argc, char*** argv, ThreadLevel minimum) {
  int initialized = 0;
  LF_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized) throw std::logic_error("MPIRuntime: MPI is already initialised; construct one MPIRuntime in main()");
  prefer_bandwidth_optimal_iallreduce();
  int provided = MPI_THREAD_SINGLE;
  LF_MPI_CHECK(MPI_Init_thread(argc, argv, to_mpi(ThreadLevel::kMultiple), &provided));
  provided_ = from_mpi(provided);
  g_serialize_calls = provided_ != ThreadLevel::kMultiple;
  LF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  LF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  LF_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  set_rank_context(RankContext{rank_, world_size_, local_host_name()});
  check_thread_level(minimum, provided_);

  const RankInfo env = discover_rank_info();
  if (env.source != "none" && (env.rank != rank_ || env.world_size != world_size_))
    throw std::runtime_error(lf::str(rank_tag(), " MPI says rank ", rank_, " of ", world_size_,
                                 " but the launcher's environment (", env.source, ") says rank ",
                                 env.rank, " of ", env.world_size,
                                 "; was this binary started by a different launcher than the "
                                 "MPI it links against?"));
}

MPIRuntime::~MPIRuntime() {
  // While an exception unwinds, a peer may be waiting in a collective and MPI_Finalize could
  // wait for it forever: leave the ending to main()'s catch-all (abort_job).
  if (std::uncaught_exceptions() > 0) return;
  if (mpi_is_active()) MPI_Finalize();
}

bool mpi_is_active() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

std::unique_lock<std::mutex> mpi_call_lock() {
  if (g_serialize_calls) return std::unique_lock<std::mutex>(g_mpi_mutex);
  return std::unique_lock<std::mutex>();
}

}  // namespace lf::dist
