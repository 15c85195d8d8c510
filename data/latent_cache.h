// Reading a finished latent cache: open (manifest read and validated with bounded sizes,
// shards cross-checked, checksums verified on request), random-access row reads in large
// contiguous runs, the VAE check, and the summary + full verification `latentforge inspect`
// prints.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "data/manifest.h"

namespace lf::data {

class ShardReader;

// Rows of the cache in the order they were asked for.
struct LatentRows {
  // latent_dataset_names(store, flip) -> [n, c, h, w]: float32, or the stored dtype (float16
  // for f16 caches) when read with as_float = false.
  std::map<std::string, at::Tensor> latents;
  at::Tensor labels;   // int64 [n]
  at::Tensor indices;  // int64 [n], the global sample indices (as stored in the shards)
  at::Tensor tokens;   // int32 [n, context_length] for a captioned cache, else undefined
  // A cache with external caption embeddings: [n, embedding_length, embedding_dim] (float32,
  // or float16 with as_float = false) and the mask uint8 [n, embedding_length] (0/1).
  at::Tensor text_embedding, text_mask;
};

class LatentCache {
 public:
  // Opens `dir` (its manifest.json and shards). With `verify`, every shard file is hashed and
  // compared with the manifest before HDF5 opens it (reads the whole cache; blocks); without,
  // only its size is checked first. Throws std::runtime_error
  // naming the file: a missing/invalid manifest, a shard whose attributes disagree with the
  // manifest, or (verify) a checksum mismatch with the expected and found hash.
  // `memory_map` = false reads rows with pread()/H5Dread in runs instead of from memory maps
  // (for file systems where mmap is slow or unsafe; both give the same rows).
  static std::shared_ptr<LatentCache> open(const std::string& dir, bool verify = true,
                                           bool memory_map = true);
  ~LatentCache();

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  int64_t size() const { return manifest_.num_samples(); }
  // Bytes one sample occupies in the latent datasets (all of them, flip included).
  int64_t sample_bytes() const;

  // Hashes every shard and compares with the manifest; throws on the first mismatch. Shows a
  // progress meter (MB hashed, rate, ETA) on stderr: at the start of `train` this reads the
  // whole cache.
  void verify() const;
  // The same for shard `i` alone (manifest order), so ranks can share the work: throws
  // std::runtime_error naming the shard file, the expected and the found hash.
  void verify_shard(int64_t i) const;
  // Each shard file's size in MB (manifest order; 0 for a missing file), for progress meters.
  std::vector<double> shard_file_mb() const;
  int64_t num_shards() const { return static_cast<int64_t>(manifest_.shards.size()); }
  // Throws std::invalid_argument with vae_mismatch_message() unless the manifest's VAE hash
  // equals `configured_hash`.
  void check_vae(const std::string& configured_hash) const;

  // Reads the rows of global sample `indices` (any order, duplicates allowed). With memory maps
  // each row is copied (and converted from f16 when as_float) straight from the page cache;
  // otherwise rows are grouped by shard and sorted, and nearby rows read as one contiguous run
  // (gaps up to `gap_bytes` per dataset are read and discarded: one large read beats many
  // small ones). Thread-safe; blocks on I/O (page faults, with maps).
  LatentRows read(const std::vector<int64_t>& indices, bool as_float = true,
                  int64_t gap_bytes = 256 << 10) const;
  // read() into caller-owned tensors (as made by allocate_rows(n, as_float)), so a reader can
  // recycle its buffers. The latents' dtype (float32 or stored) selects conversion.
  void read_into(const std::vector<int64_t>& indices, LatentRows& out,
                 int64_t gap_bytes = 256 << 10) const;
  LatentRows allocate_rows(int64_t n, bool as_float) const;
  // Every row, in stored dtype unless as_float (the in-memory mode of the loader).
  LatentRows read_all(bool as_float = false) const;

  // A captioned cache's captions of global samples `indices` (UTF-8, as stored: cut to the
  // cache's caption_bytes). Throws std::invalid_argument for an uncaptioned cache.
  std::vector<std::string> read_captions(const std::vector<int64_t>& indices) const;

  // Multi-line description: source, shapes, store, VAE, scale factor, statistics, labels,
  // shards, skipped inputs, size on disk.
  std::string summary() const;

 private:
  LatentCache() = default;
  ShardReader& shard(int64_t i) const;
  // A shard's datasets in its memory map, resolved once (state 1: mapped, 2: not mappable).
  struct MappedShard {
    std::atomic<int> state{0};
    std::vector<const char*> latent;
    const int64_t* labels = nullptr;
    const int64_t* index = nullptr;
    const int32_t* tokens = nullptr;
    const char* text_embedding = nullptr;
    const uint8_t* text_mask = nullptr;
  };
  const MappedShard& mapped(int64_t i) const;
  std::string dir_;
  Manifest manifest_;
  bool memory_map_ = true;
  mutable std::mutex mu_, map_mu_;
  mutable std::vector<std::unique_ptr<ShardReader>> shards_;
  mutable std::unique_ptr<MappedShard[]> mapped_;
};

// For `latentforge inspect`: summary plus a verification of every shard (no exception for a
// damaged shard: it is reported in the text and `ok` is false). Throws only when the manifest
// itself cannot be read.
struct InspectResult {
  std::string text;
  bool ok = false;
};
InspectResult inspect_cache(const std::string& dir);
// The same for one shard file: its attributes and a recomputed checksum. When the directory's
// manifest lists the file, the whole file's hash is checked against it first, before HDF5
// parses the file (docs/fuzzing.md). Throws std::runtime_error naming the file when it is not a
// shard (or not HDF5).
InspectResult inspect_shard(const std::string& path);

// Checks a shard file against its manifest entry before libhdf5 parses it (docs/fuzzing.md:
// third-party parsers only see bytes this program wrote): the size always (cheap: catches a
// truncated or replaced file), the whole file's SHA-256 when `hash`. Returns whether the hash
// was checked (false for manifests written before file hashes were recorded). Throws
// std::runtime_error naming the file and both values.
bool check_shard_file(const std::string& path, const ManifestShard& entry, bool hash);

}  // namespace lf::data
