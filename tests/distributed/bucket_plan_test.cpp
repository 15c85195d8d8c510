// Bucket plans: reverse registration order, per-(dtype, device) grouping, the byte cap, and
// the same plan on every simulated rank.
#include "distributed/bucket_plan.h"

#include <gtest/gtest.h>

#include <set>

namespace lf::dist {
namespace {

ParamSpec f32(std::vector<int64_t> shape) { return ParamSpec{torch::kFloat, torch::kCPU, shape}; }
ParamSpec f64(std::vector<int64_t> shape) { return ParamSpec{torch::kDouble, torch::kCPU, shape}; }

std::vector<std::vector<int64_t>> params_of(const BucketPlan& plan) {
  std::vector<std::vector<int64_t>> out;
  for (const Bucket& b : plan.buckets) out.push_back(b.params);
  return out;
}

TEST(BucketPlan, ReverseOrderUnderCap) {
  // Numels 10, 20, 30, 40 (f32) with a 200-byte cap: from the last, 40+30 = 280 B closes the
  // first bucket, 20+10 = 120 B is left open and closed at the end.
  const BucketPlan plan = plan_buckets({f32({10}), f32({4, 5}), f32({30}), f32({40})}, 200);
  EXPECT_EQ(params_of(plan), (std::vector<std::vector<int64_t>>{{3, 2}, {1, 0}}));
  EXPECT_EQ(plan.buckets[0].offsets, (std::vector<int64_t>{0, 40}));
  EXPECT_EQ(plan.buckets[0].numel, 70);
  EXPECT_EQ(plan.buckets[1].bytes(), 120);
  EXPECT_EQ(plan.location[2], (std::pair<int64_t, int64_t>{0, 1}));
  EXPECT_EQ(plan.location[0], (std::pair<int64_t, int64_t>{1, 1}));
}

TEST(BucketPlan, LargeParameterGetsItsOwnBucket) {
  const BucketPlan plan = plan_buckets({f32({8}), f32({1000}), f32({8})}, 64);
  EXPECT_EQ(params_of(plan), (std::vector<std::vector<int64_t>>{{2, 1}, {0}}));
  const BucketPlan alone = plan_buckets({f32({8}), f32({1000}), f32({8})}, 16);
  EXPECT_EQ(params_of(alone), (std::vector<std::vector<int64_t>>{{2}, {1}, {0}}));
}

TEST(BucketPlan, GroupsByDtypeAndNumbersByFirstReadyParameter) {
  // Reverse order: 4 (f64), 3 (f32), 2 (f64), 1 (f32), 0 (f64); everything fits one bucket per
  // dtype, so the f64 bucket (first param 4) comes before the f32 one (first param 3).
  const BucketPlan plan =
      plan_buckets({f64({2}), f32({2}), f64({2}), f32({2}), f64({2})}, 1 << 20);
  ASSERT_EQ(plan.buckets.size(), 2u);
  EXPECT_EQ(plan.buckets[0].dtype, torch::kDouble);
  EXPECT_EQ(plan.buckets[0].params, (std::vector<int64_t>{4, 2, 0}));
  EXPECT_EQ(plan.buckets[1].dtype, torch::kFloat);
  EXPECT_EQ(plan.buckets[1].params, (std::vector<int64_t>{3, 1}));
}

TEST(BucketPlan, EveryParameterExactlyOnceWithContiguousOffsets) {
  std::vector<ParamSpec> specs;
  for (int i = 0; i < 37; ++i) specs.push_back(i % 5 == 0 ? f64({i + 1, 3}) : f32({2 * i + 1}));
  const int64_t cap = 256;
  const BucketPlan plan = plan_buckets(specs, cap);
  std::set<int64_t> seen;
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    const Bucket& bucket = plan.buckets[b];
    int64_t offset = 0;
    for (size_t s = 0; s < bucket.params.size(); ++s) {
      const int64_t p = bucket.params[s];
      EXPECT_TRUE(seen.insert(p).second) << "parameter " << p << " twice";
      EXPECT_EQ(bucket.offsets[s], offset);
      EXPECT_EQ(specs[p].dtype, bucket.dtype);
      EXPECT_EQ(plan.location[p], (std::pair<int64_t, int64_t>{static_cast<int64_t>(b),
                                                                static_cast<int64_t>(s)}));
      offset += specs[p].numel();
    }
    EXPECT_EQ(offset, bucket.numel);
    // Under the cap, except that the last parameter added may push it over.
    const int64_t last = specs[bucket.params.back()].numel() * int64_t(c10::elementSize(bucket.dtype));
    EXPECT_LT(bucket.bytes() - last, cap) << "bucket " << b;
  }
  EXPECT_EQ(seen.size(), specs.size());
}

TEST(BucketPlan, SameOnEverySimulatedRank) {
  // Each rank builds its own model (different initial values): plans depend only on the specs.
  std::vector<BucketPlan> plans;
  for (int rank = 0; rank < 4; ++rank) {
    torch::manual_seed(rank);
    torch::nn::Sequential model(torch::nn::Linear(16, 32), torch::nn::ReLU(),
                                torch::nn::Linear(32, 32), torch::nn::Linear(32, 4));
    std::vector<ParamSpec> specs;
    for (const auto& p : model->parameters()) specs.push_back(ParamSpec::of(p));
    plans.push_back(plan_buckets(specs, 2048));
  }
  for (int rank = 1; rank < 4; ++rank) {
    EXPECT_EQ(plans[rank].hash(), plans[0].hash());
    EXPECT_EQ(params_of(plans[rank]), params_of(plans[0]));
    EXPECT_EQ(plans[rank].describe(), plans[0].describe());
  }
  EXPECT_GT(plans[0].buckets.size(), 1u);
}

TEST(BucketPlan, HashesSeeShapesAndCaps) {
  const std::vector<ParamSpec> a{f32({2, 3}), f32({4})};
  const std::vector<ParamSpec> b{f32({3, 2}), f32({4})};
  EXPECT_NE(shapes_hash(a), shapes_hash(b));  // same numel, different shape
  EXPECT_EQ(plan_buckets(a, 1000).hash(), plan_buckets(b, 1000).hash());  // same layout
  EXPECT_NE(plan_buckets(a, 1000).hash(), plan_buckets(a, 8).hash());
  EXPECT_NE(shapes_hash(a), shapes_hash({f64({2, 3}), f32({4})}));
}

TEST(BucketPlan, RejectsNonPositiveCap) {
  EXPECT_THROW(plan_buckets({f32({1})}, 0), std::invalid_argument);
}

}  // namespace
}  // namespace lf::dist
