// Tests of the epoch order, the batch layout over ranks and micro-batches, and the loader:
// permutations that are pure functions of (n, seed, epoch), the same global batch for any
// W and A, resume at any step, and identical batches in streaming, prefetching and in-memory
// modes.
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <set>

#include "data/epoch_order.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"
#include "data/sample_stream.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

bool is_permutation_of_n(const std::vector<int64_t>& v) {
  std::vector<int64_t> s = v;
  std::sort(s.begin(), s.end());
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] != static_cast<int64_t>(i)) return false;
  return true;
}

TEST(EpochOrder, PermutationPureAndDifferentPerEpochAndSeed) {
  for (int64_t n : {1, 2, 7, 1000}) {
    auto a = epoch_order(n, 42, 0);
    EXPECT_TRUE(is_permutation_of_n(a)) << n;
    EXPECT_EQ(a, epoch_order(n, 42, 0)) << "not a pure function, n " << n;
  }
  auto e0 = epoch_order(1000, 42, 0), e1 = epoch_order(1000, 42, 1), s1 = epoch_order(1000, 43, 0);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, s1);
  std::vector<int64_t> id(1000);
  std::iota(id.begin(), id.end(), 0);
  EXPECT_NE(e0, id);
  OrderOptions no;
  no.shuffle = false;
  EXPECT_EQ(epoch_order(1000, 42, 3, no), id);
  // Uniformity: over many epochs every sample visits position 0 about equally often.
  std::vector<int> first(8, 0);
  for (int64_t e = 0; e < 4000; ++e) ++first[epoch_order(8, 7, e)[0]];
  for (int k = 0; k < 8; ++k) EXPECT_NEAR(first[k], 500, 100) << "sample " << k;
}

// Golden orders from tools/epoch_order_reference.py, an independent Python implementation.
// They also pin the order: a change would silently alter resumed runs.
TEST(EpochOrder, MatchesThePythonReference) {
  EXPECT_EQ(epoch_order(10, 1, 0), (std::vector<int64_t>{7, 2, 4, 1, 6, 8, 5, 9, 0, 3}));
  EXPECT_EQ(epoch_order(12, (uint64_t{1} << 40) + 7, 3),
            (std::vector<int64_t>{0, 2, 10, 1, 5, 9, 7, 3, 11, 6, 8, 4}));
  OrderOptions o;
  o.block_size = 4;
  o.window_blocks = 2;
  EXPECT_EQ(epoch_order(20, 9, 1, o), (std::vector<int64_t>{6, 5, 10, 4, 8, 9, 11, 7, 12, 1, 14,
                                                            2, 3, 15, 0, 13, 16, 19, 17, 18}));
}

TEST(EpochOrder, BlockwiseKeepsLocality) {
  OrderOptions o;
  o.block_size = 16;
  o.window_blocks = 4;
  // n a multiple of the block size: each window of 64 positions is exactly 4 whole blocks.
  auto a = epoch_order(1024, 5, 2, o);
  EXPECT_TRUE(is_permutation_of_n(a));
  EXPECT_EQ(a, epoch_order(1024, 5, 2, o));
  EXPECT_NE(a, epoch_order(1024, 5, 3, o));
  for (size_t w = 0; w < 1024; w += 64) {
    std::map<int64_t, int> blocks;
    for (size_t p = w; p < w + 64; ++p) ++blocks[a[p] / 16];
    EXPECT_EQ(blocks.size(), 4u) << "window at " << w;
    for (auto& kv : blocks) EXPECT_EQ(kv.second, 16) << "block " << kv.first;
  }
  // A short last block (1000 = 62 x 16 + 8): the order still cuts into consecutive windows
  // that are each the union of at most 4 complete blocks.
  auto b = epoch_order(1000, 5, 2, o);
  EXPECT_TRUE(is_permutation_of_n(b));
  auto block_len = [](int64_t blk) { return blk == 62 ? 8 : 16; };
  size_t pos = 0, windows = 0;
  while (pos < b.size()) {
    std::map<int64_t, int> cnt;
    size_t e = pos;
    bool closed = false;
    while (e < b.size() && !(closed && cnt.size() == 4)) {
      ++cnt[b[e++] / 16];
      closed = std::all_of(cnt.begin(), cnt.end(),
                           [&](const auto& kv) { return kv.second == block_len(kv.first); });
    }
    ASSERT_TRUE(closed) << "window from " << pos << " leaves a block incomplete";
    ASSERT_LE(cnt.size(), 4u) << "window from " << pos;
    pos = e;
    ++windows;
  }
  EXPECT_EQ(windows, 16u);
  o.block_size = 0;
  EXPECT_THROW(epoch_order(10, 1, 0, o), std::invalid_argument);
}

// The global batch k seen by W ranks with A micro-batches each, concatenated in rank then
// micro order, is the same for every (W, A).
TEST(SampleStream, SameGlobalBatchForAnyWorldAndAccumulation) {
  const int64_t n = 37, B = 8;
  for (int64_t step : {0, 4, 5, 13}) {  // 37/8: steps 4 and 13 span an epoch boundary
    std::vector<int64_t> ref_idx, ref_ep;
    for (int64_t W : {1, 2, 4}) {
      for (int64_t A : {1, 2}) {
        std::vector<int64_t> idx, ep;
        for (int64_t r = 0; r < W; ++r) {
          SampleStream s(n, 99);
          BatchLayout L{B, W, r, A};
          L.validate();
          for (int64_t a = 0; a < A; ++a) {
            auto [b, e] = micro_batch_positions(L, step, a);
            std::vector<int64_t> i(e - b), p(e - b);
            s.lookup(b, e, i.data(), p.data());
            idx.insert(idx.end(), i.begin(), i.end());
            ep.insert(ep.end(), p.begin(), p.end());
          }
        }
        if (ref_idx.empty()) {
          ref_idx = idx;
          ref_ep = ep;
        }
        EXPECT_EQ(idx, ref_idx) << "step " << step << " W " << W << " A " << A;
        EXPECT_EQ(ep, ref_ep) << "step " << step << " W " << W << " A " << A;
      }
    }
    // Position p belongs to epoch p / n.
    for (int64_t j = 0; j < B; ++j) EXPECT_EQ(ref_ep[j], (step * B + j) / n);
  }
  BatchLayout bad{10, 4, 0, 1};
  try {
    bad.validate();
    FAIL() << "10 samples over 4 ranks accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by world size 4"), std::string::npos);
  }
}

class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(scratch_dir());
    auto src = synthetic_source(50);
    EncodeOptions o = small_options(*dir_);
    o.flip = true;
    encode_shards(*src, fake_encoder(), o, 0, 1);
    finalize_cache(*dir_, o);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string* dir_;
};
std::string* LoaderTest::dir_ = nullptr;

TEST_F(LoaderTest, BatchesMatchTheOrderAndTheCache) {
  auto cache = LatentCache::open(*dir_);
  LatentRows all = cache->read_all(true);
  LoaderOptions o;
  o.layout = {12, 1, 0, 1};
  o.seed = 3;
  o.read_ahead_samples = 24;  // 2 steps per read group: buffers get recycled
  LatentLoader loader(cache, o);
  SampleStream stream(50, 3);
  for (int64_t k = 0; k < 9; ++k) {  // crosses two epoch boundaries
    LoaderStep st = loader.next();
    ASSERT_EQ(st.step, k);
    ASSERT_EQ(st.micro.size(), 1u);
    const LatentBatch& b = st.micro[0];
    std::vector<int64_t> idx(12), ep(12);
    stream.lookup(k * 12, k * 12 + 12, idx.data(), ep.data());
    at::Tensor want = at::tensor(idx, at::kLong);
    ASSERT_TRUE(b.indices.equal(want)) << "step " << k;
    EXPECT_TRUE(b.epochs.equal(at::tensor(ep, at::kLong)));
    EXPECT_TRUE(b.mean.equal(all.latents.at("mean").index_select(0, want)));
    EXPECT_TRUE(b.logvar_flip.equal(all.latents.at("logvar_flip").index_select(0, want)));
    EXPECT_TRUE(b.labels.equal(all.labels.index_select(0, want)));
    EXPECT_EQ(b.mean.scalar_type(), at::kFloat);
    EXPECT_FALSE(b.latent.defined());
  }
}

// Collects steps [first, first+count) of rank r as the concatenated indices of its
// micro-batches, plus all mean tensors.
std::vector<int64_t> collect(const std::shared_ptr<LatentCache>& cache, LoaderOptions o,
                             int64_t count, at::Tensor* means = nullptr) {
  LatentLoader loader(cache, o);
  std::vector<int64_t> out;
  std::vector<at::Tensor> ms;
  for (int64_t k = 0; k < count; ++k) {
    LoaderStep st = loader.next();
    EXPECT_EQ(st.step, o.start_step + k);
    EXPECT_EQ(static_cast<int64_t>(st.micro.size()), o.layout.accum);
    for (const auto& mb : st.micro) {
      EXPECT_EQ(mb.size(), o.layout.micro_size());
      auto p = mb.indices.data_ptr<int64_t>();
      out.insert(out.end(), p, p + mb.size());
      ms.push_back(mb.mean);
    }
  }
  if (means) *means = at::cat(ms);
  return out;
}

TEST_F(LoaderTest, ResumeAtStepKEqualsIteratingFromZero) {
  auto cache = LatentCache::open(*dir_, false);
  LoaderOptions o;
  o.layout = {10, 1, 0, 2};
  o.seed = 11;
  o.read_ahead_samples = 25;  // several read groups
  auto from0 = collect(cache, o, 12);
  o.start_step = 7;
  auto from7 = collect(cache, o, 5);
  EXPECT_EQ(from7, std::vector<int64_t>(from0.begin() + 70, from0.end()));
}

TEST_F(LoaderTest, RanksConcatenateToTheSingleRankBatches) {
  auto cache = LatentCache::open(*dir_, false);
  LoaderOptions o;
  o.layout = {8, 1, 0, 1};
  o.seed = 5;
  o.order.block_size = 4;
  o.order.window_blocks = 2;
  const int64_t steps = 10;
  at::Tensor ref_means;
  auto ref = collect(cache, o, steps, &ref_means);
  for (int64_t W : {2, 4}) {
    for (int64_t A : {1, 2}) {
      std::vector<std::vector<int64_t>> per_rank;
      for (int64_t r = 0; r < W; ++r) {
        LoaderOptions q = o;
        q.layout = {8, W, r, A};
        q.in_memory = (r % 2 == 1);  // mix the modes: they must agree
        q.prefetch_steps = r == 0 ? 0 : 3;
        per_rank.push_back(collect(cache, q, steps));
      }
      std::vector<int64_t> merged;
      const int64_t per = 8 / W;
      for (int64_t k = 0; k < steps; ++k)
        for (int64_t r = 0; r < W; ++r)
          merged.insert(merged.end(), per_rank[r].begin() + k * per,
                        per_rank[r].begin() + (k + 1) * per);
      EXPECT_EQ(merged, ref) << "W " << W << " A " << A;
    }
  }
}

TEST_F(LoaderTest, StreamingAndInMemoryDeliverTheSameTensors) {
  auto cache = LatentCache::open(*dir_, false);
  LoaderOptions o;
  o.layout = {16, 1, 0, 1};
  o.seed = 8;
  at::Tensor a, b;
  auto ia = collect(cache, o, 6, &a);
  o.in_memory = true;
  auto ib = collect(cache, o, 6, &b);
  EXPECT_EQ(ia, ib);
  EXPECT_TRUE(a.equal(b)) << "max abs error " << max_abs_diff(a, b);
}

// Batches the consumer still holds must never be overwritten by recycled buffers; batches it
// dropped may be recycled. Checked against fresh reads, with several read threads.
TEST_F(LoaderTest, HeldBatchesAreNeverOverwritten) {
  auto cache = LatentCache::open(*dir_, false);
  LoaderOptions o;
  o.layout = {10, 1, 0, 1};
  o.seed = 21;
  o.read_ahead_samples = 40;  // 4 steps per group
  o.read_threads = 3;
  o.prefetch_steps = 2;
  LatentLoader loader(cache, o);
  std::vector<LoaderStep> held;
  for (int k = 0; k < 30; ++k) {
    LoaderStep st = loader.next();
    if (k % 3 == 0) held.push_back(st);  // keep every third step, drop the others
  }
  for (const auto& st : held) {
    const LatentBatch& b = st.micro[0];
    std::vector<int64_t> idx(b.indices.data_ptr<int64_t>(),
                             b.indices.data_ptr<int64_t>() + b.size());
    LatentRows fresh = cache->read(idx);
    EXPECT_TRUE(b.mean.equal(fresh.latents.at("mean"))) << "step " << st.step;
    EXPECT_TRUE(b.mean_flip.equal(fresh.latents.at("mean_flip"))) << "step " << st.step;
    EXPECT_TRUE(b.labels.equal(fresh.labels)) << "step " << st.step;
  }
}

TEST_F(LoaderTest, ADamagedShardSurfacesInNext) {
  auto cache = LatentCache::open(*dir_, false);
  LoaderOptions o;
  o.layout = {8, 1, 0, 1};
  // An index outside the cache cannot occur, so emulate a failure in the thread through an
  // unreadable shard: a copy of the cache with shard 1 truncated.
  const std::string copy = scratch_dir("-copy");
  fs::copy(*dir_, copy, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  fs::resize_file(copy + "/" + shard_file_name(1), 100);
  auto damaged = LatentCache::open(copy, false);
  LatentLoader loader(damaged, o);
  try {
    for (int k = 0; k < 20; ++k) loader.next();
    FAIL() << "no error from a truncated shard";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("shard-00001.h5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lf::data
