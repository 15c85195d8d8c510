// Reading a checkpoint part whole or in segments (see checkpoint_tensors.h).
#include "launch/checkpoint_tensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "core/ema.h"
#include "core/util/strings.h"
#include "launch/checkpoint.h"
#include "launch/train_parts.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& where) {
  std::vector<int64_t> shape;
  if (text.empty()) return shape;  // a 0-dim tensor
  for (const std::string& part : split(text, ',')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
    }
    if (used != part.size() || v < 0) throw std::runtime_error(str(where, ": shape '", excerpt(text), "' is not a list of sizes"));
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

std::vector<std::string> checkpoint_part_files(const nlohmann::json& state, const std::string& stem) {
  if (state.contains("shards") && state["shards"].is_object() && state["shards"].contains(stem))
    return state["shards"][stem].get<std::vector<std::string>>();
  return {stem + ".safetensors"};
}

std::string segment_shape_key(const std::string& name) { return "shape:" + name; }

std::string shape_text(at::IntArrayRef shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s;
}

CheckpointPart::CheckpointPart(const std::string& dir, const nlohmann::json& state, const std::string& stem)
    : dir_(dir), stem_(stem) {
  for (const std::string& file : checkpoint_part_files(state, stem)) {
    const std::string path = (fs::path(dir) / file).string();
    const size_t index = paths_.size();
    paths_.push_back(path);
    core::SafetensorsHeader h;
    try {
      h = core::read_safetensors_header(path);
    } catch (const std::exception& e) {
      throw std::runtime_error(e.what());
    }
    const uint64_t data_start = 8 + h.header_bytes;
    for (const auto& e : h.entries) {
      Entry piece;
      piece.dtype_name = e.dtype;
      piece.dtype = core::safetensors_dtype_to_scalar(e.dtype, path + ": " + e.name);
      std::string name;
      int64_t offset = 0;
      if (split_segment_key(e.name, name, offset)) {
        auto it = h.metadata.find(segment_shape_key(name));
        if (it == h.metadata.end())
          throw std::runtime_error(str(path, ": segment ", e.name, " has no '", segment_shape_key(name),
                                       "' in the metadata (not a checkpoint shard written by latentforge?)"));
        piece.shape = parse_shape(it->second, str(path, ": metadata ", it->first));
        if (e.shape.size() != 1)
          throw std::runtime_error(str(path, ": segment ", e.name, " is not 1-D"));
        piece.pieces.push_back(Piece{offset, e.shape[0], index, data_start + e.begin});
      } else {
        name = e.name;
        piece.shape = e.shape;
        piece.pieces.push_back(Piece{0, numel_of(e.shape), index, data_start + e.begin});
      }
      add(name, std::move(piece), index);
    }
  }
  for (auto& [name, e] : entries_) {
    std::sort(e.pieces.begin(), e.pieces.end(), [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
    int64_t covered = 0;
    for (const Piece& p : e.pieces) {
      if (p.offset != covered)
        throw std::runtime_error(str(dir_, ": ", stem_, " tensor ", name, p.offset < covered ? " has overlapping pieces" : " misses elements",
                                     " at element ", std::min(p.offset, covered), " (in ", paths_[p.file],
                                     "); a damaged or mixed set of shard files"));
      covered += p.numel;
    }
    if (covered != numel_of(e.shape))
      throw std::runtime_error(str(dir_, ": ", stem_, " tensor ", name, " holds ", covered, " of its ", numel_of(e.shape),
                                   " elements (a shard file missing from state.json's shards?)"));
  }
}

void CheckpointPart::add(const std::string& name, Entry piece, size_t file) {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    entries_.emplace(name, std::move(piece));
    return;
  }
  if (it->second.dtype != piece.dtype || it->second.shape != piece.shape)
    throw std::runtime_error(str(paths_[file], ": tensor ", name, " is ", piece.dtype_name, " [", shape_text(piece.shape),
                                 "] here but ", it->second.dtype_name, " [", shape_text(it->second.shape),
                                 "] in another shard file"));
  it->second.pieces.push_back(piece.pieces.front());
}

const CheckpointPart::Entry& CheckpointPart::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::runtime_error(str(dir_, ": the checkpoint's ", stem_, " has no tensor ", name));
  return it->second;
}

std::vector<std::string> CheckpointPart::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : entries_) out.push_back(k);
  return out;
}

std::vector<int64_t> CheckpointPart::shape(const std::string& name) const { return entry(name).shape; }

at::Tensor CheckpointPart::read(const std::string& name, int64_t offset, int64_t numel) const {
  const Entry& e = entry(name);
  const int64_t total = numel_of(e.shape);
  if (offset < 0 || numel < 0 || offset + numel > total)
    throw std::runtime_error(str(dir_, ": elements [", offset, ", ", offset + numel, ") of ", stem_, " tensor ", name,
                                 " asked for, it has ", total, " (a checkpoint of another model?)"));
  at::Tensor out = at::empty({numel}, at::TensorOptions().dtype(e.dtype));
  auto* dst = static_cast<char*>(out.data_ptr());
  const int64_t es = static_cast<int64_t>(out.element_size());
  for (const Piece& p : e.pieces) {
    const int64_t lo = std::max(offset, p.offset), hi = std::min(offset + numel, p.offset + p.numel);
    if (lo >= hi) continue;
    std::ifstream f(paths_[p.file], std::ios::binary);
    f.seekg(static_cast<std::streamoff>(p.position + static_cast<uint64_t>((lo - p.offset) * es)));
    f.read(dst + (lo - offset) * es, (hi - lo) * es);
    if (!f) throw std::runtime_error(str(paths_[p.file], ": cannot read ", name, " (truncated or unreadable)"));
  }
  return out;
}

at::Tensor CheckpointPart::read(const std::string& name) const {
  const Entry& e = entry(name);
  return read(name, 0, numel_of(e.shape)).view(e.shape);
}

core::TensorMap CheckpointPart::consolidate() const {
  core::TensorMap out;
  for (const auto& [name, e] : entries_) out[name] = read(name);
  return out;
}

core::TensorMap CheckpointPart::read_like(const std::vector<std::pair<std::string, at::Tensor>>& wanted) const {
  core::TensorMap out;
  for (const auto& [key, like] : wanted) {
    std::string name;
    int64_t offset = 0;
    if (split_segment_key(key, name, offset)) {
      out[key] = read(name, offset, like.numel());
    } else if (contains(key)) {
      out[key] = read(key);
    }  // a missing key is the loader's to name (AdamW/EMA::load_state list every one)
  }
  return out;
}

core::TensorMap read_checkpoint_weights(const std::string& dir, bool ema) {
  core::TensorMap t = CheckpointPart(dir, CheckpointManager::read_state(dir), ema ? "ema" : "model").consolidate();
  if (ema) t.erase(core::EMA::kNumUpdatesKey);
  return t;
}

}  // namespace lf::launch
