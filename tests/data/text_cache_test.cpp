// Tests of captions in the latent cache: bytes and tokens as the tokenizer gives them, the
// manifest's text record with the truncation count, the same tokens through memory maps, pread
// and the loader (streaming and in memory), the checksum covering the tokens, and the context
// length validated.
#include <gtest/gtest.h>

#include <fstream>

#include "core/util/tokenizer.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"
#include "data/shard_file.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

// The synthetic images with a caption each (what an image folder with metadata.jsonl gives).
class CaptionedSource : public Source {
 public:
  CaptionedSource(std::unique_ptr<InMemorySource> inner, std::vector<std::string> captions)
      : inner_(std::move(inner)), captions_(std::move(captions)) {
    size_ = inner_->size();
    channels_ = inner_->channels();
    height_ = inner_->height();
    width_ = inner_->width();
    label_names_ = inner_->label_names();
    captioned_ = true;
  }
  nlohmann::json description() const override { return inner_->description(); }
  SourceBatch get(int64_t begin, int64_t end) const override {
    SourceBatch b = inner_->get(begin, end);
    b.captions.assign(captions_.begin() + begin, captions_.begin() + end);
    return b;
  }

 private:
  std::unique_ptr<InMemorySource> inner_;
  std::vector<std::string> captions_;
};

constexpr int64_t kCtx = 10;

std::vector<std::string> captions(int64_t n) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(i % 5 == 0 ? "ünïcödé caption " + std::to_string(i) : "cap " + std::to_string(i));
  return out;
}

TEST(TextCache, CaptionsAndTokensReachTheShardsTheLoaderAndTheManifest) {
  const int64_t n = 30;
  const std::vector<std::string> caps = captions(n);
  CaptionedSource src(synthetic_source(n), caps);
  EncodeOptions o = small_options(scratch_dir());
  o.context_length = kCtx;
  encode_shards(src, fake_encoder(), o, 0, 1);
  Manifest m = finalize_cache(o.cache_dir, o);
  const lf::ByteTokenizer tok(kCtx);
  const lf::ByteTokenizer::Batch want = tok.encode(caps);
  EXPECT_EQ(m.settings.text.tokenizer, "bytes-v1");
  EXPECT_EQ(m.settings.text.context_length, kCtx);
  EXPECT_EQ(m.captions_truncated, want.truncated);
  EXPECT_GT(want.truncated, 0);
  // The manifest round-trips through its JSON (what readers parse).
  Manifest again = Manifest::parse(m.to_json().dump(), "manifest");
  EXPECT_EQ(again.captions_truncated, m.captions_truncated);
  EXPECT_EQ(again.settings.text.caption_bytes, m.settings.text.caption_bytes);

  for (bool mapped : {true, false}) {
    auto cache = LatentCache::open(o.cache_dir, /*verify=*/true, mapped);
    std::vector<int64_t> idx = {29, 0, 7, 7, 15};
    LatentRows rows = cache->read(idx);
    ASSERT_TRUE(rows.tokens.defined());
    EXPECT_TRUE(rows.tokens.equal(want.tokens.index_select(0, at::tensor(idx, at::kLong)))) << "mapped " << mapped;
    std::vector<std::string> got = cache->read_captions(idx);
    for (size_t i = 0; i < idx.size(); ++i) EXPECT_EQ(got[i], caps[static_cast<size_t>(idx[i])]);
  }
  auto cache = LatentCache::open(o.cache_dir);
  for (bool in_memory : {false, true}) {
    LoaderOptions lo;
    lo.layout = {8, 1, 0, 2};
    lo.seed = 5;
    lo.in_memory = in_memory;
    LatentLoader loader(cache, lo);
    for (int k = 0; k < 5; ++k)
      for (const LatentBatch& b : loader.next().micro)
        EXPECT_TRUE(b.tokens.equal(want.tokens.index_select(0, b.indices))) << "in memory " << in_memory;
  }
  // An uncaptioned cache has no tokens.
  EncodeOptions plain = small_options(scratch_dir());
  auto unc = synthetic_source(12);
  encode_shards(*unc, fake_encoder(), plain, 0, 1);
  finalize_cache(plain.cache_dir, plain);
  EXPECT_FALSE(LatentCache::open(plain.cache_dir)->read({0, 1}).tokens.defined());
}

TEST(TextCache, TheChecksumCoversTheTokensAndTheContextLengthIsChecked) {
  CaptionedSource src(synthetic_source(12), captions(12));
  EncodeOptions o = small_options(scratch_dir());
  o.context_length = kCtx;
  encode_shards(src, fake_encoder(), o, 0, 1);
  const std::string s0 = o.cache_dir + "/" + shard_file_name(0);
  int64_t offset = 0;
  std::string recorded;
  {
    ShardReader r(s0);
    offset = r.data_offset("tokens") + 4 * 3;
    recorded = r.header().sha256;
    EXPECT_EQ(r.compute_checksum(), recorded);
  }
  {
    std::fstream f(s0, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(offset);
    const char c = 'Z';
    f.write(&c, 1);
  }
  EXPECT_NE(ShardReader(s0).compute_checksum(), recorded);
  EXPECT_NE(error_of([&] { finalize_cache(o.cache_dir, o); }).find(s0 + ": checksum mismatch"), std::string::npos);

  EncodeOptions none = small_options(scratch_dir());
  EXPECT_NE(error_of([&] { encode_shards(src, fake_encoder(), none, 0, 1); })
                .find("the data set is captioned (metadata.jsonl) but no context length is set; set model.context_length"),
            std::string::npos);
  EncodeOptions two = small_options(scratch_dir());
  two.context_length = 2;
  EXPECT_NE(error_of([&] { encode_shards(src, fake_encoder(), two, 0, 1); })
                .find("model.context_length is 2, expected 3..4096"),
            std::string::npos);
}

}  // namespace
}  // namespace lf::data
