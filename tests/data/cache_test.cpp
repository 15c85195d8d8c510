// Tests of the latent cache: round trips against encoding directly, the same cache from 1
// rank, 2 simulated ranks and a job array, resume, corruption detection, VAE/settings
// mismatches, missing shards, and the h5py snippet of docs/cache.md.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/util/sha256.h"
#include "data/latent_cache.h"
#include "data/shard_file.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

Manifest encode_all(const Source& src, const EncodeFn& fn, const EncodeOptions& o, int world = 1) {
  for (int r = world - 1; r >= 0; --r) encode_shards(src, fn, o, r, world);  // any order
  return finalize_cache(o.cache_dir, o);
}

// Flips one byte of `path` at `offset`.
void flip_byte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x10;
  f.seekp(offset);
  f.write(&c, 1);
}

TEST(CacheRoundTrip, MomentsF16EqualEncodingDirectly) {
  auto src = synthetic_source(50);
  EncodeOptions o = small_options(scratch_dir());
  Manifest m = encode_all(*src, fake_encoder(), o);
  ASSERT_EQ(m.shards.size(), 4u);
  EXPECT_EQ(m.shards[3].begin, 48);
  EXPECT_EQ(m.shards[3].count, 2);
  EXPECT_EQ(m.settings.latent_shape, (std::vector<int64_t>{4, 8, 8}));
  EXPECT_EQ(m.num_classes(), 3);

  auto cache = LatentCache::open(o.cache_dir);
  LatentRows rows = cache->read_all(/*as_float=*/true);
  SourceBatch all = src->get(0, 50);
  EncodedBatch want = fake_moments(all.images);
  at::Tensor want_mean = want.mean.to(at::kHalf).to(at::kFloat);
  at::Tensor want_logvar = want.logvar.to(at::kHalf).to(at::kFloat);
  EXPECT_TRUE(rows.latents.at("mean").equal(want_mean))
      << "max abs error " << max_abs_diff(rows.latents.at("mean"), want_mean);
  EXPECT_TRUE(rows.latents.at("logvar").equal(want_logvar));
  EXPECT_TRUE(rows.labels.equal(all.labels));
  EXPECT_TRUE(rows.indices.equal(at::arange(50, at::kLong)));

  // Scale factor = 1/std of z ~ N(mean, exp(logvar)), from the stored f16 values.
  at::Tensor md = want_mean.to(at::kDouble), lv = want_logvar.to(at::kDouble);
  double mu = md.mean().item<double>();
  double ez2 = (md * md + lv.exp()).mean().item<double>();
  EXPECT_NEAR(m.latent_std, std::sqrt(ez2 - mu * mu), 1e-9);
  EXPECT_NEAR(m.scale_factor, 1.0 / std::sqrt(ez2 - mu * mu), 1e-9);
  EXPECT_EQ(m.scale_factor_mode, "auto");
  at::Tensor ch_mu = md.mean({0, 2, 3});
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(m.channel_mean[c], ch_mu[c].item<double>(), 1e-9);

  // Arbitrary order with duplicates reads the same rows.
  std::vector<int64_t> pick = {17, 3, 3, 49, 0, 31, 32};
  LatentRows some = cache->read(pick, true, /*gap_bytes=*/0);
  at::Tensor idx = at::tensor(pick, at::kLong);
  EXPECT_TRUE(some.latents.at("mean").equal(want_mean.index_select(0, idx)));
  EXPECT_TRUE(some.indices.equal(idx));
  EXPECT_TRUE(some.labels.equal(all.labels.index_select(0, idx)));
  // The pread path (no memory maps) reads the same rows, with and without coalescing.
  auto unmapped = LatentCache::open(o.cache_dir, false, /*memory_map=*/false);
  for (int64_t gap : {0, 1 << 20}) {
    LatentRows u = unmapped->read(pick, true, gap);
    EXPECT_TRUE(u.latents.at("mean").equal(some.latents.at("mean"))) << "gap " << gap;
    EXPECT_TRUE(u.latents.at("logvar").equal(some.latents.at("logvar"))) << "gap " << gap;
    EXPECT_TRUE(u.labels.equal(some.labels));
    EXPECT_TRUE(u.indices.equal(idx));
  }
  LatentRows raw = unmapped->read(pick, /*as_float=*/false);
  EXPECT_EQ(raw.latents.at("mean").scalar_type(), at::kHalf);
  EXPECT_TRUE(raw.latents.at("mean").to(at::kFloat).equal(some.latents.at("mean")));
  // Invalid index is named.
  EXPECT_NE(error_of([&] { cache->read({50}); }).find("sample index 50"), std::string::npos);
  // Summary mentions the essentials.
  std::string s = cache->summary();
  EXPECT_NE(s.find("50 images 1x32x32 -> latents 4x8x8"), std::string::npos) << s;
  EXPECT_NE(s.find("moments (mean, logvar), f16"), std::string::npos) << s;
}

TEST(CacheRoundTrip, IdentitySampleF32WithFlipIsExact) {
  auto src = synthetic_source(20, 3);
  EncodeOptions o = small_options(scratch_dir());
  o.store = StoreKind::kSample;
  o.dtype = StoreDType::kF32;
  o.flip = true;
  o.scale_factor = "0.5";
  std::vector<bool> saw_flip;
  EncodeFn fn = [&](const at::Tensor& im, const at::Tensor& idx, bool flipped) {
    saw_flip.push_back(flipped);
    return EncodedBatch{{}, {}, im.clone()};
  };
  Manifest m = encode_all(*src, fn, o);
  EXPECT_EQ(m.scale_factor, 0.5);
  EXPECT_EQ(m.scale_factor_mode, "given");
  ASSERT_GE(saw_flip.size(), 2u);
  EXPECT_FALSE(saw_flip[0]);
  EXPECT_TRUE(saw_flip[1]);
  auto cache = LatentCache::open(o.cache_dir);
  LatentRows rows = cache->read_all(true);
  at::Tensor images = src->get(0, 20).images;
  EXPECT_TRUE(rows.latents.at("latent").equal(images));
  EXPECT_TRUE(rows.latents.at("latent_flip").equal(images.flip({3})));
  EXPECT_EQ(rows.latents.count("mean"), 0u);
}

TEST(CacheRanks, OneRankTwoRanksAndJobArrayGiveIdenticalCaches) {
  auto src = synthetic_source(50);
  const std::string base = scratch_dir();
  EncodeOptions o1 = small_options(base + "/w1"), o2 = small_options(base + "/w2"),
                o3 = small_options(base + "/array");
  encode_all(*src, fake_encoder(), o1, 1);
  encode_all(*src, fake_encoder(), o2, 2);
  // A job array of 3 tasks, run out of order, then `encode --finalize`.
  for (int task : {2, 0, 1}) {
    EncodeReport rep = encode_shards(*src, fake_encoder(), o3, task, 3);
    EXPECT_EQ(rep.shards_written, task == 0 ? 2 : 1) << "task " << task;
  }
  finalize_cache(o3.cache_dir, o3);
  const std::string m1 = slurp(o1.cache_dir + "/manifest.json");
  EXPECT_EQ(m1, slurp(o2.cache_dir + "/manifest.json"));
  EXPECT_EQ(m1, slurp(o3.cache_dir + "/manifest.json"));
  for (int i = 0; i < 4; ++i) {
    const std::string f = "/" + shard_file_name(i);
    // Byte-identical files: no timestamps, fixed format version.
    EXPECT_EQ(sha256_file(o1.cache_dir + f), sha256_file(o2.cache_dir + f)) << f;
    EXPECT_EQ(sha256_file(o1.cache_dir + f), sha256_file(o3.cache_dir + f)) << f;
  }
}

TEST(CacheResume, ReRunSkipsVerifiedShardsAndRedoesDamagedOnes) {
  auto src = synthetic_source(50);
  EncodeOptions o = small_options(scratch_dir());
  encode_all(*src, fake_encoder(), o);
  const std::string manifest = slurp(o.cache_dir + "/manifest.json");
  int calls = 0;
  EncodeFn counting = [&](const at::Tensor& im, const at::Tensor&, bool) {
    ++calls;
    return fake_moments(im);
  };
  EncodeReport rep = encode_shards(*src, counting, o, 0, 1);
  EXPECT_EQ(rep.shards_skipped, 4);
  EXPECT_EQ(rep.shards_written, 0);
  EXPECT_EQ(calls, 0);

  // Damage shard 1's data and leave a half-written temporary of shard 2 behind.
  const std::string s1 = o.cache_dir + "/" + shard_file_name(1);
  flip_byte(s1, ShardReader(s1).data_offset("logvar") + 100);
  const std::string stale = o.cache_dir + "/" + shard_file_name(2) + ".tmp-999-0";
  std::ofstream(stale) << "half a shard";
  rep = encode_shards(*src, counting, o, 0, 1);
  EXPECT_EQ(rep.shards_redone, 1);
  EXPECT_EQ(rep.shards_skipped, 3);
  EXPECT_FALSE(fs::exists(stale));
  finalize_cache(o.cache_dir, o);
  EXPECT_EQ(slurp(o.cache_dir + "/manifest.json"), manifest);

  // A shard that is not even an HDF5 file (e.g. replaced by garbage) is redone too.
  std::ofstream(s1, std::ios::trunc) << "garbage";
  rep = encode_shards(*src, fake_encoder(), o, 0, 1);
  EXPECT_EQ(rep.shards_redone, 1);
  finalize_cache(o.cache_dir, o);
  EXPECT_EQ(slurp(o.cache_dir + "/manifest.json"), manifest);
}

TEST(CacheVerify, FlippedByteInAShardIsDetected) {
  auto src = synthetic_source(50);
  EncodeOptions o = small_options(scratch_dir());
  Manifest m = encode_all(*src, fake_encoder(), o);
  const std::string s2 = o.cache_dir + "/" + shard_file_name(2);
  flip_byte(s2, ShardReader(s2).data_offset("mean") + 7);
  std::string err = error_of([&] { LatentCache::open(o.cache_dir, /*verify=*/true); });
  // The file's hash is checked before HDF5 parses it (docs/fuzzing.md).
  ASSERT_EQ(m.shards[2].file_sha256.size(), 64u);
  EXPECT_NE(err.find(s2 + ": checksum mismatch: the manifest expects " + m.shards[2].file_sha256 +
                     " for the file, it hashes to "),
            std::string::npos)
      << err;
  // Without verification it opens; inspect reports the damaged shard.
  EXPECT_NO_THROW(LatentCache::open(o.cache_dir, /*verify=*/false));
  InspectResult res = inspect_cache(o.cache_dir);
  EXPECT_FALSE(res.ok);
  EXPECT_NE(res.text.find("shard-00002.h5 FAILED"), std::string::npos) << res.text;
  EXPECT_NE(res.text.find("shard-00001.h5 ok"), std::string::npos) << res.text;
  EXPECT_NE(res.text.find("1 of 4 shards FAILED"), std::string::npos) << res.text;
  // Finalize refuses it too.
  err = error_of([&] { finalize_cache(o.cache_dir, o); });
  EXPECT_NE(err.find(s2 + ": checksum mismatch"), std::string::npos) << err;
}

TEST(CacheMismatch, OtherVAEOrSettingsAreRefusedWithBothValues) {
  auto src = synthetic_source(20);
  EncodeOptions o = small_options(scratch_dir());
  encode_all(*src, fake_encoder(), o);
  EncodeOptions other = o;
  other.vae_hash = std::string(64, 'b');
  std::string err = error_of([&] { encode_shards(*src, fake_encoder(), other, 0, 1); });
  EXPECT_NE(err.find("VAE hash aaaaaaaaaaaa… but the configured VAE is bbbbbbbbbbbb…"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("re-run encode or set vae.weights"), std::string::npos) << err;
  EXPECT_NE(err.find(std::string(64, 'b')), std::string::npos) << err;

  auto cache = LatentCache::open(o.cache_dir);
  EXPECT_NO_THROW(cache->check_vae(std::string(64, 'a')));
  err = error_of([&] { cache->check_vae(std::string(64, 'b')); });
  EXPECT_NE(err.find("manifest.json: VAE hash aaaaaaaaaaaa… but the configured VAE is "
                     "bbbbbbbbbbbb…; re-run encode or set vae.weights to the weights that made "
                     "this cache"),
            std::string::npos)
      << err;

  other = o;
  other.dtype = StoreDType::kF32;
  err = error_of([&] { encode_shards(*src, fake_encoder(), other, 0, 1); });
  EXPECT_NE(err.find("made with other settings (dtype: \"f16\" vs \"f32\""), std::string::npos)
      << err;
  auto src2 = synthetic_source(21);
  err = error_of([&] { encode_shards(*src2, fake_encoder(), o, 0, 1); });
  EXPECT_NE(err.find("other settings"), std::string::npos) << err;
}

TEST(CacheFinalize, NamesMissingShards) {
  auto src = synthetic_source(50);
  EncodeOptions o = small_options(scratch_dir());
  encode_shards(*src, fake_encoder(), o, 0, 2);  // rank 1 of 2 never ran
  std::string err = error_of([&] { finalize_cache(o.cache_dir, o); });
  EXPECT_NE(err.find("2 of 4 shards are missing (shard-00001.h5, shard-00003.h5)"),
            std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(o.cache_dir + "/manifest.json"));
  err = error_of([&] { LatentCache::open(o.cache_dir); });
  EXPECT_NE(err.find("manifest.json: cannot read the cache manifest"), std::string::npos) << err;
  // Finalize with other options than encode used is refused.
  encode_shards(*src, fake_encoder(), o, 1, 2);
  EncodeOptions other = o;
  other.shard_size = 10;
  err = error_of([&] { finalize_cache(o.cache_dir, other); });
  EXPECT_NE(err.find("shard_size is 16 but finalize was asked for 10"), std::string::npos) << err;
}

TEST(CacheEncode, BadEncoderOutputIsNamed) {
  auto src = synthetic_source(10);
  EncodeOptions o = small_options(scratch_dir());
  std::string err = error_of([&] { encode_shards(*src, identity_sample_encoder(), o, 0, 1); });
  EXPECT_NE(err.find("no mean/logvar"), std::string::npos) << err;
  EncodeFn huge = [](const at::Tensor& im, const at::Tensor&, bool) {
    EncodedBatch b = fake_moments(im);
    b.mean = b.mean * 1e6;  // beyond f16's range
    return b;
  };
  err = error_of([&] { encode_shards(*src, huge, o, 0, 1); });
  EXPECT_NE(err.find("non-finite"), std::string::npos) << err;
  EXPECT_NE(err.find("cache.dtype = f32"), std::string::npos) << err;
  // Nothing half-written is left under a final name.
  EXPECT_FALSE(fs::exists(o.cache_dir + "/" + shard_file_name(0)));
  o.scale_factor = "-3";
  EXPECT_THROW(o.validate(), std::invalid_argument);
}

// Runs the Python block of docs/cache.md against a real cache: it must read the latents,
// labels and names, and recompute every shard checksum as documented.
TEST(H5py, DocSnippetReadsTheCache) {
  if (std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy is not available";
  // The repository root: $LF_SOURCE_DIR, else the one CMake compiled in.
  const char* env = std::getenv("LF_SOURCE_DIR");
  const std::string src_dir = env && *env ? std::string(env) : std::string(LF_SOURCE_DIR_FALLBACK);
  std::string doc = slurp(src_dir + "/docs/cache.md");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(doc, match,
                                std::regex("<!-- h5py-snippet-begin -->\\s*```python\\n([\\s\\S]*?)"
                                           "```\\s*<!-- h5py-snippet-end -->")))
      << "docs/cache.md (" << doc.size() << " bytes from " << src_dir
      << ") lost its h5py snippet";
  const std::string dir = scratch_dir();
  auto src = synthetic_source(40);
  EncodeOptions o = small_options(dir + "/cache");
  o.flip = true;
  encode_all(*src, fake_encoder(), o);
  std::ofstream(dir + "/snippet.py") << match[1].str();
  const std::string out = dir + "/out.txt";
  int rc = std::system(("/usr/bin/python3 " + dir + "/snippet.py " + o.cache_dir + " > " + out +
                        " 2>&1")
                           .c_str());
  std::string text = slurp(out);
  ASSERT_EQ(rc, 0) << text;
  auto cache = LatentCache::open(o.cache_dir, false);
  double sum0 = cache->read({0}).latents.at("mean").sum().item<double>();
  char want[128];
  std::snprintf(want, sizeof want, "(40, 4, 8, 8) (40,) a ");
  EXPECT_EQ(text.rfind(want, 0), 0u) << text;
  double got = std::stod(text.substr(std::string(want).size()));
  EXPECT_NEAR(got, sum0, 1e-3 * std::max(1.0, std::fabs(sum0))) << text;
}

}  // namespace
}  // namespace lf::data
