// The latent cache's on-disk vocabulary, shared by the writer (encode), finalize and the
// reader: store kinds and dtypes, file and dataset names, and CacheSettings — everything that
// must agree between every shard of a cache and its manifest. docs/cache.md is the prose
// description of the format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/util/enum_table.h"
#include "core/util/json.h"

namespace lf::data {

// Format of manifest.json and of the shard attributes; bump on incompatible change.
constexpr int64_t kCacheFormatVersion = 1;
constexpr const char* kManifestName = "manifest.json";
// Bounds for fields read from untrusted files (docs/design.md, invariant 5).
constexpr int64_t kMaxShards = 1'000'000;
constexpr int64_t kMaxSamples = int64_t{1} << 40;
constexpr int64_t kMaxLatentElements = int64_t{1} << 24;  // per sample, per dataset
constexpr int64_t kMaxManifestBytes = int64_t{256} << 20;
constexpr int64_t kMaxClasses = int64_t{1} << 20;
// JSON attributes of a shard (its settings) are bounded like the manifest.
constexpr int64_t kMaxSettingsBytes = int64_t{64} << 20;

// What a shard holds per sample: the posterior moments (mean, logvar) of the VAE encoder, so
// the trainer draws a fresh latent per epoch, or one latent sampled at encode time.
enum class StoreKind { kMoments, kSample };
// The storage dtype of the latent datasets.
enum class StoreDType { kF16, kF32 };

const EnumTable<StoreKind>& store_kinds();    // "moments" | "sample"
const EnumTable<StoreDType>& store_dtypes();  // "f16" | "f32"
inline const std::string& to_string(StoreKind k) { return store_kinds().name(k); }
inline const std::string& to_string(StoreDType d) { return store_dtypes().name(d); }
int64_t dtype_bytes(StoreDType d);

// "shard-00042.h5". Shard i holds global samples [i*S, min((i+1)*S, N)).
std::string shard_file_name(int64_t shard);
int64_t num_shards(int64_t num_samples, int64_t shard_size);

// The latent datasets of a shard, in checksum order: moments -> mean, logvar (then
// mean_flip, logvar_flip when flip); sample -> latent (then latent_flip).
std::vector<std::string> latent_dataset_names(StoreKind store, bool flip);
struct CacheSettings;
// Every dataset of a shard, in checksum order: the latent ones, labels, index, for a captioned
// cache the text ones (caption, tokens, text_truncated, and with external embeddings
// text_embedding, text_mask), then the statistics (stats_count, stats_sum, stats_sumsq,
// stats_overall).
std::vector<std::string> shard_dataset_names(const CacheSettings& s);

// The captions of a captioned cache: each as UTF-8 bytes in a fixed-width row of
// `caption_bytes` (zero-padded; longer ones are cut at a character boundary), and tokenised by
// `tokenizer` (core/util/tokenizer.h) to `context_length` tokens. Absent (context_length 0) for
// uncaptioned data; a cache made from captions records them in the manifest as "text".
// A cache may also hold each caption's embedding computed elsewhere (encode's
// data.text_embeddings, data/text_embeddings.h): `embedding_length` x `embedding_dim` values
// (f16) and a mask of `embedding_length` bytes per row, from the file whose SHA-256 is
// `embedding_sha256`.
struct TextSettings {
  std::string tokenizer;
  int64_t context_length = 0;
  int64_t caption_bytes = 0;
  int64_t embedding_length = 0, embedding_dim = 0;
  std::string embedding_sha256;
  bool enabled() const { return context_length > 0; }
  bool external() const { return embedding_dim > 0; }
  // Bytes per caption row for a context length: room for every byte the tokens can hold and
  // then some, so an over-long caption is still visible in full to `inspect` and eval.
  static int64_t caption_bytes_for(int64_t context_length);
};
constexpr int64_t kMaxContextLength = 4096;

// Everything that must be equal across the shards of one cache (and between a cache and a
// re-run of encode into it).
struct CacheSettings {
  StoreKind store = StoreKind::kMoments;
  StoreDType dtype = StoreDType::kF16;
  bool flip = false;
  int64_t shard_size = 0;
  int64_t num_samples = 0;
  std::vector<int64_t> image_shape;   // [C, H, W]
  std::vector<int64_t> latent_shape;  // [c, h, w]
  nlohmann::json source;              // Source::description()
  std::vector<std::string> label_names;
  TextSettings text;                  // captioned data only
  nlohmann::json skipped = nlohmann::json::array();  // [{path, reason}]
  std::string vae_sha256;
  nlohmann::json vae_config = nlohmann::json::object();

  nlohmann::json to_json() const;
  nlohmann::json text_json() const;  // the "text" object (tokenizer, context_length, caption_bytes)
  // Parses and bounds-checks; throws std::runtime_error naming `where` and the bad field.
  static CacheSettings from_json(const nlohmann::json& j, const std::string& where);
  // The same from the fields of a larger object: the shard attribute's layout (vae_sha256,
  // vae_config) or, with manifest_layout, the manifest's (vae.sha256, vae.config). Errors are
  // f's kind and name the field by its path in f's document.
  static CacheSettings from_fields(const lf::JsonFields& f, bool manifest_layout);
  // "" when equal, else the first differing field as "field: A vs B" (values shortened).
  std::string difference(const CacheSettings& other) const;
};

}  // namespace lf::data
