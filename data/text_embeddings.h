// Caption embeddings computed elsewhere (a user's frozen CLIP or T5 run), read from an HDF5 file
// for encode (matched to the images by file name) and for sample (prompts). Layout (docs/cache.md,
// "External text embeddings", with the h5py lines that write it):
//   embedding  float (f16, f32 or f64) [N, L, D]   the per-token embeddings
//   mask       integer (u8 ...)       [N, L]      non-zero: a token (every row has one)
//   file_name  string                 [N]         encode: the image's path in its folder
//   text       string                 [N]         sample: the prompt (optional for encode)
// Strings may be variable-length (h5py's string_dtype()) or fixed-length, UTF-8 or ASCII.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "data/hdf5_util.h"

namespace lf::data {

// Bounds on what an untrusted file may declare (docs/design.md, invariant 5).
constexpr int64_t kMaxEmbeddingDim = 65536;

class TextEmbeddingFile {
 public:
  // Opens `path` and checks the layout; `key` is the string dataset that names the rows
  // ("file_name" or "text"; repeats are allowed here, prompts may repeat). Throws
  // std::invalid_argument naming the file, the dataset and what was expected (a missing
  // dataset, a wrong rank or type, mismatched row counts).
  TextEmbeddingFile(std::string path, const std::string& key);
  const std::string& path() const { return path_; }
  int64_t size() const { return n_; }
  int64_t length() const { return length_; }  // L
  int64_t dim() const { return dim_; }        // D
  // The key dataset's strings, in row order.
  const std::vector<std::string>& keys() const { return keys_; }
  // The `text` dataset's strings when the file has one (else empty).
  std::vector<std::string> texts();
  // Rows `rows` (each in [0, size())): embeddings float32 [n, L, D] and mask uint8 [n, L] (0/1).
  // Throws std::runtime_error naming the file and row when a mask row has no token set or holds
  // a value other than 0 and 1, or an embedding is not finite.
  void read(const std::vector<int64_t>& rows, at::Tensor* embeddings, at::Tensor* mask);
  // SHA-256 of the file's bytes (binds a cache to the embeddings it was made from).
  std::string sha256() const;

 private:
  std::vector<std::string> read_strings(const std::string& name);
  std::string path_;
  H5Id file_, embedding_, mask_;
  int64_t n_ = 0, length_ = 0, dim_ = 0;
  std::vector<std::string> keys_;
};

}  // namespace lf::data
