// safetensors reading and writing (https://github.com/huggingface/safetensors, "Format"):
// 8-byte little-endian header length N, an N-byte JSON header, then the raw little-endian data.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lf::core {

// Tensors by name; std::map keeps the name order stable for writing and hashing.
using TensorMap = std::map<std::string, at::Tensor>;
// The header's "__metadata__": free-form string pairs (the format allows strings only).
using TensorMetadata = std::map<std::string, std::string>;

// Header parsers refuse headers above this size before allocating (the Python package's own
// limit is 100,000,000 bytes as well).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor as the header describes it.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data section
  uint64_t nbytes() const { return end - begin; }
};

// What the header holds, without the data; entries are in name order.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  TensorMetadata metadata;
  uint64_t header_bytes = 0;  // N
  uint64_t file_bytes = 0;    // 8 + N + data section
};

struct SafetensorsContent {
  TensorMap tensors;
  TensorMetadata metadata;
};

// Reads every tensor of `path` into CPU tensors of the stored dtype. Sizes from the file are
// checked before anything is allocated. Blocks on file I/O. Throws std::invalid_argument
// naming the file (and tensor) for a malformed file, std::runtime_error when it cannot be read.
SafetensorsContent load_safetensors(const std::string& path);

// The same, from bytes already in memory; `source` names them in error messages.
SafetensorsContent parse_safetensors(const std::string& bytes, const std::string& source);

// The header of `path` only (for `latentforge inspect`); validates it like load_safetensors.
SafetensorsHeader read_safetensors_header(const std::string& path);

// The same, from bytes already in memory (the fuzz target and tests).
SafetensorsHeader parse_safetensors_header(const std::string& bytes, const std::string& source);

// A table of names, dtypes, shapes and byte sizes, one tensor per line, then the metadata.
std::string describe_safetensors(const SafetensorsHeader& header);

// The file's bytes: tensors made contiguous and moved to CPU, stored largest element size first
// then by name (as the Python package orders them, so every tensor is aligned to its element
// size), the header padded with spaces to a multiple of 8. Deterministic for equal inputs.
// Throws std::invalid_argument naming a tensor whose dtype safetensors cannot hold.
std::string serialize_safetensors(const TensorMap& tensors, const TensorMetadata& metadata = {});

// Writes serialize_safetensors' bytes to `path` atomically (temp file, fsync, rename); blocks
// until they are durable. A crash leaves the previous file or the complete new one.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const TensorMetadata& metadata = {});

// SHA-256 over the tensor content in name order: for each tensor its name, dtype, shape and
// raw bytes (lengths prefixed, so no two different contents share a byte stream). Metadata,
// header padding and data order do not enter, so re-saving the same weights gives the same
// hash. hash_safetensors_file(path) == hash_tensors(load_safetensors(path).tensors).
std::string hash_tensors(const TensorMap& tensors);
// Streams the file (one tensor in memory at a time). Throws as load_safetensors.
std::string hash_safetensors_file(const std::string& path);

// "F32" <-> at::kFloat etc. for F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. Throws
// std::invalid_argument naming `what` (a tensor or key) for anything else.
at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype, const std::string& what);
std::string scalar_to_safetensors_dtype(at::ScalarType type, const std::string& what);

}  // namespace lf::core
