// The tensors of a checkpoint, whether one file holds them whole or several hold them in
// segments (docs/design.md, "Sharded checkpoints").
//
// A checkpoint keeps each part — "model", "ema", "optimizer" (and a VAE's "disc",
// "disc_optimizer") — either in STEM.safetensors with whole tensors, or, written by a sharded
// run (format_version 2, dist.shard_optimizer), in the files state.json lists under
// "shards"/STEM, one per rank. A sharded file holds segments under "NAME@OFFSET": a 1-D run of
// elements of tensor NAME starting at element OFFSET of its flattened form, with NAME's shape in
// the file's metadata under "shape:NAME" (comma-separated), plus whole tensors (buffers, step
// counters) under their plain names. The layout depends on neither the number of ranks nor the
// gradient buckets that wrote it: a reader asks for any range of any tensor and gets it from
// whichever pieces hold it, so a checkpoint resumes on another world size (resharding) and
// `sample`, `eval`, `inspect` and `export` read both layouts alike.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"

namespace lf::launch {

// The files of part `stem` that `state` (a checkpoint's state.json) names: its "shards" entry,
// else STEM.safetensors.
std::vector<std::string> checkpoint_part_files(const nlohmann::json& state, const std::string& stem);

// The metadata key of a segmented tensor's shape, and its value.
std::string segment_shape_key(const std::string& name);
std::string shape_text(at::IntArrayRef shape);

class CheckpointPart {
 public:
  // Reads the headers of the part's files (not their data). Throws std::runtime_error naming the
  // file and tensor when a file is unreadable, a segment has no shape, pieces overlap or leave a
  // gap, or two files disagree on a tensor's dtype or shape.
  CheckpointPart(const std::string& dir, const nlohmann::json& state, const std::string& stem);

  const std::string& stem() const { return stem_; }
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<int64_t> shape(const std::string& name) const;

  // Elements [offset, offset + numel) of the flattened tensor `name`, 1-D (only the bytes of
  // the range are read).
  at::Tensor read(const std::string& name, int64_t offset, int64_t numel) const;
  // The whole tensor in its shape.
  at::Tensor read(const std::string& name) const;
  // Every tensor whole: what STEM.safetensors of an unsharded checkpoint holds.
  core::TensorMap consolidate() const;
  // For each wanted key, the tensor `like` asks for: a segment "NAME@OFFSET" reads that range
  // of NAME (as many elements as the wanted tensor has), a plain name the whole tensor. For a
  // sharded run's optimizer and EMA (AdamW/EMA::state() of segments) from either layout.
  core::TensorMap read_like(const std::vector<std::pair<std::string, at::Tensor>>& wanted) const;

 private:
  struct Piece {
    int64_t offset = 0, numel = 0;  // in elements of the flattened tensor
    size_t file = 0;
    uint64_t position = 0;          // of its first byte in the file
  };
  struct Entry {
    std::vector<int64_t> shape;
    at::ScalarType dtype = at::kFloat;
    std::string dtype_name;
    std::vector<Piece> pieces;  // sorted by offset, covering [0, numel) exactly once
  };
  void add(const std::string& name, Entry piece_entry, size_t file);
  const Entry& entry(const std::string& name) const;

  std::string dir_, stem_;
  std::vector<std::string> paths_;
  std::map<std::string, Entry> entries_;
};

// The model's weights in checkpoint `dir` (its EMA's with `ema`, without the EMA's update
// counter), whole, from either layout. Reads state.json; does not verify the checksums.
core::TensorMap read_checkpoint_weights(const std::string& dir, bool ema);

}  // namespace lf::launch
