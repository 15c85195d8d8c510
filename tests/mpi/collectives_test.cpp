// MPICommunicator under mpirun -np 2: all-reduce with inputs filled from the rank (sums known),
// broadcast, all-gather, barrier, deadlines, agreement helpers, the check macro's MPI text.
#include <gtest/gtest.h>

#include <thread>

#include "tests/test_util.h"
#include "distributed/agreement.h"
#include "distributed/check.h"
#include "distributed/mpi_runtime.h"
#include "tests/mpi/mpi_test_main.h"

namespace lf::dist {
namespace {

using testkit::test_world;

using lf::testing::contains;

// Sum over ranks r of (r + 1) = W (W + 1) / 2.
double rank_sum(int world) { return world * (world + 1) / 2.0; }

TEST(MPICollectives, AllReduceSumOfRankFilledInputsPerDtype) {
  auto comm = test_world();
  const int r = comm->rank();
  const int w = comm->world_size();
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt, torch::kByte,
                     torch::kHalf, torch::kBFloat16}) {
    torch::Tensor t = (torch::arange(1, 33, torch::kDouble) * (r + 1)).to(dtype);
    comm->all_reduce(t, ReduceOp::kSum, "sum");
    torch::Tensor expected = (torch::arange(1, 33, torch::kDouble) * rank_sum(w)).to(dtype);
    EXPECT_TRUE(torch::equal(t, expected)) << dtype << ": got " << t << " expected " << expected;
  }
}

TEST(MPICollectives, AllReduceMaxMinAndFlags) {
  auto comm = test_world();
  const int r = comm->rank();
  const int w = comm->world_size();
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kLong}) {
    torch::Tensor hi = torch::tensor({double(r), -double(r)}).to(dtype);
    torch::Tensor lo = hi.clone();
    comm->all_reduce(hi, ReduceOp::kMax, "max");
    comm->all_reduce(lo, ReduceOp::kMin, "min");
    EXPECT_EQ(hi[0].item<double>(), w - 1) << dtype;
    EXPECT_EQ(hi[1].item<double>(), 0) << dtype;
    EXPECT_EQ(lo[0].item<double>(), 0) << dtype;
    EXPECT_EQ(lo[1].item<double>(), -(w - 1)) << dtype;
  }
  torch::Tensor flags = torch::tensor({r == 1, false, true});
  comm->all_reduce(flags, ReduceOp::kMax, "flags");
  EXPECT_TRUE(torch::equal(flags, torch::tensor({w > 1, false, true})));
  EXPECT_EQ(any_rank(*comm, r == w - 1, "stop flag at step 41"), true);
  EXPECT_EQ(any_rank(*comm, false, "stop flag at step 42"), false);
  EXPECT_THROW(comm->all_reduce(torch::ones({2}, torch::kBool), ReduceOp::kSum), std::invalid_argument);
}

TEST(MPICollectives, LargeAllReduceNonBlockingPair) {
  auto comm = test_world();
  const int r = comm->rank();
  torch::Tensor a = torch::full({1 << 20}, float(r + 1));
  torch::Tensor b = torch::full({1000}, double(r + 1) / 3.0, torch::kDouble);
  auto wa = comm->all_reduce_async(a, ReduceOp::kSum, "a");
  auto wb = comm->all_reduce_async(b, ReduceOp::kSum, "b");
  wb->wait();
  wa->wait();
  const double w = comm->world_size();
  EXPECT_TRUE(torch::equal(a, torch::full({1 << 20}, float(rank_sum(int(w))))));
  EXPECT_LT((b - rank_sum(int(w)) / 3.0).abs().max().item<double>(), 1e-15);
}

TEST(MPICollectives, BroadcastFromEveryRoot) {
  auto comm = test_world();
  for (int root = 0; root < comm->world_size(); ++root) {
    torch::Tensor t = torch::full({3, 5}, double(comm->rank() * 100 + 7), torch::kDouble);
    comm->broadcast(t, root, "broadcast");
    EXPECT_TRUE(torch::equal(t, torch::full({3, 5}, double(root * 100 + 7), torch::kDouble)))
        << "root " << root;
  }
  EXPECT_THROW(comm->broadcast(torch::ones({1}), comm->world_size()), c10::Error);
}

TEST(MPICollectives, AllGatherRows) {
  auto comm = test_world();
  const int r = comm->rank();
  torch::Tensor g = comm->all_gather(torch::tensor({r, 10 * r, 100 * r}, torch::kLong), "gather");
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{int64_t(comm->world_size()), 3}));
  for (int k = 0; k < comm->world_size(); ++k)
    EXPECT_TRUE(torch::equal(g[k], torch::tensor({k, 10 * k, 100 * k}, torch::kLong))) << g;
  torch::Tensor h = comm->all_gather(torch::full({2}, r + 0.5, torch::kHalf), "gather f16");
  EXPECT_EQ(h[comm->world_size() - 1][1].item<float>(), comm->world_size() - 0.5f);
}

TEST(MPICollectives, BarrierAndTheCallersDeadline) {
  auto comm = test_world();
  comm->barrier("barrier");
  // Rank 0 arrives 0.5 s after the others ("writing a checkpoint"): a 0.1 s deadline fires on
  // the waiting ranks, naming the operation; a 10 s caller deadline does not.
  if (comm->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  if (comm->rank() != 0) {
    try {
      comm->barrier(Deadline::after(Seconds(0.1)), "barrier after checkpoint step-00000041");
      ADD_FAILURE() << "the 0.1 s deadline should have fired";
    } catch (const CollectiveTimeout& e) {
      EXPECT_TRUE(contains(e.what(), comm->tag() + " barrier after checkpoint step-00000041 has "
                                                   "not completed after 0.1"))
          << e.what();
    }
    // The abandoned barrier still matches rank 0's; the ranks stay in step.
  } else {
    comm->barrier(Deadline::after(Seconds(10)), "barrier after checkpoint step-00000041");
  }
  comm->barrier(Deadline::after(Seconds(10)), "barrier after the late one");
  torch::Tensor t = torch::ones({1});
  comm->all_reduce(t);
  EXPECT_EQ(t.item<float>(), comm->world_size());
}

TEST(MPICollectives, DuplicatesDoNotMatchEachOther) {
  auto comm = test_world();
  auto dup = comm->duplicate();
  torch::Tensor a = torch::ones({3});
  torch::Tensor b = torch::ones({7});
  std::shared_ptr<Work> wa, wb;
  if (comm->rank() == 0) {
    wb = dup->all_reduce_async(b, ReduceOp::kSum, "b");
    wa = comm->all_reduce_async(a, ReduceOp::kSum, "a");
  } else {
    wa = comm->all_reduce_async(a, ReduceOp::kSum, "a");
    wb = dup->all_reduce_async(b, ReduceOp::kSum, "b");
  }
  wa->wait();
  wb->wait();
  EXPECT_TRUE(torch::equal(a, torch::full({3}, float(comm->world_size()))));
  EXPECT_TRUE(torch::equal(b, torch::full({7}, float(comm->world_size()))));
}

TEST(MPICollectives, VerifySameOnAllRanksNamesBothValues) {
  auto comm = test_world();
  EXPECT_NO_THROW(verify_same_on_all_ranks(*comm, {1, 2}, {"a", "b"}, "check"));
  try {
    verify_same_on_all_ranks(*comm, {1, comm->rank() == 1 ? 0x2a : 0x29}, {"a", "config_hash"},
                             "config check", /*hex=*/true);
    if (comm->world_size() > 1) ADD_FAILURE() << "expected a mismatch";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "rank 0 has config_hash=0000000000000029, rank 1 has "
                                   "config_hash=000000000000002a"))
        << e.what();
  }
}

TEST(MPICollectives, CheckMacroCarriesOpenMPIsText) {
  int rank = -1;
  try {
    LF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_NULL, &rank));
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "MPI call `MPI_Comm_rank(MPI_COMM_NULL, &rank)` failed")) << e.what();
    EXPECT_TRUE(contains(e.what(), "MPI_ERR_COMM")) << e.what();
    EXPECT_TRUE(contains(e.what(), "[rank ")) << e.what();
  }
}

TEST(MPICollectives, RuntimeGrantedMultipleThreads) {
  // test_mpi asks MPIRuntime for MPI_THREAD_MULTIPLE; Open MPI 4.1 here provides it.
  int provided = 0;
  MPI_Query_thread(&provided);
  EXPECT_EQ(provided, MPI_THREAD_MULTIPLE);
}

}  // namespace
}  // namespace lf::dist
