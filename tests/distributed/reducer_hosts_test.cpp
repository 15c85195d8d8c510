// The Reducer on simulated hosts (the fake communicator with host names, 2 hosts x 2 ranks):
// hierarchical (chosen by auto) and flat both give the full-batch gradient in f64; bf16 on the
// wire stays within its rounding, the same on every rank and run; a stuck phase times out
// naming the algorithm, the bucket, the step and the phase.
#include "tests/test_util.h"
#include "distributed/reducer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "distributed/fake_communicator.h"
#include "tests/distributed/reducer_fixture.h"

namespace lf::dist {
namespace {

using lf::testing::contains;
using testkit::compare_gradients;
using testkit::full_batch_gradients;
using testkit::gradients_of;
using testkit::grads_are_bucket_views;
using testkit::loss_on;
using testkit::make_model;
using testkit::zero_grads;

constexpr int64_t kBatch = 8;
constexpr uint64_t kSeed = 100;
constexpr double kSmallBucketMB = 1000.0 / (1024.0 * 1024.0);  // two buckets

std::vector<torch::nn::Sequential> models_per_rank(int world) {
  std::vector<torch::nn::Sequential> models;
  for (int r = 0; r < world; ++r) models.push_back(make_model(kSeed + r));
  return models;
}

// Each rank a quarter of the batch.
struct FourRankRun {
  std::vector<std::vector<torch::Tensor>> grads;  // [rank][param], after the last step
  std::vector<std::string> errors, not_views;
  std::vector<AllReduceAlgorithm> algorithm;
};

FourRankRun run_four_ranks(AllReduceAlgorithm algorithm, GradWire wire, bool overlap,
                           std::vector<std::string> hosts = {"a", "a", "b", "b"}) {
  auto models = models_per_rank(4);
  FourRankRun out;
  out.grads.resize(4);
  out.not_views.resize(4);
  out.algorithm.resize(4);
  auto world = FakeWorld::create(4, std::move(hosts));
  out.errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.overlap = overlap;
    options.bucket_mb = kSmallBucketMB;
    options.algorithm = algorithm;
    options.wire = wire;
    Reducer reducer(models[r]->parameters(), models[r]->buffers(), comm, options);
    out.algorithm[r] = reducer.sync_transport().algorithm();
    for (int step = 0; step < 2; ++step) {
      zero_grads(models[r]->parameters());
      loss_on(models[r], r * 2, r * 2 + 2).backward();
      reducer.finish_backward();
      out.not_views[r] += grads_are_bucket_views(reducer, models[r]->parameters());
    }
    out.grads[r] = gradients_of(models[r]);
  });
  return out;
}

class ReducerAcrossHosts : public ::testing::TestWithParam<bool> {};

TEST_P(ReducerAcrossHosts, HierarchicalAndFlatGiveTheFullBatchGradientInF64) {
  const auto reference = full_batch_gradients(kSeed, kBatch);
  for (auto algorithm : {AllReduceAlgorithm::kAuto, AllReduceAlgorithm::kFlat}) {
    const FourRankRun run = run_four_ranks(algorithm, GradWire::kF32, GetParam());
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(run.errors[r], "") << "rank " << r;
      EXPECT_EQ(run.not_views[r], "") << "rank " << r;
      EXPECT_EQ(compare_gradients(run.grads[r], reference, 1e-12), "") << to_string(algorithm) << " rank " << r;
      EXPECT_EQ(run.algorithm[r], algorithm == AllReduceAlgorithm::kAuto ? AllReduceAlgorithm::kHierarchical
                                                                         : AllReduceAlgorithm::kFlat);
    }
  }
}

TEST_P(ReducerAcrossHosts, BF16WireIsCloseSameOnEveryRankAndRepeatable) {
  const auto reference = full_batch_gradients(kSeed, kBatch);
  double scale = 0;
  for (const auto& g : reference) scale = std::max(scale, g.abs().max().item<double>());
  for (auto algorithm : {AllReduceAlgorithm::kHierarchical, AllReduceAlgorithm::kFlat}) {
    const FourRankRun a = run_four_ranks(algorithm, GradWire::kBF16, GetParam());
    const FourRankRun b = run_four_ranks(algorithm, GradWire::kBF16, GetParam());
    // f64 buckets: bf16 on the wire (relative error 2^-9 per rounding, two or three roundings
    // of values up to the largest per-rank gradient), f64 sums.
    EXPECT_EQ(compare_gradients(a.grads[0], reference, scale * std::ldexp(1.0, -6)), "") << to_string(algorithm);
    EXPECT_NE(compare_gradients(a.grads[0], reference, 1e-12), "") << "bf16 gave the f64 result: not on the wire?";
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(a.errors[r], "") << "rank " << r;
      for (size_t i = 0; i < a.grads[r].size(); ++i) {
        EXPECT_TRUE(torch::equal(a.grads[r][i], a.grads[0][i])) << "rank " << r << " param " << i;
        EXPECT_TRUE(torch::equal(a.grads[r][i], b.grads[r][i])) << "run to run, rank " << r << " param " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Overlap, ReducerAcrossHosts, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST(Reducer, HierarchicalTimeoutNamesTheAlgorithmBucketStepAndPhase) {
  auto models = models_per_rank(4);
  auto world = FakeWorld::create(4, {"a", "a", "b", "b"});
  world->inject({2, "inter-host reduce-scatter", 1, FakeFault::Kind::kAbsent});
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.bucket_mb = kSmallBucketMB;
    options.algorithm = AllReduceAlgorithm::kHierarchical;
    options.wire = GradWire::kBF16;
    options.timeout_s = r == 0 ? 0.5 : 10.0;
    Reducer reducer(models[r]->parameters(), {}, comm, options);
    reducer.set_step(41);
    loss_on(models[r], r * 2, r * 2 + 2).backward();
    reducer.finish_backward();
  });
  EXPECT_TRUE(contains(errors[0], "[rank 0/4 a] hierarchical all_reduce (bf16 wire) of bucket 1/2, ")) << errors[0];
  EXPECT_TRUE(contains(errors[0], ", step 41 (at phase 2/4, inter-host reduce-scatter (all_to_all over 2 hosts, bf16)) "
                                  "has not completed after 0.")) << errors[0];
}

}  // namespace
}  // namespace lf::dist
