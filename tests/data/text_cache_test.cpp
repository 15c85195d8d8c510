// Tests of captions in the latent cache: bytes and tokens as the tokenizer gives them, the
// manifest's text record with the truncation count, the same tokens through memory maps, pread
// and the loader (streaming and in memory), the checksum covering the tokens, and the context
// length validated.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "core/util/tokenizer.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"
#include "data/shard_file.h"
#include "data/text_embeddings.h"
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
  std::vector<std::string> item_names() const override {
    std::vector<std::string> out;
    for (int64_t i = 0; i < size_; ++i) out.push_back("img/" + std::to_string(i) + ".png");
    return out;
  }
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

// Five steps of batches of 8 from the loader, streaming and in memory.
void for_each_loader_batch(const std::string& dir, const std::function<void(const LatentBatch&, bool)>& check) {
  auto cache = LatentCache::open(dir);
  for (bool in_memory : {false, true}) {
    LoaderOptions lo;
    lo.layout = {8, 1, 0, 2};
    lo.seed = 5;
    lo.in_memory = in_memory;
    LatentLoader loader(cache, lo);
    for (int k = 0; k < 5; ++k)
      for (const LatentBatch& b : loader.next().micro) check(b, in_memory);
  }
}

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
  for_each_loader_batch(o.cache_dir, [&](const LatentBatch& b, bool in_memory) {
    EXPECT_TRUE(b.tokens.equal(want.tokens.index_select(0, b.indices))) << "in memory " << in_memory;
  });
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

// Writes an embeddings file with the HDF5 C API: embedding f32 [n, L, D], mask u8 [n, L] and
// `file_name` as fixed-length strings (h5py's test covers variable-length ones), rows in
// reverse order of the images "img/<i>.png". Returns the embeddings in image order.
at::Tensor write_embeddings(const std::string& path, int64_t n, int64_t len, int64_t dim, at::Tensor* mask) {
  at::manual_seed(11);
  at::Tensor e = at::randn({n, len, dim});
  *mask = at::zeros({n, len}, at::kByte);
  for (int64_t i = 0; i < n; ++i) (*mask)[i].narrow(0, 0, 1 + i % len).fill_(1);
  const at::Tensor rev = at::arange(n - 1, -1, -1, at::kLong);
  const at::Tensor fe = e.index_select(0, rev).contiguous(), fm = mask->index_select(0, rev).contiguous();
  H5Id f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  auto put = [&](const char* name, hid_t type, std::vector<hsize_t> dims, const void* data) {
    H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    H5Id ds(H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  };
  const hsize_t un = static_cast<hsize_t>(n), ul = static_cast<hsize_t>(len), ud = static_cast<hsize_t>(dim);
  put("embedding", H5T_NATIVE_FLOAT, {un, ul, ud}, fe.data_ptr());
  put("mask", H5T_NATIVE_UINT8, {un, ul}, fm.data_ptr());
  constexpr size_t kWidth = 16;
  std::vector<char> names(static_cast<size_t>(n) * kWidth, '\0');
  for (int64_t r = 0; r < n; ++r) {
    const std::string s = "img/" + std::to_string(n - 1 - r) + ".png";
    std::copy(s.begin(), s.end(), names.begin() + r * static_cast<int64_t>(kWidth));
  }
  H5Id str(H5Tcopy(H5T_C_S1));
  H5Tset_size(str, kWidth);
  put("file_name", str, {un}, names.data());
  return e;
}

TEST(TextCache, ExternalEmbeddingsReachTheShardsAndTheLoaderAsF16ByFileName) {
  const int64_t n = 30, len = 5, dim = 7;
  CaptionedSource src(synthetic_source(n), captions(n));
  const std::string files = scratch_dir("-files");
  const std::string emb_path = files + "/emb.h5";
  at::Tensor mask;
  const at::Tensor e = write_embeddings(emb_path, n, len, dim, &mask);
  const at::Tensor want = e.to(at::kHalf).to(at::kFloat);  // stored as f16
  EncodeOptions o = small_options(scratch_dir("-cache"));
  o.context_length = kCtx;
  o.text_embeddings = emb_path;
  encode_shards(src, fake_encoder(), o, 0, 1);
  Manifest m = finalize_cache(o.cache_dir, o);
  EXPECT_EQ(m.settings.text.embedding_length, len);
  EXPECT_EQ(m.settings.text.embedding_dim, dim);
  EXPECT_EQ(m.settings.text.embedding_sha256, TextEmbeddingFile(emb_path, "file_name").sha256());
  EXPECT_EQ(Manifest::parse(m.to_json().dump(), "manifest").settings.text.embedding_dim, dim);
  for (bool mapped : {true, false}) {
    auto cache = LatentCache::open(o.cache_dir, /*verify=*/true, mapped);
    std::vector<int64_t> idx = {29, 0, 7, 7, 15};
    const at::Tensor sel = at::tensor(idx, at::kLong);
    LatentRows rows = cache->read(idx);
    EXPECT_TRUE(rows.text_embedding.equal(want.index_select(0, sel))) << "mapped " << mapped;
    EXPECT_TRUE(rows.text_mask.equal(mask.index_select(0, sel))) << "mapped " << mapped;
  }
  for_each_loader_batch(o.cache_dir, [&](const LatentBatch& b, bool in_memory) {
    EXPECT_TRUE(b.text_embedding.equal(want.index_select(0, b.indices))) << "in memory " << in_memory;
    EXPECT_TRUE(b.text_mask.equal(mask.index_select(0, b.indices))) << "in memory " << in_memory;
  });
  // The checksum covers the embeddings; a re-run with another embeddings file is refused
  // before anything is written.
  const std::string s0 = o.cache_dir + "/" + shard_file_name(0);
  {
    ShardReader r(s0);
    const int64_t offset = r.data_offset("text_embedding") + 3;
    const std::string recorded = r.header().sha256;
    std::fstream f(s0, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(offset);
    const char c = 0x55;
    f.write(&c, 1);
    f.close();
    EXPECT_NE(ShardReader(s0).compute_checksum(), recorded);
  }
  at::Tensor mask2;
  write_embeddings(files + "/emb2.h5", n, len, dim + 1, &mask2);
  EncodeOptions other = o;
  other.text_embeddings = files + "/emb2.h5";
  EXPECT_NE(error_of([&] { encode_shards(src, fake_encoder(), other, 0, 1); }).find("text"), std::string::npos);
  // A file without one of the images names it.
  EncodeOptions fewer = small_options(scratch_dir("-fewer"));
  fewer.context_length = kCtx;
  fewer.text_embeddings = files + "/emb3.h5";
  write_embeddings(fewer.text_embeddings, n - 1, len, dim, &mask2);
  EXPECT_NE(error_of([&] { encode_shards(src, fake_encoder(), fewer, 0, 1); })
                .find("no embedding for 1 of the 30 images (dataset 'file_name' holds paths as in the folder's "
                      "metadata.jsonl), e.g. 'img/29.png'"),
            std::string::npos);
}

}  // namespace
}  // namespace lf::data
