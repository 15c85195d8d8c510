// The Reducer on ranks simulated by threads (the fake communicator): averaged half-batch
// gradients equal the full-batch gradient in f64, param.grad() are views of the buckets (also
// after grads were reset to undefined), accumulation syncs once, unused parameters do not
// hang, plan mismatches and absent or failing ranks end every rank with a named error.
#include "tests/test_util.h"
#include "distributed/reducer.h"

#include <gtest/gtest.h>

#include "core/util/strings.h"
#include "distributed/fake_communicator.h"
#include "tests/distributed/reducer_fixture.h"

namespace lf::dist {
namespace {

using testkit::CountingCommunicator;
using testkit::compare_gradients;
using testkit::full_batch_gradients;
using testkit::gradients_of;
using testkit::grads_are_bucket_views;
using testkit::loss_on;
using testkit::make_model;
using testkit::zero_grads;

constexpr int64_t kBatch = 8;
constexpr uint64_t kSeed = 100;
// ~1 KB: the test model's 3.2 KB of f64 parameters make two buckets.
constexpr double kSmallBucketMB = 1000.0 / (1024.0 * 1024.0);

using lf::testing::contains;

// One model per rank, each with its own initial values (rank 0's are the reference).
std::vector<torch::nn::Sequential> models_per_rank(int world) {
  std::vector<torch::nn::Sequential> models;
  for (int r = 0; r < world; ++r) models.push_back(make_model(kSeed + r));
  return models;
}

class ReducerMatchesFullBatch : public ::testing::TestWithParam<bool> {};

TEST_P(ReducerMatchesFullBatch, InF64To1e12) {
  const bool overlap = GetParam();
  const auto reference = full_batch_gradients(kSeed, kBatch);
  auto models = models_per_rank(2);
  std::vector<std::string> mismatch(2), not_views(2);
  std::vector<int64_t> repointed(2, -1);
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.overlap = overlap;
    options.bucket_mb = kSmallBucketMB;
    Reducer reducer(models[r]->parameters(), models[r]->buffers(), comm, options);
    EXPECT_EQ(reducer.plan().buckets.size(), 2u);
    not_views[r] += grads_are_bucket_views(reducer, models[r]->parameters());
    for (int step = 0; step < 2; ++step) {  // twice: state resets between steps
      zero_grads(models[r]->parameters());
      const int64_t half = kBatch / 2;
      loss_on(models[r], r * half, (r + 1) * half).backward();
      reducer.finish_backward();
      mismatch[r] += compare_gradients(gradients_of(models[r]), reference, 1e-12);
      not_views[r] += grads_are_bucket_views(reducer, models[r]->parameters());
    }
    EXPECT_EQ(reducer.stats().sync_steps, 2);
    EXPECT_EQ(reducer.stats().bucket_all_reduces, 4);
    repointed[r] = reducer.stats().grads_repointed;
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(mismatch[r], "") << "rank " << r;
    EXPECT_EQ(not_views[r], "") << "rank " << r;
    EXPECT_EQ(repointed[r], 0) << "rank " << r << ": zeroed in place, nothing to re-point";
  }
  // Broadcast from rank 0: rank 1 now holds rank 0's weights.
  const auto p0 = models[0]->parameters();
  const auto p1 = models[1]->parameters();
  for (size_t i = 0; i < p0.size(); ++i) EXPECT_TRUE(torch::equal(p0[i], p1[i])) << i;
}

INSTANTIATE_TEST_SUITE_P(Overlap, ReducerMatchesFullBatch, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST(Reducer, SummedNotAveragedDiffers) {
  // Negative control: without the 1/world scale the gradients are twice the full-batch ones.
  const auto reference = full_batch_gradients(kSeed, kBatch);
  auto models = models_per_rank(2);
  std::vector<std::string> vs_reference(2), vs_double(2);
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.reduction = GradReduction::kSum;
    Reducer reducer(models[r]->parameters(), {}, comm, options);
    loss_on(models[r], r * 4, r * 4 + 4).backward();
    reducer.finish_backward();
    std::vector<torch::Tensor> doubled;
    for (const auto& g : reference) doubled.push_back(g * 2);
    vs_reference[r] = compare_gradients(gradients_of(models[r]), reference, 1e-12);
    vs_double[r] = compare_gradients(gradients_of(models[r]), doubled, 1e-12);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "");
    EXPECT_NE(vs_reference[r], "") << "summed gradients should not match the mean";
    EXPECT_EQ(vs_double[r], "");
  }
}

TEST(Reducer, AccumulationSyncsOnlyOnTheLastMicroBatch) {
  const auto reference = full_batch_gradients(kSeed, kBatch);
  auto models = models_per_rank(2);
  std::vector<int64_t> after_first(2, -1), after_last(2, -1), buckets(2, 0);
  std::vector<std::string> mismatch(2), not_views(2);
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    auto count = std::make_shared<std::atomic<int64_t>>(0);
    CountingCommunicator counting(comm, count);
    ReducerOptions options;
    options.bucket_mb = kSmallBucketMB;
    Reducer reducer(models[r]->parameters(), {}, counting, options);
    buckets[r] = static_cast<int64_t>(reducer.plan().buckets.size());
    // Rank r's 4 rows in two micro-batches of 2; each loss scaled by 1/2 so the accumulated
    // gradient is the rank's mean.
    {
      NoSync no_sync(reducer);
      loss_on(models[r], r * 4, r * 4 + 2, 0.5).backward();
      reducer.finish_backward();
    }
    // The first micro-batch accumulated into the buckets themselves.
    not_views[r] = grads_are_bucket_views(reducer, models[r]->parameters());
    after_first[r] = count->load();
    loss_on(models[r], r * 4 + 2, r * 4 + 4, 0.5).backward();
    reducer.finish_backward();
    after_last[r] = count->load();
    mismatch[r] = compare_gradients(gradients_of(models[r]), reference, 1e-12);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "");
    EXPECT_EQ(after_first[r], 0) << "an all-reduce was issued on a no-sync micro-batch";
    EXPECT_EQ(not_views[r], "") << "rank " << r;
    EXPECT_EQ(after_last[r], buckets[r]);
    EXPECT_EQ(mismatch[r], "") << "rank " << r;
  }
}

TEST(Reducer, ResetOrReplacedGradsAreRepointedAndStillCorrect) {
  // The contract is zeroing in place; a loop that resets grads to undefined (LibTorch 2.x's
  // zero_grad() default) or assigns a new tensor must still get the right answer, with the
  // grads back in the buckets afterwards.
  const auto reference = full_batch_gradients(kSeed, kBatch);
  auto models = models_per_rank(2);
  std::vector<std::string> mismatch(2), not_views(2);
  std::vector<int64_t> repointed(2, -1);
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.bucket_mb = kSmallBucketMB;
    Reducer reducer(models[r]->parameters(), {}, comm, options);
    auto params = models[r]->parameters();
    for (int step = 0; step < 2; ++step) {
      // Step 0: undefined. Step 1: fresh zero tensors that are not the views.
      for (auto& p : params) p.mutable_grad() = step == 0 ? torch::Tensor() : torch::zeros_like(p);
      loss_on(models[r], r * 4, r * 4 + 4).backward();
      reducer.finish_backward();
      mismatch[r] += compare_gradients(gradients_of(models[r]), reference, 1e-12);
      not_views[r] += grads_are_bucket_views(reducer, params);
    }
    repointed[r] = reducer.stats().grads_repointed;
  });
  const int64_t n = static_cast<int64_t>(models[0]->parameters().size());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(mismatch[r], "") << "rank " << r;
    EXPECT_EQ(not_views[r], "") << "rank " << r;
    EXPECT_EQ(repointed[r], 2 * n) << "rank " << r;
  }
}

TEST(Reducer, ExistingGradsKeepTheirValuesInTheBuckets) {
  // A grad defined before the Reducer (say, restored) is moved into its bucket, not lost.
  auto world = FakeWorld::create(1);
  auto comm = world->communicator(0);
  std::vector<torch::Tensor> params{torch::ones({2, 3}, torch::kDouble).requires_grad_(),
                                    torch::ones({4}, torch::kDouble).requires_grad_()};
  params[0].mutable_grad() = torch::arange(6, torch::kDouble).view({2, 3});
  Reducer reducer(params, {}, *comm);
  EXPECT_EQ(grads_are_bucket_views(reducer, params), "");
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::arange(6, torch::kDouble).view({2, 3})));
  EXPECT_TRUE(torch::equal(params[1].grad(), torch::zeros({4}, torch::kDouble)));
  // Accumulates on top of it, as autograd would without a Reducer.
  (params[0] * 2).sum().backward();
  reducer.finish_backward();
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::arange(6, torch::kDouble).view({2, 3}) + 2))
      << params[0].grad();
  EXPECT_EQ(reducer.stats().grads_repointed, 0);
}

TEST(Reducer, UnusedParameterWithResetGradContributesZerosNotStaleValues) {
  // The bucket still holds the last step's gradient; an unused parameter whose grad was reset
  // to undefined must contribute zeros, not that.
  auto world = FakeWorld::create(1);
  auto comm = world->communicator(0);
  std::vector<torch::Tensor> params{torch::ones({3}, torch::kDouble).requires_grad_(),
                                    torch::ones({3}, torch::kDouble).requires_grad_()};
  Reducer reducer(params, {}, *comm);
  ((params[0] + params[1]) * 5).sum().backward();
  reducer.finish_backward();
  EXPECT_TRUE(torch::equal(params[1].grad(), torch::full({3}, 5.0, torch::kDouble)));
  params[0].grad().zero_();
  params[1].mutable_grad() = torch::Tensor();
  (params[0] * 2).sum().backward();
  reducer.finish_backward();
  EXPECT_EQ(reducer.stats().last_unused_params, 1);
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::full({3}, 2.0, torch::kDouble)));
  ASSERT_TRUE(params[1].grad().defined());
  EXPECT_TRUE(torch::equal(params[1].grad(), torch::zeros({3}, torch::kDouble))) << params[1].grad();
  EXPECT_EQ(grads_are_bucket_views(reducer, params), "");
}

TEST(Reducer, UnusedParametersGetZerosAndNoBucketWaits) {
  // a: used by both ranks; b: only by rank 0; c: by nobody this step.
  std::vector<std::vector<torch::Tensor>> params(2);
  for (int r = 0; r < 2; ++r)
    for (int i = 0; i < 3; ++i) params[r].push_back(torch::full({3}, 1.0 + i, torch::kDouble).requires_grad_());
  std::vector<int64_t> unused(2);
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.bucket_mb = 30.0 / (1024 * 1024);  // one parameter per bucket
    options.timeout_s = 5.0;
    Reducer reducer(params[r], {}, comm, options);
    torch::Tensor x = torch::tensor({1.0, 2.0, 3.0}, torch::kDouble) * (r + 1);
    torch::Tensor loss = (params[r][0] * x).sum();
    if (r == 0) loss = loss + (params[r][1] * params[r][1]).sum();
    loss.backward();
    reducer.finish_backward();
    unused[r] = reducer.stats().last_unused_params;
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "");
    // d/da of sum(a * x_r), x_r = (r+1)(1,2,3): mean over ranks = 1.5 (1,2,3).
    EXPECT_TRUE(torch::allclose(params[r][0].grad(), torch::tensor({1.5, 3.0, 4.5}, torch::kDouble)));
    // d/db of sum(b^2) = 2b = 4 on rank 0 only: mean 2.
    EXPECT_TRUE(torch::allclose(params[r][1].grad(), torch::full({3}, 2.0, torch::kDouble)))
        << params[r][1].grad();
    EXPECT_TRUE(torch::equal(params[r][2].grad(), torch::zeros({3}, torch::kDouble)));
  }
  EXPECT_EQ(unused[0], 1);
  EXPECT_EQ(unused[1], 2);
}

TEST(Reducer, UnusedParameterWithoutFindUnusedNamesIt) {
  auto world = FakeWorld::create(1);
  auto comm = world->communicator(0);
  std::vector<torch::Tensor> params{torch::ones({2}).requires_grad_(),
                                    torch::ones({5, 7}).requires_grad_()};
  ReducerOptions options;
  options.find_unused_parameters = false;
  Reducer reducer(params, {}, *comm, options);
  (params[0] * 3).sum().backward();
  try {
    reducer.finish_backward();
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "1 parameter(s) received no gradient")) << e.what();
    EXPECT_TRUE(contains(e.what(), "1 [5, 7]")) << e.what();
    EXPECT_TRUE(contains(e.what(), "find_unused_parameters")) << e.what();
  }
}

TEST(Reducer, PlanMismatchNamesBothValues) {
  {
    auto world = FakeWorld::create(2);
    const auto errors = world->run([&](Communicator& comm) {
      torch::nn::Sequential model(torch::nn::Linear(4, comm.rank() == 0 ? 16 : 17));
      Reducer reducer(model->parameters(), {}, comm);
    });
    for (const std::string& e : errors)
      EXPECT_TRUE(contains(e, "rank 0 has parameter_elements=80, rank 1 has parameter_elements=85"))
          << e;
  }
  {
    // Same counts, shapes transposed: only the shapes hash tells.
    auto world = FakeWorld::create(2);
    const auto errors = world->run([&](Communicator& comm) {
      std::vector<int64_t> shape = comm.rank() == 0 ? std::vector<int64_t>{2, 3} : std::vector<int64_t>{3, 2};
      Reducer reducer({torch::zeros(shape).requires_grad_()}, {}, comm);
    });
    for (const std::string& e : errors) {
      EXPECT_TRUE(contains(e, "rank 0 has shapes_hash=")) << e;
      EXPECT_TRUE(contains(e, "rank 1 has shapes_hash=")) << e;
    }
  }
}

class ReducerFaults : public ::testing::TestWithParam<bool> {};

TEST_P(ReducerFaults, AbsentRankTimesOutNamingBucketSizeAndStep) {
  const bool overlap = GetParam();
  auto models = models_per_rank(2);
  auto world = FakeWorld::create(2);
  world->inject({1, "all_reduce of bucket 2/2", 1, FakeFault::Kind::kAbsent});
  std::string expected_what;
  const auto start = Clock::now();
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.overlap = overlap;
    options.bucket_mb = kSmallBucketMB;
    options.timeout_s = r == 0 ? 0.5 : 10.0;  // rank 0's watchdog fires first
    Reducer reducer(models[r]->parameters(), {}, comm, options);
    if (r == 0)
      expected_what = lf::str("flat all_reduce of bucket 2/2, ",
                              human_bytes(double(reducer.plan().buckets[1].bytes())), ", step 41");
    reducer.set_step(41);
    loss_on(models[r], r * 4, r * 4 + 4).backward();
    reducer.finish_backward();
  });
  const double elapsed = std::chrono::duration_cast<Seconds>(Clock::now() - start).count();
  EXPECT_LT(elapsed, 5.0);
  EXPECT_TRUE(contains(errors[0], "[rank 0/2 fake] " + expected_what + " has not completed after 0."))
      << errors[0] << "\nexpected: " << expected_what;
  EXPECT_TRUE(contains(errors[1], "job aborted by [rank 0/2 fake]")) << errors[1];
}

TEST_P(ReducerFaults, ThrowingRankEndsPeersWithItsMessage) {
  const bool overlap = GetParam();
  auto models = models_per_rank(2);
  auto world = FakeWorld::create(2);
  world->inject({1, "all_reduce of bucket 1/2", 1, FakeFault::Kind::kThrow});
  const auto start = Clock::now();
  const auto errors = world->run([&](Communicator& comm) {
    const int r = comm.rank();
    ReducerOptions options;
    options.overlap = overlap;
    options.bucket_mb = kSmallBucketMB;
    options.timeout_s = 30.0;
    Reducer reducer(models[r]->parameters(), {}, comm, options);
    loss_on(models[r], r * 4, r * 4 + 4).backward();
    reducer.finish_backward();
  });
  const double elapsed = std::chrono::duration_cast<Seconds>(Clock::now() - start).count();
  EXPECT_LT(elapsed, 5.0);
  EXPECT_TRUE(contains(errors[1], "[rank 1/2 fake] injected fault: all_reduce 'flat all_reduce of bucket 1/2"))
      << errors[1];
  EXPECT_TRUE(contains(errors[0], "job aborted by [rank 1/2 fake]")) << errors[0];
  EXPECT_TRUE(contains(errors[0], "injected fault")) << errors[0];
}

INSTANTIATE_TEST_SUITE_P(Overlap, ReducerFaults, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST(Reducer, SetSyncDuringAStepIsAnError) {
  auto world = FakeWorld::create(1);
  auto comm = world->communicator(0);
  std::vector<torch::Tensor> params{torch::ones({2}).requires_grad_()};
  Reducer reducer(params, {}, *comm);
  (params[0] * 2).sum().backward();
  EXPECT_THROW(reducer.set_sync(false), std::logic_error);
  reducer.finish_backward();
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::full({2}, 2.0f)));
  reducer.set_sync(false);
  EXPECT_FALSE(reducer.sync());
}

}  // namespace
}  // namespace lf::dist
