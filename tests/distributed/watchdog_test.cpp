// The watchdog thread, deadline polling, the check macro's message and the MPI thread-level
// check: the pieces of failure handling that need no peers.
#include "tests/test_util.h"
#include "distributed/watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "distributed/check.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"

namespace lf::dist {
namespace {

using lf::testing::contains;

TEST(Watchdog, FiresForAnArmedSectionPastItsDeadline) {
  std::mutex mutex;
  std::vector<std::string> fired;
  Watchdog watchdog("[rank 3/4 node7]", [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(mutex);
    fired.push_back(m);
  }, Seconds(0.01));
  {
    auto guard = watchdog.arm("checkpoint write of step-00000041", Seconds(0.05));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_EQ(fired.size(), 1u);  // once, not every period
  EXPECT_TRUE(contains(fired[0], "[rank 3/4 node7] checkpoint write of step-00000041 has not "
                                 "completed after 0."))
      << fired[0];
  EXPECT_TRUE(contains(fired[0], "deadline 0.1 s")) << fired[0];  // 0.05 printed to 1 decimal
}

TEST(Watchdog, DisarmedSectionNeverFires) {
  std::atomic<int> fired{0};
  Watchdog watchdog("[rank 0/1 h]", [&](const std::string&) { ++fired; }, Seconds(0.01));
  for (int i = 0; i < 5; ++i) auto guard = watchdog.arm("quick", Seconds(0.1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(fired.load(), 0);
}

TEST(PollUntil, ReturnsOnDoneOrDeadline) {
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 100; }, Deadline::after(Seconds(5)), PollPolicy{}));
  EXPECT_EQ(calls, 100);
  const auto start = Clock::now();
  EXPECT_FALSE(poll_until([] { return false; }, Deadline::after(Seconds(0.05)), PollPolicy{}));
  const double waited = std::chrono::duration_cast<Seconds>(Clock::now() - start).count();
  EXPECT_GE(waited, 0.05);
  EXPECT_LT(waited, 1.0);
  EXPECT_TRUE(Deadline::after(Seconds(1e30)).is_never());
}

TEST(CheckMacro, NamesCallFileLineRankAndMPIText) {
  set_rank_context(RankContext{2, 8, "node3"});
  try {
    LF_MPI_CHECK(MPI_ERR_TRUNCATE);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "watchdog_test.cpp:")) << m;
    EXPECT_TRUE(contains(m, "[rank 2/8 node3] MPI call `MPI_ERR_TRUNCATE` failed")) << m;
    // Outside MPI_Init the code is all there is (test_mpi checks Open MPI's own text).
    EXPECT_TRUE(contains(m, "MPI error code " + std::to_string(MPI_ERR_TRUNCATE))) << m;
  }
  set_rank_context(RankContext{});
}

TEST(MPIThreadLevel, TooLowIsAClearError) {
  EXPECT_NO_THROW(check_thread_level(ThreadLevel::kSerialized, ThreadLevel::kMultiple));
  EXPECT_NO_THROW(check_thread_level(ThreadLevel::kSerialized, ThreadLevel::kSerialized));
  try {
    check_thread_level(ThreadLevel::kSerialized, ThreadLevel::kFunneled);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "granted MPI_THREAD_FUNNELED")) << e.what();
    EXPECT_TRUE(contains(e.what(), "at least MPI_THREAD_SERIALIZED")) << e.what();
  }
}

}  // namespace
}  // namespace lf::dist
