// The pieces of hierarchical and bf16 gradient sync on real MPI (mpirun -np 2, one host):
// all_to_all, split, split_host (MPI_COMM_TYPE_SHARED), and BucketSync's flat bf16 and
// hierarchical sums against the order they document, the same on every rank; the Reducer
// with bf16 on the wire close to the full-batch gradient and repeatable. (Two hosts for real:
// tests/e2e/multinode_grad_sync.sh.)
#include <gtest/gtest.h>

#include <cmath>

#include "distributed/agreement.h"
#include "distributed/bucket_sync.h"
#include "distributed/reducer.h"
#include "tests/distributed/reducer_fixture.h"
#include "tests/mpi/mpi_test_main.h"

namespace lf::dist {
namespace {

using testkit::test_world;

TEST(MPIBucketSync, AllToAllDeliversEachRanksBlock) {
  auto comm = test_world();
  const int r = comm->rank();
  const int w = comm->world_size();
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kDouble}) {
    torch::Tensor in = (torch::arange(w, torch::kLong) + 100 * r).repeat_interleave(5).view({w, 5}).to(dtype);
    torch::Tensor out = torch::zeros_like(in);
    comm->all_to_all_async(in, out, "all_to_all")->wait();
    torch::Tensor expected = (torch::arange(w, torch::kLong) * 100 + r).repeat_interleave(5).view({w, 5}).to(dtype);
    EXPECT_TRUE(torch::equal(out, expected)) << dtype << ": " << out;
  }
}

TEST(MPIBucketSync, SplitAndSplitHost) {
  auto comm = test_world();
  const int r = comm->rank();
  // Each rank alone (color = rank): a world of one that still tags with the job's rank.
  std::unique_ptr<Communicator> alone = comm->split(r, 0);
  EXPECT_EQ(alone->world_size(), 1);
  EXPECT_EQ(alone->tag(), comm->tag());
  // All on one host under mpirun on this machine.
  std::unique_ptr<Communicator> host = comm->split_host();
  EXPECT_EQ(host->world_size(), comm->world_size());
  EXPECT_EQ(host->rank(), r);
  HostGroups groups(*comm);
  EXPECT_EQ(groups.topology().describe(), lf::str("1 host x ", comm->world_size(), comm->world_size() == 1 ? " rank" : " ranks"));
  EXPECT_EQ(groups.inter().world_size(), 1);
}

// Rank r's contribution, every mantissa bit in play.
torch::Tensor contribution(int rank, int64_t n) {
  return (torch::sin(torch::arange(n, torch::kDouble) * 0.7311 + rank * 1.37) * (1 + 0.173 * rank) * 3.3)
      .to(torch::kFloat);
}

TEST(MPIBucketSync, FlatBF16AndHierarchicalSumInTheDocumentedOrder) {
  auto comm = test_world();
  const int w = comm->world_size();
  constexpr int64_t n = 100003;  // not a multiple of the world size: padding in play
  for (auto [algorithm, wire] : {std::pair{AllReduceAlgorithm::kFlat, GradWire::kBF16},
                                 std::pair{AllReduceAlgorithm::kHierarchical, GradWire::kF32},
                                 std::pair{AllReduceAlgorithm::kHierarchical, GradWire::kBF16}}) {
    BucketSync sync(*comm, algorithm, wire);
    torch::Tensor buffer = torch::zeros({sync.padded_numel(n)});
    buffer.narrow(0, 0, n).copy_(contribution(comm->rank(), n));
    sync.add_bucket(buffer, n, "bucket 1/1");
    sync.all_reduce(0, "all_reduce of bucket 1/1")->wait();
    // Flat bf16: rank terms rounded to bf16, summed in rank order in f32, rounded. On one host
    // hierarchical has no bf16 hop: the f32 sum in rank order.
    const bool bf16 = algorithm == AllReduceAlgorithm::kFlat;
    auto term = [&](int r) { return bf16 ? contribution(r, n).to(torch::kBFloat16).to(torch::kFloat) : contribution(r, n); };
    torch::Tensor expected = term(0);
    for (int r = 1; r < w; ++r) expected = expected + term(r);
    if (bf16) expected = expected.to(torch::kBFloat16).to(torch::kFloat);
    const std::string label = sync.name();
    EXPECT_TRUE(torch::equal(buffer.narrow(0, 0, n), expected))
        << label << ": max abs difference " << (buffer.narrow(0, 0, n) - expected).abs().max().item<double>();
    // The same bits on every rank.
    torch::Tensor all = comm->all_gather(buffer.narrow(0, 0, n).contiguous(), "results");
    for (int r = 1; r < w; ++r) EXPECT_TRUE(torch::equal(all[r], all[0])) << label << " rank " << r;
  }
}

TEST(MPIBucketSync, ReducerWithBF16WireIsCloseAndRepeatable) {
  auto comm = test_world();
  const int w = comm->world_size();
  const int64_t batch = 4 * w;
  const auto reference = testkit::full_batch_gradients(100, batch);
  double scale = 0;
  for (const auto& g : reference) scale = std::max(scale, g.abs().max().item<double>());
  std::vector<std::vector<torch::Tensor>> runs;
  for (int run = 0; run < 2; ++run) {
    torch::nn::Sequential model = testkit::make_model(100 + comm->rank());
    ReducerOptions options;
    options.bucket_mb = 1000.0 / (1024.0 * 1024.0);
    options.wire = GradWire::kBF16;
    options.timeout_s = 60;
    Reducer reducer(model->parameters(), {}, *comm, options);
    testkit::loss_on(model, comm->rank() * 4, comm->rank() * 4 + 4).backward();
    reducer.finish_backward();
    runs.push_back(testkit::gradients_of(model));
    EXPECT_EQ(testkit::compare_gradients(runs.back(), reference, scale * std::ldexp(1.0, -7)), "");
    if (w > 1) {
      EXPECT_NE(testkit::compare_gradients(runs.back(), reference, 1e-12), "") << "bf16 not on the wire?";
    }
  }
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_TRUE(torch::equal(runs[0][i], runs[1][i])) << "param " << i;
}

}  // namespace
}  // namespace lf::dist
