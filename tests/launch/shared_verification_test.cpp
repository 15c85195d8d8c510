// Shared verification: every item is checked exactly once, by rank i % W, and a damaged item
// found by one rank fails every rank with the same message — the finder's own words — after one
// agreement, whichever rank ends the job first. (The cache's shards in `train` use it.)
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "distributed/fake_communicator.h"
#include "launch/shared_verification.h"
#include "tests/test_util.h"

namespace lf::launch {
namespace {

using lf::testing::contains;

TEST(SharedVerification, EachRankChecksItsShareAndAllAgreeOnAFailure) {
  for (int64_t bad : {int64_t{-1}, int64_t{4}}) {
    const int64_t count = 7;
    std::mutex mu;
    std::vector<std::vector<int64_t>> checked_by(3);
    auto world = dist::FakeWorld::create(3);
    auto errors = world->run([&](dist::Communicator& comm) {
      verify_shared(
          count,
          [&](int64_t i) {
            {
              std::lock_guard<std::mutex> lock(mu);
              checked_by[comm.rank()].push_back(i);
            }
            if (i == bad) throw std::runtime_error("shard-00004.h5: checksum mismatch: the manifest expects 9f2c");
          },
          comm, "verification of the cache cache");
    });
    EXPECT_EQ(checked_by[0], (std::vector<int64_t>{0, 3, 6}));
    EXPECT_EQ(checked_by[1], (std::vector<int64_t>{1, 4}));  // stops at its first damaged item
    EXPECT_EQ(checked_by[2], (std::vector<int64_t>{2, 5}));
    if (bad < 0) {
      for (const auto& e : errors) EXPECT_EQ(e, "");
      continue;
    }
    for (int r = 0; r < 3; ++r)
      EXPECT_TRUE(contains(errors[r], "verification of the cache cache: rank 1 found: shard-00004.h5: checksum "
                                      "mismatch: the manifest expects 9f2c"))
          << errors[r];
  }
}

TEST(SharedVerification, OneRankChecksEverything) {
  auto world = dist::FakeWorld::create(1);
  std::atomic<int> n{0};
  auto errors = world->run([&](dist::Communicator& comm) {
    verify_shared(5, [&](int64_t) { ++n; }, comm, "check");
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(n.load(), 5);
}

}  // namespace
}  // namespace lf::launch
