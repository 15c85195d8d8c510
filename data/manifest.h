// manifest.json of a latent cache: what the cache holds and how it was made (source, shapes,
// dtype, VAE hash and config, scale factor, label names, per-shard counts and checksums,
// skipped inputs). Written atomically by finalize; read with bounded sizes by LatentCache.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/cache_format.h"

namespace lf::data {

struct ManifestShard {
  std::string file;  // "shard-00000.h5", relative to the cache directory
  int64_t begin = 0, count = 0;
  std::string sha256;  // the shard's checksum of its datasets (docs/cache.md)
  // SHA-256 and size of the whole file as finalize saw it: checked before HDF5 opens the file,
  // so libhdf5 only ever parses bytes this program wrote. Absent ("", -1) in manifests written
  // before they were recorded; such shards are opened unchecked.
  std::string file_sha256;
  int64_t bytes = -1;
};

struct Manifest {
  int64_t format_version = kCacheFormatVersion;
  std::string producer;
  CacheSettings settings;  // source, shapes, store, dtype, flip, labels, skipped, VAE
  double scale_factor = 1.0;
  std::string scale_factor_mode;  // "auto" (1/std from the shards' statistics) or "given"
  // Statistics of the latent z (see LatentStats), per channel and overall.
  std::vector<double> channel_mean, channel_std;
  double latent_mean = 0, latent_std = 0;
  std::vector<ManifestShard> shards;
  int64_t captions_truncated = 0;  // captioned caches: captions cut to the context length

  int64_t num_samples() const { return settings.num_samples; }
  int64_t num_classes() const { return static_cast<int64_t>(settings.label_names.size()); }
  nlohmann::json to_json() const;
  // Validates every field and bound (shard ranges tile [0, num_samples) in order); throws
  // std::runtime_error naming `where` and the field.
  static Manifest from_json(const nlohmann::json& j, const std::string& where);
  // Parses manifest text (bounded: kMaxManifestBytes, nesting depth, duplicate keys); `where`
  // names it in errors (std::runtime_error).
  static Manifest parse(const std::string& text, const std::string& where);
  // Reads and parses `path`, refusing files over kMaxManifestBytes.
  static Manifest read(const std::string& path);
};

}  // namespace lf::data
