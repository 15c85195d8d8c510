// Cache vocabulary and settings (see cache_format.h).
#include "data/cache_format.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "core/util/tokenizer.h"
#include "core/util/checked.h"
#include "core/util/strings.h"

namespace lf::data {

const EnumTable<StoreKind>& store_kinds() {
  static const EnumTable<StoreKind> table = {{"moments", StoreKind::kMoments}, {"sample", StoreKind::kSample}};
  return table;
}

const EnumTable<StoreDType>& store_dtypes() {
  static const EnumTable<StoreDType> table = {{"f16", StoreDType::kF16}, {"f32", StoreDType::kF32}};
  return table;
}

int64_t dtype_bytes(StoreDType d) { return d == StoreDType::kF16 ? 2 : 4; }

std::string shard_file_name(int64_t shard) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld.h5", static_cast<long long>(shard));
  return buf;
}

int64_t num_shards(int64_t num_samples, int64_t shard_size) {
  return shard_size > 0 ? (num_samples + shard_size - 1) / shard_size : 0;
}

std::vector<std::string> latent_dataset_names(StoreKind store, bool flip) {
  std::vector<std::string> base =
      store == StoreKind::kMoments ? std::vector<std::string>{"mean", "logvar"}
                                   : std::vector<std::string>{"latent"};
  std::vector<std::string> out = base;
  if (flip)
    for (const auto& b : base) out.push_back(b + "_flip");
  return out;
}

std::vector<std::string> shard_dataset_names(const CacheSettings& s) {
  auto out = latent_dataset_names(s.store, s.flip);
  out.push_back("labels");
  out.push_back("index");
  if (s.text.enabled())
    for (const char* n : {"caption", "tokens", "text_truncated"}) out.push_back(n);
  if (s.text.external())
    for (const char* n : {"text_embedding", "text_mask"}) out.push_back(n);
  for (const char* n : {"stats_count", "stats_sum", "stats_sumsq", "stats_overall"})
    out.push_back(n);
  return out;
}

int64_t TextSettings::caption_bytes_for(int64_t context_length) {
  return std::max<int64_t>(256, 4 * context_length);
}

nlohmann::json CacheSettings::to_json() const {
  nlohmann::json j = {{"store", to_string(store)},     {"dtype", to_string(dtype)},
                      {"flip", flip},                  {"shard_size", shard_size},
                      {"num_samples", num_samples},    {"image_shape", image_shape},
                      {"latent_shape", latent_shape},  {"source", source},
                      {"label_names", label_names},    {"skipped", skipped},
                      {"vae_sha256", vae_sha256},      {"vae_config", vae_config}};
  if (text.enabled()) j["text"] = text_json();
  return j;
}

nlohmann::json CacheSettings::text_json() const {
  nlohmann::json j = {{"tokenizer", text.tokenizer},
                      {"context_length", text.context_length},
                      {"caption_bytes", text.caption_bytes}};
  if (text.external())
    j["embedding"] = {{"length", text.embedding_length}, {"dim", text.embedding_dim}, {"sha256", text.embedding_sha256}};
  return j;
}

CacheSettings CacheSettings::from_json(const nlohmann::json& j, const std::string& where) {
  return from_fields(lf::JsonFields(j, where, "", lf::ErrorKind::kEnvironment), false);
}

CacheSettings CacheSettings::from_fields(const lf::JsonFields& f, bool manifest_layout) {
  CacheSettings s;
  const std::string store = f.string("store", 64), dtype = f.string("dtype", 64);
  if (!store_kinds().contains(store))
    f.fail("store", lf::str("is \"", lf::excerpt(store), "\", expected one of ",
                            lf::join(store_kinds().names(), ", ")));
  if (!store_dtypes().contains(dtype))
    f.fail("dtype", lf::str("is \"", lf::excerpt(dtype), "\", expected one of ",
                            lf::join(store_dtypes().names(), ", ")));
  s.store = store_kinds().parse(store, "store");
  s.dtype = store_dtypes().parse(dtype, "dtype");
  s.flip = f.boolean("flip");
  s.num_samples = f.integer("num_samples", 1, kMaxSamples);
  s.shard_size = f.integer("shard_size", 1, kMaxSamples);
  if (num_shards(s.num_samples, s.shard_size) > kMaxShards)
    f.fail("shard_size", lf::str("is ", s.shard_size, ", which makes more than ", kMaxShards,
                                 " shards of the ", s.num_samples, " samples"));
  auto shape = [&](const char* key) {
    std::vector<int64_t> v = f.integers(key, 3, 1, kMaxLatentElements);
    int64_t n = 0;
    if (v.size() != 3 || !lf::bounded_product(v, kMaxLatentElements, &n))
      f.fail(key, lf::str("is ", lf::json_excerpt(f.value(key)), ", expected [C, H, W] with at most ",
                          kMaxLatentElements, " elements"));
    return v;
  };
  s.image_shape = shape("image_shape");
  s.latent_shape = shape("latent_shape");
  s.source = f.value("source");
  s.label_names = f.strings("label_names", kMaxClasses, 1024);
  const nlohmann::json& skipped = f.array("skipped", static_cast<size_t>(kMaxSamples));
  for (size_t i = 0; i < skipped.size(); ++i) {
    const lf::JsonFields e = f.element("skipped", i);
    e.string("path", 1 << 16);
    e.string("reason", 1 << 16);
  }
  s.skipped = skipped;
  if (f.has("text")) {
    const lf::JsonFields t = f.object("text");
    s.text.tokenizer = t.string("tokenizer", 64);
    s.text.context_length = t.integer("context_length", 3, kMaxContextLength);
    s.text.caption_bytes = t.integer("caption_bytes", 1, 4 * kMaxContextLength);
    if (s.text.tokenizer != lf::ByteTokenizer::kName)
      t.fail("tokenizer", lf::str("is \"", lf::excerpt(s.text.tokenizer), "\", this build knows \"",
                                  lf::ByteTokenizer::kName, "\""));
    if (s.text.caption_bytes != TextSettings::caption_bytes_for(s.text.context_length))
      t.fail("caption_bytes", lf::str("is ", s.text.caption_bytes, ", expected ",
                                      TextSettings::caption_bytes_for(s.text.context_length),
                                      " for context_length ", s.text.context_length));
    if (t.has("embedding")) {
      const lf::JsonFields e = t.object("embedding");
      s.text.embedding_length = e.integer("length", 1, kMaxContextLength);
      s.text.embedding_dim = e.integer("dim", 1, 65536);
      s.text.embedding_sha256 = e.string("sha256", 128);
      if (s.text.embedding_length * s.text.embedding_dim > kMaxLatentElements)
        e.fail("dim", lf::str("is ", s.text.embedding_dim, ": ", s.text.embedding_length, " x ", s.text.embedding_dim,
                              " values per caption, more than ", kMaxLatentElements));
    }
  }
  if (manifest_layout) {
    const lf::JsonFields vae = f.object("vae");
    s.vae_sha256 = vae.string("sha256", 128);
    s.vae_config = vae.value("config");
  } else {
    s.vae_sha256 = f.string("vae_sha256", 128);
    s.vae_config = f.value("vae_config");
  }
  return s;
}

std::string CacheSettings::difference(const CacheSettings& other) const {
  nlohmann::json a = to_json(), b = other.to_json();
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (b.contains(it.key()) && b[it.key()] == it.value()) continue;
    auto shorten = [](const nlohmann::json& v) { return lf::json_excerpt(v, 200); };
    return lf::str(it.key(), ": ", shorten(it.value()), " vs ",
               b.contains(it.key()) ? shorten(b[it.key()]) : std::string("(absent)"));
  }
  return "";
}

}  // namespace lf::data
