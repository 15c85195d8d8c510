// One shard of the latent cache as an HDF5 file: the writer used by encode (rows appended in
// order, per-dataset SHA-256 and latent statistics accumulated on the way) and the reader used
// by finalize, verification and the loader. Layout and checksum rule: docs/cache.md.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/util/sha256.h"
#include "data/cache_format.h"
#include "data/hdf5_util.h"

namespace lf::data {

// Sums over a shard's latents in float64, per latent channel. For stored moments they describe
// the latent z ~ N(mean, exp(logvar)) the trainer draws: sum += mean, sumsq += mean^2 +
// exp(logvar) (E[z^2] = mean^2 + var); for a stored sample, the sample itself. Computed on the
// stored (rounded) values; flipped variants are not included.
struct LatentStats {
  std::vector<int64_t> count;  // elements per channel
  std::vector<double> sum, sumsq;
  void add(const LatentStats& o);
  int64_t total_count() const;
  double total_sum() const;
  double total_sumsq() const;
};

// The attributes of a shard file.
struct ShardHeader {
  int64_t format_version = 0;
  std::string producer;
  int64_t shard_index = -1, begin = 0, count = 0;
  std::string sha256;  // checksum of the datasets (docs/cache.md)
  CacheSettings settings;
};

// Writes one shard to `path` (a temporary name; the caller renames it into place). Rows are
// appended in order by write(); finish() writes statistics and the checksum and closes the
// file. Not thread-safe; blocks on I/O.
class ShardWriter {
 public:
  ShardWriter(std::string path, const CacheSettings& settings, int64_t shard_index,
              int64_t begin, int64_t count);
  ~ShardWriter();
  // Appends the next rows: `latents` maps every name of latent_dataset_names() to a float
  // tensor [n, c, h, w] (converted to the storage dtype here); labels and global indices are
  // int64 [n]; `captions` (n of them) are required exactly when the cache is captioned
  // (settings.text): stored as bytes and tokenised here; `text_embedding` float [n, L, D] and
  // `text_mask` [n, L] exactly when it holds external embeddings (stored as f16 and 0/1 bytes).
  // Throws std::invalid_argument for missing datasets or wrong shapes.
  void write(const std::map<std::string, at::Tensor>& latents, const at::Tensor& labels,
             const at::Tensor& indices, const std::vector<std::string>& captions = {},
             const at::Tensor& text_embedding = {}, const at::Tensor& text_mask = {});
  // Precondition: all `count` rows written. Writes stats + sha256, closes and fsyncs the
  // file. Returns the checksum.
  std::string finish();
  const LatentStats& stats() const { return stats_; }

 private:
  void write_rows(const std::string& name, hid_t type, const void* data, int64_t n,
                  int64_t row_elems, int64_t elem_bytes);
  std::string path_;
  CacheSettings settings_;
  int64_t shard_index_, begin_, count_, written_ = 0;
  H5Id file_, f16_;
  std::map<std::string, H5Id> datasets_;
  std::map<std::string, std::unique_ptr<Sha256>> hashes_;
  std::map<std::string, std::string> dataset_lines_;
  LatentStats stats_;
  int64_t truncated_ = 0;  // captions whose tokens were cut at the context length
  bool finished_ = false;
};

// Opens a shard for reading and keeps the file open. HDF5 calls take h5_mutex(). The data of
// contiguous, unfiltered datasets (all that encode writes) are also reachable without HDF5:
// read_rows() pread()s them at the data's file offset (H5Dget_offset), and mapped_rows() gives
// a pointer into a read-only memory map of the file, so readers need no global lock and no
// copy through a staging buffer. Other layouts fall back to H5Dread.
class ShardReader {
 public:
  explicit ShardReader(std::string path);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;
  const ShardHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  // Recomputes the checksum from the datasets' bytes (reads the whole file).
  std::string compute_checksum();
  // The statistics datasets.
  LatentStats read_stats();
  // Captioned caches: how many of this shard's captions were cut to the context length.
  int64_t read_truncated();
  // Captioned caches: the captions of rows [row, row+n) as UTF-8 strings.
  std::vector<std::string> read_captions(int64_t row, int64_t n);
  // Copies rows [row, row+n) of dataset `name` in its stored type (f16 / f32 / int64) into
  // `dst`, which must hold n * row_bytes(name) bytes. Thread-safe.
  void read_rows(const std::string& name, int64_t row, int64_t n, void* dst);
  int64_t row_bytes(const std::string& name) const;
  // Row 0 of dataset `name` in the file's memory map (rows follow every row_bytes(name)
  // bytes), or nullptr when the dataset is not contiguous or the map failed. Valid while this
  // reader lives; the file must not be truncated meanwhile (that would raise SIGBUS).
  const char* mapped_rows(const std::string& name);
  // File offset of a dataset's contiguous data (for tests that corrupt bytes on purpose).
  int64_t data_offset(const std::string& name);

 private:
  struct Dataset {
    H5Id id, type;
    std::vector<hsize_t> dims;
    int64_t row_bytes = 0;
    int64_t offset = -1;  // file offset of contiguous unfiltered data, else -1 (use HDF5)
  };
  Dataset& dataset(const std::string& name);
  std::string path_;
  H5Id file_;
  int fd_ = -1;
  const char* map_ = nullptr;
  size_t map_size_ = 0;
  ShardHeader header_;
  std::map<std::string, Dataset> datasets_;
};

// The line a dataset contributes to a shard checksum: "<name> <dtype> <d0>x<d1>... <sha256 of
// its bytes>\n". The shard checksum is the SHA-256 of these lines in shard_dataset_names()
// order.
std::string checksum_line(const std::string& name, const std::string& dtype,
                          const std::vector<hsize_t>& dims, const std::string& sha);

}  // namespace lf::data
