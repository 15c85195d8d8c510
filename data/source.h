// Image sources: the Source interface every dataset offers to encode and VAE training (a
// random-access range of images in [-1, 1], NCHW float, with integer labels), the options that
// choose one, and an in-memory source over tensors.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace lf::data {

// An input file that could not be used; listed in the manifest when skip_bad is on.
struct SkippedInput {
  std::string path;
  std::string reason;
};
nlohmann::json to_json(const std::vector<SkippedInput>& skipped);

// Images [n, C, H, W] float32 in [-1, 1] and labels int64 [n] (all 0 when unlabelled); the
// captions of a captioned source (empty otherwise).
struct SourceBatch {
  at::Tensor images;
  at::Tensor labels;
  std::vector<std::string> captions;
};

// A dataset of equally sized images, addressed by global sample index 0..size()-1. The index
// of an image is a pure function of the input files and options (never of the rank), because
// cache shards and the training order are defined on it.
class Source {
 public:
  virtual ~Source() = default;
  int64_t size() const { return size_; }
  int64_t channels() const { return channels_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  // Number of classes; 0 for an unlabelled dataset (an unconditional model).
  int64_t num_classes() const { return static_cast<int64_t>(label_names_.size()); }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<SkippedInput>& skipped() const { return skipped_; }
  // Whether every image has a caption (an image folder with metadata.jsonl).
  bool captioned() const { return captioned_; }
  // Each image's name (an image folder: its path inside the folder, as metadata.jsonl gives it),
  // in index order; empty for sources without file names.
  virtual std::vector<std::string> item_names() const { return {}; }
  // What the data are, for the manifest: kind, path, split, resolution... Deterministic.
  virtual nlohmann::json description() const = 0;
  // Images [begin, end) (0 <= begin <= end <= size()). Blocks while decoding. Thread-safe for
  // concurrent calls. Throws std::invalid_argument for a bad range and std::runtime_error
  // naming the file when an input cannot be decoded.
  virtual SourceBatch get(int64_t begin, int64_t end) const = 0;

 protected:
  void check_range(int64_t begin, int64_t end) const;
  int64_t size_ = 0, channels_ = 0, height_ = 0, width_ = 0;
  std::vector<std::string> label_names_;
  std::vector<SkippedInput> skipped_;
  bool captioned_ = false;
};

// Which data to open (parsed by launch/ from the config's [data] section).
struct SourceOptions {
  std::string path;                 // IDX directory or image folder; "" = kDefaultIdxDir
  std::string kind = "auto";        // auto | idx | folder (auto: idx if the dir holds IDX files)
  std::string split = "train";      // IDX: train | test (train-* or t10k-* files)
  std::string dataset = "auto";     // IDX label names: auto | fashion-mnist | mnist | generic
  int64_t resolution = 32;          // output side: IDX pads to it, folders resize + crop to it
  int64_t channels = 0;             // folder: 1 (grey) or 3 (RGB); 0 = 1 for IDX, 3 for folders
  bool skip_bad = false;            // skip (and list) unreadable inputs instead of failing
  bool validate = true;             // folder: decode every image at open to find bad ones
  int64_t max_pixels = int64_t{1} << 26;  // folder: refuse images whose header declares more
  double max_aspect = 32.0;               // ...or a longer side / shorter side above this
  std::string background = "white";  // folder: colour under transparent pixels (white, black, R,G,B)
  void validate_options() const;    // throws std::invalid_argument naming the option
  // data.background as RGB; throws std::invalid_argument naming the value.
  std::array<uint8_t, 3> background_rgb() const;
};

// Debian's dataset-fashion-mnist package installs the IDX files here.
constexpr const char* kDefaultIdxDir = "/usr/share/datasets/fashion-mnist";

// Opens the source the options describe. Blocks while reading (IDX) or scanning and
// validating (folders). Throws std::invalid_argument for bad options or an empty dataset,
// std::runtime_error naming the file for unreadable inputs (unless skip_bad).
std::unique_ptr<Source> open_source(const SourceOptions& options);

// A source over images already in memory: uint8 [N,C,H,W] (0..255, scaled to [-1, 1] on get)
// or float [N,C,H,W] already in [-1, 1]. Used for IDX data and by tests.
class InMemorySource : public Source {
 public:
  InMemorySource(at::Tensor images, at::Tensor labels, std::vector<std::string> label_names,
                 nlohmann::json description, std::vector<SkippedInput> skipped = {});
  nlohmann::json description() const override { return description_; }
  SourceBatch get(int64_t begin, int64_t end) const override;
  const at::Tensor& images() const { return images_; }
  const at::Tensor& labels() const { return labels_; }

 private:
  at::Tensor images_, labels_;
  nlohmann::json description_;
};

// uint8 0..255 -> float32 x/127.5 - 1 in [-1, 1] (the scaling of the LDM/DDPM data
// pipelines: ldm/data/base.py `(image/127.5 - 1.0)`).
at::Tensor to_unit_range(const at::Tensor& u8);

}  // namespace lf::data
