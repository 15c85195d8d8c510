// The Reducer under mpirun -np 2 on a small f64 torch::nn::Sequential: each rank computes half
// of a known batch; after sync every rank holds the full-batch gradient (to 1e-12) in grads
// that are views of the buckets, with and without overlap, with 2 micro-batches that sync
// only on the last; summing instead of averaging is caught.
#include <gtest/gtest.h>

#include "distributed/agreement.h"
#include "distributed/reducer.h"
#include "tests/distributed/reducer_fixture.h"
#include "tests/mpi/mpi_test_main.h"

namespace lf::dist {
namespace {

using testkit::CountingCommunicator;
using testkit::compare_gradients;
using testkit::full_batch_gradients;
using testkit::gradients_of;
using testkit::grads_are_bucket_views;
using testkit::loss_on;
using testkit::make_model;
using testkit::test_world;
using testkit::zero_grads;

constexpr uint64_t kSeed = 100;
constexpr double kSmallBucketMB = 1000.0 / (1024.0 * 1024.0);  // two buckets

// Rows of rank r of W in a batch of `batch`: [r B/W, (r+1) B/W).
std::pair<int64_t, int64_t> my_rows(const Communicator& comm, int64_t batch) {
  const int64_t per = batch / comm.world_size();
  return {comm.rank() * per, (comm.rank() + 1) * per};
}

class MPIReducer : public ::testing::TestWithParam<bool> {};

TEST_P(MPIReducer, AveragedHalfBatchesEqualTheFullBatch) {
  auto comm = test_world();
  const int64_t batch = 4 * comm->world_size();
  auto reference = full_batch_gradients(kSeed, batch);
  // Each rank starts from its own weights; the Reducer broadcasts rank 0's (seed kSeed).
  torch::nn::Sequential model = make_model(kSeed + comm->rank());
  ReducerOptions options;
  options.overlap = GetParam();
  options.bucket_mb = kSmallBucketMB;
  options.timeout_s = 60;
  Reducer reducer(model->parameters(), model->buffers(), *comm, options);
  ASSERT_EQ(reducer.plan().buckets.size(), 2u);
  const auto hashes = gather_values(*comm, {static_cast<int64_t>(reducer.plan().hash())}, "plan");
  for (const auto& h : hashes) EXPECT_EQ(h[0], hashes[0][0]);
  for (int step = 0; step < 3; ++step) {
    zero_grads(model->parameters());
    const auto [begin, end] = my_rows(*comm, batch);
    loss_on(model, begin, end).backward();
    reducer.finish_backward();
    EXPECT_EQ(compare_gradients(gradients_of(model), reference, 1e-12), "") << "step " << step;
    EXPECT_EQ(grads_are_bucket_views(reducer, model->parameters()), "") << "step " << step;
  }
  EXPECT_EQ(reducer.stats().grads_repointed, 0);
  EXPECT_EQ(reducer.stats().sync_steps, 3);
  EXPECT_EQ(reducer.stats().bucket_all_reduces, 6);
}

TEST_P(MPIReducer, TwoMicroBatchesSyncOnlyOnTheLast) {
  auto comm = test_world();
  const int64_t batch = 4 * comm->world_size();
  auto reference = full_batch_gradients(kSeed, batch);
  torch::nn::Sequential model = make_model(kSeed + comm->rank());
  auto count = std::make_shared<std::atomic<int64_t>>(0);
  CountingCommunicator counting(*comm, count);
  ReducerOptions options;
  options.overlap = GetParam();
  options.bucket_mb = kSmallBucketMB;
  options.timeout_s = 60;
  Reducer reducer(model->parameters(), {}, counting, options);
  const auto [begin, end] = my_rows(*comm, batch);
  const int64_t mid = (begin + end) / 2;
  {
    NoSync no_sync(reducer);
    loss_on(model, begin, mid, 0.5).backward();
    reducer.finish_backward();
  }
  EXPECT_EQ(count->load(), 0) << "an all-reduce was issued on the first micro-batch";
  loss_on(model, mid, end, 0.5).backward();
  reducer.finish_backward();
  EXPECT_EQ(count->load(), static_cast<int64_t>(reducer.plan().buckets.size()));
  EXPECT_EQ(compare_gradients(gradients_of(model), reference, 1e-12), "");
}

INSTANTIATE_TEST_SUITE_P(Overlap, MPIReducer, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST(MPIReducerControl, SummedNotAveragedDiffers) {
  auto comm = test_world();
  if (comm->world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int64_t batch = 4 * comm->world_size();
  auto reference = full_batch_gradients(kSeed, batch);
  torch::nn::Sequential model = make_model(kSeed + comm->rank());
  ReducerOptions options;
  options.reduction = GradReduction::kSum;
  Reducer reducer(model->parameters(), {}, *comm, options);
  const auto [begin, end] = my_rows(*comm, batch);
  loss_on(model, begin, end).backward();
  reducer.finish_backward();
  EXPECT_NE(compare_gradients(gradients_of(model), reference, 1e-12), "");
  std::vector<torch::Tensor> scaled;
  for (const auto& g : reference) scaled.push_back(g * comm->world_size());
  EXPECT_EQ(compare_gradients(gradients_of(model), scaled, 1e-12), "");
}

TEST(MPIReducerControl, UnusedParameterOnOneRankIsZeroThere) {
  auto comm = test_world();
  std::vector<torch::Tensor> params{torch::full({4}, 1.0, torch::kDouble).requires_grad_(),
                                    torch::full({4}, 2.0, torch::kDouble).requires_grad_()};
  ReducerOptions options;
  options.bucket_mb = 40.0 / (1024 * 1024);  // one parameter per bucket
  Reducer reducer(params, {}, *comm, options);
  torch::Tensor loss = params[0].sum() * (comm->rank() + 1);
  if (comm->rank() == 0) loss = loss + (params[1] * 3).sum();  // rank 1 never touches params[1]
  loss.backward();
  reducer.finish_backward();
  const double w = comm->world_size();
  EXPECT_TRUE(torch::allclose(params[0].grad(), torch::full({4}, (w + 1) / 2, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(params[1].grad(), torch::full({4}, 3.0 / w, torch::kDouble)))
      << params[1].grad();
}

}  // namespace
}  // namespace lf::dist
