// The in-process fake: collectives with values known by construction, and injected faults
// (a throwing rank, an absent rank, a slow rank) that end every rank in bounded time.
#include "tests/test_util.h"
#include "distributed/fake_communicator.h"

#include <gtest/gtest.h>

#include <atomic>

#include "distributed/agreement.h"

namespace lf::dist {
namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration_cast<Seconds>(Clock::now() - t).count();
}

using lf::testing::contains;
using lf::testing::error_of;

void expect_all_ok(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(FakeCommunicator, AllReduceSumMaxMinFromRankFilledInputs) {
  auto world = FakeWorld::create(4);
  expect_all_ok(world->run([](Communicator& comm) {
    const int r = comm.rank();
    for (auto dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kHalf, torch::kBFloat16}) {
      // rank r holds (r + 1) * (i + 1): the sum is 10 (i + 1) for 4 ranks.
      torch::Tensor t = (torch::arange(1, 6, torch::kDouble) * (r + 1)).to(dtype);
      comm.all_reduce(t, ReduceOp::kSum, "sum");
      torch::Tensor expected = (torch::arange(1, 6, torch::kDouble) * 10).to(dtype);
      EXPECT_TRUE(torch::equal(t, expected)) << dtype << " rank " << r << ": " << t;
    }
    torch::Tensor m = torch::tensor({r, -r}, torch::kLong);
    comm.all_reduce(m, ReduceOp::kMax, "max");
    EXPECT_EQ(m[0].item<int64_t>(), 3);
    EXPECT_EQ(m[1].item<int64_t>(), 0);
    torch::Tensor n = torch::tensor({r + 5}, torch::kByte);
    comm.all_reduce(n, ReduceOp::kMin, "min");
    EXPECT_EQ(n.item<uint8_t>(), 5);
  }));
}

TEST(FakeCommunicator, BroadcastAllGatherBarrier) {
  auto world = FakeWorld::create(3);
  expect_all_ok(world->run([](Communicator& comm) {
    const int r = comm.rank();
    torch::Tensor b = torch::full({2, 2}, static_cast<float>(r * 10));
    comm.broadcast(b, 2, "broadcast from 2");
    EXPECT_TRUE(torch::equal(b, torch::full({2, 2}, 20.0f))) << b;
    torch::Tensor g = comm.all_gather(torch::tensor({r, r * r}, torch::kLong), "gather");
    EXPECT_TRUE(torch::equal(g, torch::tensor({{0, 0}, {1, 1}, {2, 4}}, torch::kLong))) << g;
    comm.barrier("barrier");
    EXPECT_TRUE(any_rank(comm, r == 1, "flag"));
    EXPECT_FALSE(any_rank(comm, false, "flag"));
  }));
}

TEST(FakeCommunicator, DuplicatesAreIndependentChannels) {
  auto world = FakeWorld::create(2);
  expect_all_ok(world->run([](Communicator& comm) {
    std::unique_ptr<Communicator> dup = comm.duplicate();
    // Rank 0 issues on the duplicate first, rank 1 on the original first: with shared ordering
    // these would pair mismatched operations.
    torch::Tensor a = torch::ones({3});
    torch::Tensor b = torch::ones({5});
    std::shared_ptr<Work> wa, wb;
    if (comm.rank() == 0) {
      wb = dup->all_reduce_async(b, ReduceOp::kSum, "b");
      wa = comm.all_reduce_async(a, ReduceOp::kSum, "a");
    } else {
      wa = comm.all_reduce_async(a, ReduceOp::kSum, "a");
      wb = dup->all_reduce_async(b, ReduceOp::kSum, "b");
    }
    wa->wait();
    wb->wait();
    EXPECT_TRUE(torch::equal(a, torch::full({3}, 2.0f)));
    EXPECT_TRUE(torch::equal(b, torch::full({5}, 2.0f)));
  }));
}

TEST(FakeCommunicator, MismatchedCollectivesNameBothRanks) {
  auto world = FakeWorld::create(2);
  const auto errors = world->run([](Communicator& comm) {
    comm.set_timeout(Seconds(2.0));
    torch::Tensor t = torch::ones({comm.rank() == 0 ? 3 : 4});
    comm.all_reduce(t, ReduceOp::kSum, comm.rank() == 0 ? "loss" : "grad norm");
  });
  const std::string joined = errors[0] + "\n" + errors[1];
  EXPECT_TRUE(contains(joined, "does not match across ranks")) << joined;
  EXPECT_TRUE(contains(joined, "'loss'")) << joined;
  EXPECT_TRUE(contains(joined, "'grad norm'")) << joined;
}

TEST(FakeCommunicator, ThrowingRankEndsTheOthersWithItsMessageWellBeforeTheDeadline) {
  auto world = FakeWorld::create(3);
  world->inject({1, "step 7", 1, FakeFault::Kind::kThrow});
  const auto start = Clock::now();
  const auto errors = world->run([](Communicator& comm) {
    comm.set_timeout(Seconds(30.0));
    for (int step = 0; step < 10; ++step) {
      torch::Tensor t = torch::ones({4});
      comm.all_reduce(t, ReduceOp::kSum, "loss at step " + std::to_string(step));
    }
  });
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_TRUE(contains(errors[1], "[rank 1/3 fake] injected fault")) << errors[1];
  for (int r : {0, 2}) {
    EXPECT_TRUE(contains(errors[r], "job aborted by [rank 1/3 fake]")) << errors[r];
    EXPECT_TRUE(contains(errors[r], "loss at step 7")) << errors[r];
  }
}

TEST(FakeCommunicator, AbsentRankFiresTheDeadlineNamingTheOperation) {
  auto world = FakeWorld::create(2);
  world->inject({1, "barrier after checkpoint", 1, FakeFault::Kind::kAbsent});
  const auto start = Clock::now();
  std::string timeout_on_rank0;
  const auto errors = world->run([&](Communicator& comm) {
    // Rank 1 (the absent one) waits longer, so rank 0's deadline is the one that fires.
    comm.set_timeout(Seconds(comm.rank() == 0 ? 0.3 : 5.0));
    try {
      comm.barrier("barrier after checkpoint");
    } catch (const CollectiveTimeout& e) {
      if (comm.rank() == 0) timeout_on_rank0 = e.what();
      throw;
    }
  });
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_TRUE(contains(timeout_on_rank0, "[rank 0/2 fake] barrier after checkpoint has not "
                                         "completed after 0.3"))
      << timeout_on_rank0;
  EXPECT_TRUE(contains(timeout_on_rank0, "deadline 0.3 s")) << timeout_on_rank0;
  EXPECT_FALSE(errors[1].empty());
}

TEST(FakeCommunicator, CallerDeadlineOutlastsASlowHealthyRank) {
  // Rank 0 "writes a checkpoint" for 0.4 s before the barrier. The default timeout (0.1 s)
  // would fire; the barrier with its own longer deadline does not.
  auto world = FakeWorld::create(2);
  world->inject({0, "after checkpoint", 1, FakeFault::Kind::kDelay, 0.4});
  expect_all_ok(world->run([](Communicator& comm) {
    comm.set_timeout(Seconds(0.1));
    comm.barrier(Deadline::after(Seconds(5.0)), "barrier after checkpoint");
  }));
}

TEST(FakeCommunicator, AbortWakesPendingWaits) {
  auto world = FakeWorld::create(2);
  const auto start = Clock::now();
  const auto errors = world->run([](Communicator& comm) {
    comm.set_timeout(Seconds(30.0));
    if (comm.rank() == 1) comm.abort("disk full while writing step-00000100");
    comm.barrier("barrier");
  });
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_TRUE(contains(errors[0], "job aborted by [rank 1/2 fake]: disk full")) << errors[0];
  EXPECT_TRUE(contains(errors[1], "disk full")) << errors[1];
}

TEST(FakeCommunicator, VerifySameOnAllRanksNamesBothValues) {
  auto world = FakeWorld::create(3);
  const auto errors = world->run([](Communicator& comm) {
    verify_same_on_all_ranks(comm, {7, comm.rank() == 2 ? 41 : 40}, {"config_version", "dataset_size"},
                             "start-up check");
  });
  for (const std::string& e : errors) {
    EXPECT_TRUE(contains(e, "rank 0 has dataset_size=40, rank 2 has dataset_size=41")) << e;
  }
}

TEST(FakeCommunicator, AllToAllDeliversBlockJOfRankRToRankJAtR) {
  auto world = FakeWorld::create(3);
  expect_all_ok(world->run([](Communicator& comm) {
    const int r = comm.rank();
    for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kLong}) {
      // Block j of rank r holds 10 r + j (twice): rank j receives 10 s + j from each rank s.
      torch::Tensor in = (torch::arange(3, torch::kLong) + 10 * r).repeat_interleave(2).view({3, 2}).to(dtype);
      torch::Tensor out = torch::zeros_like(in);
      comm.all_to_all_async(in, out, "all_to_all")->wait();
      torch::Tensor expected = (torch::arange(3, torch::kLong) * 10 + r).repeat_interleave(2).view({3, 2}).to(dtype);
      EXPECT_TRUE(torch::equal(out, expected)) << dtype << " rank " << r << ": " << out;
    }
  }));
}

TEST(FakeCommunicator, AllToAllShapeErrorsNameBothShapes) {
  auto world = FakeWorld::create(2);
  auto comm = world->communicator(0);
  EXPECT_TRUE(contains(error_of([&] { comm->all_to_all_async(torch::ones({3, 2}), torch::ones({3, 2}), "x"); }),
                       "all_to_all: in has shape [3, 2], expected [world_size = 2, ...] (one block per rank)"));
  EXPECT_TRUE(contains(error_of([&] { comm->all_to_all_async(torch::ones({2, 2}), torch::ones({2, 3}), "x"); }),
                       "all_to_all: out is Float [2, 3], expected in's Float [2, 2]"));
  torch::Tensor t = torch::ones({2, 2});
  EXPECT_TRUE(contains(error_of([&] { comm->all_to_all_async(t, t, "x"); }), "in and out must be different tensors"));
}

TEST(FakeCommunicator, SplitGroupsByColorRanksByKeyAndKeepsTheJobTag) {
  auto world = FakeWorld::create(4);
  std::vector<std::vector<int64_t>> members(4);
  std::vector<std::string> tags(4);
  expect_all_ok(world->run([&](Communicator& comm) {
    const int r = comm.rank();
    // Even and odd ranks, each group ranked by descending world rank (key -r).
    std::unique_ptr<Communicator> part = comm.split(r % 2, -r);
    EXPECT_EQ(part->world_size(), 2);
    EXPECT_EQ(part->rank(), r < 2 ? 1 : 0) << "rank " << r;
    torch::Tensor who = part->all_gather(torch::tensor({static_cast<int64_t>(r)}), "who");
    for (int i = 0; i < 2; ++i) members[r].push_back(who[i][0].item<int64_t>());
    tags[r] = part->tag();
    // A duplicate of a part is still that part, and the parent still works.
    std::unique_ptr<Communicator> dup = part->duplicate();
    torch::Tensor one = torch::ones({1});
    dup->all_reduce(one, ReduceOp::kSum, "sum");
    EXPECT_EQ(one.item<float>(), 2.0f);
    torch::Tensor all = torch::ones({1});
    comm.all_reduce(all, ReduceOp::kSum, "sum");
    EXPECT_EQ(all.item<float>(), 4.0f);
  }));
  EXPECT_EQ(members[0], (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(members[3], (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(tags[3], "[rank 3/4 fake]");  // the job's rank, not the rank in the group
  auto bad = FakeWorld::create(1)->communicator(0);
  EXPECT_TRUE(contains(error_of([&] { bad->split(-1, 0); }), "split: color -1 must be >= 0"));
}

TEST(FakeCommunicator, SplitHostGroupsTheRanksOfEachSimulatedHost) {
  auto world = FakeWorld::create(4, {"a", "b", "a", "b"});
  std::vector<std::vector<int64_t>> members(4);
  expect_all_ok(world->run([&](Communicator& comm) {
    EXPECT_EQ(comm.host(), comm.rank() % 2 ? "b" : "a");
    std::unique_ptr<Communicator> host = comm.split_host();
    torch::Tensor who = host->all_gather(torch::tensor({static_cast<int64_t>(comm.rank())}), "who");
    for (int i = 0; i < host->world_size(); ++i) members[comm.rank()].push_back(who[i][0].item<int64_t>());
  }));
  EXPECT_EQ(members[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(members[2], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(members[1], (std::vector<int64_t>{1, 3}));
}

TEST(FakeCommunicator, BoolSumIsRejected) {
  auto world = FakeWorld::create(1);
  auto comm = world->communicator(0);
  EXPECT_THROW(comm->all_reduce(torch::ones({2}, torch::kBool), ReduceOp::kSum), c10::Error);
  torch::Tensor flags = torch::tensor({true, false});
  comm->all_reduce(flags, ReduceOp::kMax);
  EXPECT_TRUE(flags[0].item<bool>());
}

}  // namespace
}  // namespace lf::dist
