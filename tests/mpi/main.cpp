// test_mpi's main: MPI with the thread level the Reducer needs, GoogleTest on every rank with
// only rank 0 printing progress, and one verdict for all ranks (the failure count is
// all-reduced). `--fail-mode=MODE` runs a failure scenario instead (see mpi_test_main.h).
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "distributed/abort.h"
#include "distributed/check.h"
#include "distributed/logging.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"
#include "tests/mpi/mpi_test_main.h"

namespace lf::dist::testkit {

std::unique_ptr<MPICommunicator> test_world() {
  auto world = MPICommunicator::world();
  world->set_timeout(Seconds(60.0));
  return world;
}

int run_fail_mode(const std::string& mode) {
  auto world = test_world();
  const Deadline patient = Deadline::after(Seconds(60.0));
  if (mode == "throw") {
    if (world->rank() == 1)
      throw std::runtime_error("injected failure: cannot open cache/shard-00003.h5 (rank 1)");
    world->barrier(patient, "barrier before step 41");
  } else if (mode == "hang") {
    if (world->rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
    world->barrier(Deadline::after(Seconds(1.5)), "barrier before step 41");
  } else if (mode == "die") {
    if (world->rank() == 1) std::_Exit(3);
    world->barrier(patient, "barrier before step 41");
  } else {
    throw std::invalid_argument("--fail-mode='" + mode + "' is not one of: throw, hang, die");
  }
  return 0;
}

// On ranks other than 0: print only failures, tagged with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::cerr << rank_tag() << " " << (result.file_name() ? result.file_name() : "?") << ":"
              << result.line_number() << ": Failure\n" << result.message() << std::endl;
  }
};

}  // namespace lf::dist::testkit

int main(int argc, char** argv) {
  using namespace lf::dist;
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<MPIRuntime> runtime;  // outlives the catch below: abort_job needs MPI alive
  try {
    runtime = std::make_unique<MPIRuntime>(&argc, &argv, ThreadLevel::kMultiple);
    MPIRuntime& mpi = *runtime;
    init_rank_logging(argv[0]);
    for (int i = 1; i < argc; ++i) {
      if (std::strncmp(argv[i], "--fail-mode=", 12) == 0)
        return testkit::run_fail_mode(argv[i] + 12);
    }
    if (mpi.rank() != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new testkit::FailurePrinter);
    }
    const int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    // Every rank must agree on the verdict (a failure on rank 1 alone fails the job).
    int any_failed = local_failed;
    LF_MPI_CHECK(MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (mpi.rank() == 0 && any_failed && !local_failed)
      std::cerr << "test_mpi: a test failed on another rank (see its output above)" << std::endl;
    return any_failed;
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
}
