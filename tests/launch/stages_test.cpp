// The pieces that let encode, sample and eval run on any number of ranks and devices: the
// sample chunk plan and its resumable parts, the streaming samples file, the rank split of eval
// batches and its float64 moments, the batch independence of the denoiser that makes samples
// independent of sample.batch_size, user-supplied classifiers, and the stage device's batch
// pipeline (on CPU here; tests/launch/stages_gpu_test.cpp runs it on a GPU).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "../test_util.h"
#include "core/image_metrics.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/unet.h"
#include "data/samples_file.h"
#include "launch/eval_sets.h"
#include "launch/sample_parts.h"
#include "launch/stage_device.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

using lf::testing::ExpectThrowContains;

std::string fresh_dir(const std::string& name) { return lf::testing::fresh_dir("stages_" + name); }

at::Tensor random_images(int64_t n, int64_t seed) {
  at::manual_seed(seed);
  return at::randint(0, 256, {n, 1, 4, 4}, at::kByte);
}

TEST(SampleChunks, PlanCoversTheJobAndEveryChunkIsClaimedOnce) {
  ChunkPlan plan{103, 10};
  ASSERT_EQ(plan.num_chunks(), 11);
  EXPECT_EQ(plan.begin(10), 100);
  EXPECT_EQ(plan.count(10), 3);
  EXPECT_EQ(plan.count(3), 10);
  // Three "ranks" (SampleParts objects on one directory, as on a shared file system) racing
  // for the chunks in the same order: each chunk goes to exactly one of them.
  const std::string out = fresh_dir("claims");
  SampleParts rank0(out, plan, "{\"job\":1}"), rank1(out, plan, "{\"job\":1}"), rank2(out, plan, "{\"job\":1}");
  std::vector<int64_t> todo = rank0.prepare();
  ASSERT_EQ(todo.size(), 11u);
  std::multiset<int64_t> seen;
  for (int64_t k : todo)
    for (SampleParts* p : {&rank1, &rank2, &rank0})  // the order they reach it in varies
      if (p->claim(k, "test")) seen.insert(k);
  EXPECT_EQ(seen, std::multiset<int64_t>(todo.begin(), todo.end()));
  EXPECT_FALSE(rank2.claim(4, "test"));
  // A re-run's prepare() drops the claims of the killed run: its unfinished chunks are free again.
  todo = rank0.prepare();
  EXPECT_EQ(todo.size(), 11u);
  EXPECT_TRUE(rank1.claim(4, "test"));
  EXPECT_FALSE(rank0.claim(4, "test"));
}

TEST(EvalSets, BatchesSplitContiguouslyAndCompletely) {
  for (int64_t batches : {0, 1, 5, 17}) {
    for (int world : {1, 2, 3, 7}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        auto [first, last] = batches_for_rank(batches, r, world);
        EXPECT_EQ(first, next);
        EXPECT_GE(last, first);
        next = last;
      }
      EXPECT_EQ(next, batches);
    }
  }
}

TEST(SamplesFile, StreamingWriterEqualsWholeWriteAndReadsRanges) {
  const std::string dir = fresh_dir("writer");
  at::Tensor images = random_images(10, 1), labels = at::arange(10, at::kLong) % 3;
  data::write_samples_file(dir + "/whole.h5", images, labels, {"a", "b", "c"});
  {
    data::SamplesWriter w(dir + "/pieces.h5", 10, {1, 4, 4}, {"a", "b", "c"}, {{"note", "x"}});
    w.write(7, images.narrow(0, 7, 3), labels.narrow(0, 7, 3));
    w.write(0, images.narrow(0, 0, 7), labels.narrow(0, 0, 7));
    EXPECT_FALSE(fs::exists(dir + "/pieces.h5")) << "visible before commit";
    w.commit();
  }
  auto a = data::read_samples_file(dir + "/whole.h5"), b = data::read_samples_file(dir + "/pieces.h5");
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.labels.equal(b.labels));
  EXPECT_EQ(b.label_names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(data::read_samples_attribute(dir + "/pieces.h5", "note"), "x");
  EXPECT_EQ(data::read_samples_attribute(dir + "/pieces.h5", "missing"), "");
  auto r = data::read_samples_range(dir + "/pieces.h5", 3, 4);
  EXPECT_TRUE(r.images.equal(images.narrow(0, 3, 4)));
  EXPECT_EQ(data::read_samples_info(dir + "/pieces.h5").num, 10);
  ExpectThrowContains<std::invalid_argument>([&] { data::read_samples_range(dir + "/pieces.h5", 8, 3); },
                                             {"pieces.h5", "rows [8, 11)", "holds 10"});
  // A writer dropped before commit leaves nothing behind; commit with rows missing is refused.
  {
    data::SamplesWriter w(dir + "/dropped.h5", 4, {1, 4, 4}, {});
    w.write(0, images.narrow(0, 0, 2), labels.narrow(0, 0, 2));
    ExpectThrowContains<std::logic_error>([&] { w.commit(); }, {"2 of 4 rows written"});
  }
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find("dropped"), std::string::npos) << e.path();
}

// Writes chunk k of `parts` from `images` (the whole job's).
void write_chunk(const SampleParts& parts, int64_t k, const at::Tensor& images) {
  const ChunkPlan& p = parts.plan();
  auto w = parts.open_chunk(k, {1, 4, 4}, {"a"});
  w->write(0, images.narrow(0, p.begin(k), p.count(k)), at::full({p.count(k)}, k, at::kLong));
  parts.commit_chunk(*w);
}

TEST(SampleParts, ResumeKeepsThisJobsChunksAndDropsOthersThenMergesInOrder) {
  const std::string dir = fresh_dir("parts");
  at::Tensor images = random_images(23, 2);
  SampleParts parts(dir, ChunkPlan{23, 5}, R"({"seed":0})");
  EXPECT_EQ(parts.prepare(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  write_chunk(parts, 1, images);
  write_chunk(parts, 4, images);
  // What a killed run leaves: a temporary chunk and a temporary merged file.
  std::ofstream(parts.dir() + "/chunk-00002.h5.tmp-123-0") << "half";
  std::ofstream(dir + "/samples.h5.tmp-123-1") << "half";
  // Chunk 3 of another job (another seed) in the same directory.
  SampleParts other(dir, ChunkPlan{23, 5}, R"({"seed":7})");
  write_chunk(other, 3, images);
  EXPECT_TRUE(parts.is_done(1) && parts.is_done(4));
  EXPECT_FALSE(parts.is_done(3)) << "a chunk of another job counts as done";
  EXPECT_EQ(parts.prepare(), (std::vector<int64_t>{0, 2, 3}));
  EXPECT_FALSE(fs::exists(parts.dir() + "/chunk-00002.h5.tmp-123-0"));
  EXPECT_FALSE(fs::exists(dir + "/samples.h5.tmp-123-1"));
  EXPECT_FALSE(fs::exists(parts.chunk_path(3))) << "the other job's chunk was kept";
  EXPECT_TRUE(fs::exists(parts.dir() + "/job.json"));
  for (int64_t k : {0, 2, 3}) write_chunk(parts, k, images);
  parts.merge({1, 4, 4}, {"a"}, {}, nullptr);
  auto merged = data::read_samples_file(parts.samples_path());
  EXPECT_TRUE(merged.images.equal(images));
  EXPECT_TRUE(merged.labels.equal(at::arange(23, at::kLong).div(5, "floor")));
  EXPECT_FALSE(fs::exists(parts.dir())) << "parts/ stays after the merge";
}

TEST(EvalSets, MomentsOfSlicesSumToTheStatisticsOfTheWhole) {
  at::manual_seed(3);
  // Features with a large mean, where a one-pass covariance loses most digits.
  at::Tensor f = at::randn({1000, 16}, at::kDouble) * 0.5 + 3.0;
  at::Tensor logits = at::randn({1000, 4}), labels = at::randint(-1, 4, {1000}, at::kLong);
  FeatureMoments whole, a, b;
  for (FeatureMoments* m : {&whole, &a, &b}) {
    m->sum = at::zeros({16}, at::kDouble);
    m->outer = at::zeros({16, 16}, at::kDouble);
  }
  for (int64_t i = 0; i < 1000; i += 100) whole.add(f.narrow(0, i, 100), logits.narrow(0, i, 100), labels.narrow(0, i, 100));
  a.add(f.narrow(0, 0, 300), logits.narrow(0, 0, 300), labels.narrow(0, 0, 300));
  b.add(f.narrow(0, 300, 700), logits.narrow(0, 300, 700), labels.narrow(0, 300, 700));
  // What all_reduce does with two ranks.
  FeatureMoments ab = a;
  ab.sum = a.sum + b.sum;
  ab.outer = a.outer + b.outer;
  ab.count = a.count + b.count;
  ab.correct = a.correct + b.correct;
  ab.unlabelled = a.unlabelled + b.unlabelled;
  auto [mu, cov] = core::feature_statistics(f);  // the two-pass reference
  for (const FeatureMoments* m : {&whole, &ab}) {
    auto [mu_m, cov_m] = m->statistics();
    EXPECT_LT((mu_m - mu).abs().max().item<double>(), 1e-13);
    EXPECT_LT(((cov_m - cov).abs().max() / cov.abs().max()).item<double>(), 1e-11);
  }
  EXPECT_EQ(ab.count, 1000);
  EXPECT_EQ(ab.unlabelled, (labels < 0).sum().item<int64_t>());
  EXPECT_EQ(ab.correct, (logits.argmax(1).eq(labels) & (labels >= 0)).sum().item<int64_t>());
  // The Fréchet distance of 1 and 2 "ranks" agrees to float64 rounding.
  auto [mu_w, cov_w] = whole.statistics();
  auto [mu_2, cov_2] = ab.statistics();
  at::Tensor mu_ref = at::zeros({16}, at::kDouble), cov_ref = at::eye(16, at::kDouble);
  const double fd1 = core::frechet_distance(mu_w, cov_w, mu_ref, cov_ref);
  const double fd2 = core::frechet_distance(mu_2, cov_2, mu_ref, cov_ref);
  EXPECT_LT(std::abs(fd1 - fd2) / fd1, 1e-9) << fd1 << " vs " << fd2;
}

// sample.batch_size must not change the images: the denoiser's output for a sample must not
// depend on the other samples of its batch. On the CPU (float32, LibTorch's kernels) this holds
// bitwise for the conditional UNet, including the 2B-wide classifier-free-guidance batch.
TEST(SampleBatchIndependence, UNetForwardOfASampleIsTheSameInAnyBatch) {
  core::UNetOptions o;
  o.in_channels = 4;
  o.model_channels = 32;
  o.channel_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attention_ds = {2};
  o.head_channels = 16;
  o.norm_groups = 8;
  o.num_classes = 10;
  at::manual_seed(0);
  core::UNet unet(o);
  unet->eval();
  at::NoGradGuard no_grad;
  at::Tensor x = at::randn({20, 4, 8, 8}), t = at::randint(0, 1000, {20}, at::kLong);
  at::Tensor y = at::randint(0, 11, {20}, at::kLong);
  at::Tensor all = unet->forward(x, t, y);
  for (int64_t batch : {7, 10, 3, 1}) {
    std::vector<at::Tensor> parts;
    for (int64_t b = 0; b < 20; b += batch) {
      const int64_t n = std::min(batch, 20 - b);
      parts.push_back(unet->forward(x.narrow(0, b, n), t.narrow(0, b, n), y.narrow(0, b, n)));
    }
    at::Tensor joined = at::cat(parts);
    EXPECT_TRUE(joined.equal(all)) << "batch " << batch << ": max abs difference "
                                   << (joined - all).abs().max().item<double>();
  }
}

TEST(EvalClassifier, AUserClassifierWithoutMetadataLoadsFromItsShapes) {
  const std::string dir = fresh_dir("classifier");
  core::ClassifierOptions o;
  o.in_channels = 1;
  o.num_classes = 5;
  o.width = 8;
  o.feature_dim = 24;
  at::manual_seed(4);
  core::Classifier c(o);
  core::save_safetensors(dir + "/user.safetensors", core::state_dict(*c), {});
  core::Classifier loaded = load_classifier(dir + "/user.safetensors");
  EXPECT_EQ(loaded->options().width, 8);
  EXPECT_EQ(loaded->options().feature_dim, 24);
  EXPECT_EQ(loaded->options().num_classes, 5);
  at::NoGradGuard no_grad;
  c->eval();
  at::Tensor x = at::randn({3, 1, 16, 16});
  EXPECT_TRUE(loaded->features(x).equal(c->features(x)));
  // Not a classifier: the message names the file and the missing tensor.
  core::save_safetensors(dir + "/other.safetensors", {{"w", at::zeros({2})}}, {});
  ExpectThrowContains<std::invalid_argument>([&] { load_classifier(dir + "/other.safetensors"); },
                                             {"other.safetensors", "no tensor convs.0.weight"});
  ExpectThrowContains<std::invalid_argument>([&] { load_classifier(dir + "/missing.safetensors"); },
                                             {"eval.classifier = '", "not found", "eval train-classifier"});
}

TEST(StageDevice, CpuPipelineIsThePlainLoopInOrder) {
  StageDevice dev = stage_device(at::Device(at::kCPU), "auto", "eval.precision");
  EXPECT_EQ(dev.precision(), Precision::kF32);
  EXPECT_EQ(dev.describe(), "cpu, f32");
  EXPECT_FALSE(dev.autocasts());
  std::vector<int64_t> loaded, consumed;
  dev.pipeline(
      4, [&](int64_t k) { loaded.push_back(k); return at::full({2}, k, at::kDouble); },
      [&](const at::Tensor& x) {
        EXPECT_EQ(x.scalar_type(), at::kFloat) << "upload converts floats to the stage dtype";
        return std::vector<at::Tensor>{x * 2};
      },
      [&](int64_t k, std::vector<at::Tensor>& out) {
        consumed.push_back(k);
        EXPECT_EQ(out[0][0].item<float>(), 2.0f * k);
      });
  EXPECT_EQ(loaded, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(consumed, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(stage_device(at::Device(at::kCPU), "f64", "eval.precision").upload(at::ones({1})).scalar_type(), at::kDouble);
  ExpectThrowContains<std::invalid_argument>([] { stage_device(at::Device(at::kCPU), "bf16", "sample.precision"); },
                                             {"sample.precision = bf16 needs a CUDA device"});
}

}  // namespace
}  // namespace lf::launch
