// The layout of ranks over hosts: its log line, its consistency check, and its all_gather over
// ranks simulated as threads.
#include "distributed/rank_layout.h"

#include <gtest/gtest.h>

#include "distributed/fake_communicator.h"
#include "tests/test_util.h"

namespace lf::dist {
namespace {

using lf::testing::contains;

// 2 hosts x 2 ranks, 1 thread each; then a third host with one rank of 2 threads.
std::vector<RankPlace> two_by_two() {
  return {{0, "h1", 0, 2, 1}, {1, "h1", 1, 2, 1}, {2, "h2", 0, 2, 1}, {3, "h2", 1, 2, 1}};
}

TEST(RankLayout, FormatsRankLists) {
  EXPECT_EQ(format_rank_list({3}), "3");
  EXPECT_EQ(format_rank_list({2, 3}), "2-3");
  EXPECT_EQ(format_rank_list({0, 2, 5, 6, 7}), "0, 2, 5-7");
  EXPECT_EQ(format_rank_list({}), "");
}

TEST(RankLayout, DescribesRanksPerHost) {
  EXPECT_EQ(describe_layout(two_by_two()),
            "ranks on 2 hosts: h1 ranks 0-1 (local 0-1 of 2, 1 thread each); "
            "h2 ranks 2-3 (local 0-1 of 2, 1 thread each)");
  std::vector<RankPlace> uneven = {{0, "h1", 0, 2, 1}, {1, "h1", 1, 2, 1}, {2, "h2", 0, 1, 2}};
  EXPECT_EQ(describe_layout(uneven),
            "ranks on 2 hosts: h1 ranks 0-1 (local 0-1 of 2, 1 thread each); h2 rank 2 (local 0 of 1, 2 threads)");
  // Ranks of a host need not be contiguous (round-robin mapping).
  std::vector<RankPlace> round_robin = {{0, "a", 0, 2, 4}, {1, "b", 0, 2, 4}, {2, "a", 1, 2, 4}, {3, "b", 1, 2, 4}};
  EXPECT_EQ(describe_layout(round_robin),
            "ranks on 2 hosts: a ranks 0, 2 (local 0-1 of 2, 4 threads each); b ranks 1, 3 (local 0-1 of 2, "
            "4 threads each)");
}

TEST(RankLayout, ConsistentLayoutHasNoProblems) {
  EXPECT_TRUE(check_layout(two_by_two()).empty());
  EXPECT_TRUE(check_layout({{0, "solo", 0, 1, 8}}).empty());
}

TEST(RankLayout, NamesAHostWhoseLocalRanksDoNotMatch) {
  // Two machines both called "node": the launcher's local ranks are 0,1 twice.
  std::vector<RankPlace> places = two_by_two();
  places[2].host = places[3].host = "h1";
  const std::vector<std::string> problems = check_layout(places);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(contains(problems[0], "host h1 runs ranks 0-3 (4 ranks) but the launcher gave them local ranks "
                                    "0, 0, 1, 1 and local size 2"))
      << problems[0];
  // A local size that disagrees with the count.
  places = two_by_two();
  places[0].local_size = places[1].local_size = 3;
  ASSERT_EQ(check_layout(places).size(), 1u);
  EXPECT_TRUE(contains(check_layout(places)[0], "host h1 runs ranks 0-1 (2 ranks)")) << check_layout(places)[0];
}

TEST(RankLayout, GathersEveryRanksPlace) {
  auto world = FakeWorld::create(3);
  std::vector<std::vector<RankPlace>> seen(3);
  const auto errors = world->run([&](Communicator& comm) {
    RankInfo info;
    info.rank = comm.rank();
    info.world_size = 3;
    info.local_rank = comm.rank() == 2 ? 0 : comm.rank();
    info.local_size = comm.rank() == 2 ? 1 : 2;
    seen[comm.rank()] = gather_layout(comm, info, comm.rank() == 2 ? "h2" : "h1", comm.rank() + 1);
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(seen[r].size(), 3u);
    EXPECT_EQ(describe_layout(seen[r]),
              "ranks on 2 hosts: h1 ranks 0-1 (local 0-1 of 2, 1/2 threads each); h2 rank 2 (local 0 of 1, 3 threads)");
  }
}

}  // namespace
}  // namespace lf::dist
