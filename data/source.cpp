// The Source interface's shared parts, the in-memory source and the factory (see source.h).
#include "data/source.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "core/util/strings.h"
#include "data/idx_source.h"
#include "data/image_folder_source.h"

namespace lf::data {

namespace fs = std::filesystem;

nlohmann::json to_json(const std::vector<SkippedInput>& skipped) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : skipped) out.push_back({{"path", s.path}, {"reason", s.reason}});
  return out;
}

void Source::check_range(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > size_)
    throw std::invalid_argument(lf::str("Source::get: range [", begin, ", ", end,
                                    ") is outside the dataset of ", size_, " images"));
}

void SourceOptions::validate_options() const {
  if (kind != "auto" && kind != "idx" && kind != "folder")
    throw std::invalid_argument(lf::str("source kind is '", kind, "', expected auto, idx or folder"));
  if (split != "train" && split != "test")
    throw std::invalid_argument(lf::str("data.split is '", split, "', expected train or test"));
  if (dataset != "auto" && dataset != "fashion-mnist" && dataset != "mnist" &&
      dataset != "generic")
    throw std::invalid_argument(lf::str("IDX label set is '", dataset,
                                    "', expected auto, fashion-mnist, mnist or generic"));
  if (resolution < 1 || resolution > 8192)
    throw std::invalid_argument(lf::str("data.image_size is ", resolution, ", expected 1..8192"));
  if (max_pixels < 1)
    throw std::invalid_argument(lf::str("data.max_pixels is ", max_pixels, ", expected >= 1"));
  if (!(max_aspect >= 1.0))
    throw std::invalid_argument(lf::str("data.max_aspect is ", max_aspect, ", expected >= 1"));
  background_rgb();
  if (channels != 0 && channels != 1 && channels != 3)
    throw std::invalid_argument(lf::str("image channels ", channels, ": expected 1 (data.color = gray) or 3 (rgb), or 0 for",
                                    " the default: 1 for IDX, 3 for folders"));
}

std::array<uint8_t, 3> SourceOptions::background_rgb() const {
  if (background == "white") return {255, 255, 255};
  if (background == "black") return {0, 0, 0};
  const std::vector<std::string> parts = lf::split(background, ',');
  std::array<uint8_t, 3> rgb{};
  bool ok = parts.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) {
    const std::string t = trim(parts[i]);
    char* end = nullptr;
    const long v = std::strtol(t.c_str(), &end, 10);
    ok = !t.empty() && *end == '\0' && v >= 0 && v <= 255;
    if (ok) rgb[i] = static_cast<uint8_t>(v);
  }
  if (!ok)
    throw std::invalid_argument(lf::str("data.background = '", background,
                                        "': expected white, black or R,G,B with each in 0..255"));
  return rgb;
}

std::unique_ptr<Source> open_source(const SourceOptions& options) {
  options.validate_options();
  SourceOptions o = options;
  if (o.path.empty()) o.path = kDefaultIdxDir;
  if (!fs::is_directory(o.path))
    throw std::invalid_argument(lf::str("data.source = '", o.path, "' is not a directory",
                                    o.path == kDefaultIdxDir
                                        ? " (install Debian's dataset-fashion-mnist package or "
                                          "set data.source)"
                                        : ""));
  std::string kind = o.kind;
  if (kind == "auto") kind = idx_files_present(o.path) ? "idx" : "folder";
  if (kind == "idx") return open_idx_source(o);
  return std::make_unique<ImageFolderSource>(o);
}

at::Tensor to_unit_range(const at::Tensor& u8) {
  return u8.to(at::kFloat).div_(127.5).sub_(1.0);
}

InMemorySource::InMemorySource(at::Tensor images, at::Tensor labels,
                               std::vector<std::string> label_names, nlohmann::json description,
                               std::vector<SkippedInput> skipped)
    : images_(std::move(images)), labels_(std::move(labels)), description_(std::move(description)) {
  TORCH_CHECK(images_.dim() == 4, "InMemorySource: images must be [N,C,H,W], got ",
              images_.sizes());
  TORCH_CHECK(images_.scalar_type() == at::kByte || images_.scalar_type() == at::kFloat,
              "InMemorySource: images must be uint8 or float32, got ", images_.scalar_type());
  TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == images_.size(0),
              "InMemorySource: labels must be [N] with N = ", images_.size(0), ", got ",
              labels_.sizes());
  images_ = images_.contiguous();
  labels_ = labels_.to(at::kLong).contiguous();
  size_ = images_.size(0);
  channels_ = images_.size(1);
  height_ = images_.size(2);
  width_ = images_.size(3);
  label_names_ = std::move(label_names);
  skipped_ = std::move(skipped);
}

SourceBatch InMemorySource::get(int64_t begin, int64_t end) const {
  check_range(begin, end);
  at::Tensor im = images_.narrow(0, begin, end - begin);
  im = im.scalar_type() == at::kByte ? to_unit_range(im) : im.clone();
  SourceBatch out;
  out.images = im;
  out.labels = labels_.narrow(0, begin, end - begin).clone();
  return out;
}

}  // namespace lf::data
