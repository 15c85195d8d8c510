// The image-folder source (see image_folder_source.h).
#include "data/image_folder_source.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/util/strings.h"
#include "data/image_transform.h"

namespace lf::data {

namespace fs = std::filesystem;

namespace {

bool hidden(const fs::path& p) {
  std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Image files under `dir` (recursively when `recursive`), sorted by path relative to `dir`.
std::vector<std::string> list_images(const fs::path& dir, bool recursive) {
  std::vector<std::string> rel;
  auto consider = [&](const fs::directory_entry& e) {
    if (e.is_regular_file() && has_image_extension(e.path().string()))
      rel.push_back(fs::relative(e.path(), dir).string());
  };
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
         ++it) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      consider(*it);
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (!hidden(e.path())) consider(e);
  }
  std::sort(rel.begin(), rel.end());
  std::vector<std::string> out;
  for (const auto& r : rel) out.push_back((dir / r).string());
  return out;
}

}  // namespace

ImageFolderSource::ImageFolderSource(const SourceOptions& options) {
  options.validate_options();
  root_ = fs::absolute(options.path).lexically_normal().string();
  if (!root_.empty() && root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (!fs::is_directory(root_))
    throw std::invalid_argument(lf::str("data.source = '", options.path, "' is not a directory"));
  channels_ = options.channels == 0 ? 3 : options.channels;
  height_ = width_ = options.resolution;

  background_ = options.background_rgb();
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  std::vector<std::string> captions;
  const fs::path metadata = fs::path(root_) / "metadata.jsonl";
  captioned_ = fs::exists(metadata);
  if (captioned_) {
    read_metadata(metadata.string(), options.skip_bad, files, labels, captions);
  } else {
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root_))
    if (e.is_directory() && !hidden(e.path())) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  std::vector<std::string> loose = list_images(root_, false);
  if (!classes.empty() && !loose.empty())
    throw std::invalid_argument(lf::str(root_, ": holds both class subfolders (", classes[0],
                                    "...) and images directly in it (", loose[0],
                                    "...); use one layout: class subfolders for labels, or only "
                                    "images for an unlabelled dataset"));
  labelled_ = !classes.empty();
  if (labelled_) {
    for (size_t c = 0; c < classes.size(); ++c) {
      for (auto& f : list_images(fs::path(root_) / classes[c], true)) {
        files.push_back(std::move(f));
        labels.push_back(static_cast<int64_t>(c));
      }
    }
    label_names_ = classes;
  } else {
    files = std::move(loose);
    labels.assign(files.size(), 0);
  }
  }
  if (files.empty())
    throw std::invalid_argument(lf::str(root_, ": no images found (looked for ",
                                    join(image_extensions(), " "), " files",
                                    labelled_ ? " inside the class subfolders" : "", ")"));

  // Find bad inputs before indices are assigned: indices must not depend on which rank
  // happens to decode a file.
  std::vector<std::string> reasons(files.size());
  const bool full = options.validate;
  const int channels = static_cast<int>(channels_);
  limits_.max_pixels = options.max_pixels;
  limits_.max_aspect = options.max_aspect;
  at::parallel_for(0, static_cast<int64_t>(files.size()), 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (full) {
        try {
          decode_image(files[i], channels, limits_, background_.data());
        } catch (const std::runtime_error& err) {
          reasons[i] = std::string(err.what()).substr(files[i].size() + 2);
        } catch (const std::bad_alloc&) {  // within data.max_pixels, not within this machine
          reasons[i] = "out of memory decoding it; lower data.max_pixels to skip such images";
        }
      } else {
        std::string why;
        if (!probe_image(files[i], &why, limits_)) reasons[i] = why;
      }
    }
  });
  for (size_t i = 0; i < files.size(); ++i) {
    if (reasons[i].empty()) {
      files_.push_back(files[i]);
      labels_.push_back(labels[i]);
      if (captioned_) captions_.push_back(captions[i]);
      continue;
    }
    if (!options.skip_bad)
      throw std::runtime_error(lf::str(files[i], ": ", reasons[i],
                                   " (set data.skip_bad = true to skip unreadable or too large "
                                   "images)"));
    skipped_.push_back({files[i], reasons[i]});
  }
  if (files_.empty())
    throw std::invalid_argument(lf::str(root_, ": all ", files.size(), " images are unreadable"));
  size_ = static_cast<int64_t>(files_.size());
}

nlohmann::json ImageFolderSource::description() const {
  nlohmann::json d = {{"kind", "folder"},   {"path", root_},         {"resolution", height_},
                      {"channels", channels_}, {"count", size_},     {"labelled", labelled_},
                      {"classes", label_names_}};
  // Recorded only where it changes the images, so caches of folders without it keep their description.
  if (captioned_) d["captions"] = "metadata.jsonl";
  if (background_ != std::array<uint8_t, 3>{255, 255, 255})
    d["background"] = std::vector<int>{background_[0], background_[1], background_[2]};
  return d;
}

std::vector<std::string> ImageFolderSource::item_names() const {
  fs::path root = fs::path(root_).lexically_normal();
  if (!root.has_filename()) root = root.parent_path();  // "dir/" -> "dir"
  std::vector<std::string> out;
  out.reserve(files_.size());
  for (const auto& f : files_) out.push_back(fs::path(f).lexically_relative(root).string());
  return out;
}

SourceBatch ImageFolderSource::get(int64_t begin, int64_t end) const {
  check_range(begin, end);
  const int64_t n = end - begin, c = channels_, r = height_;
  at::Tensor u8 = at::empty({n, r, r, c}, at::kByte);
  uint8_t* dst = u8.data_ptr<uint8_t>();
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::string& file = files_[begin + i];
      try {
        Image8 im = resize_center_crop(decode_image(file, static_cast<int>(c), limits_, background_.data()), r);
        std::copy(im.pixels.begin(), im.pixels.end(), dst + i * r * r * c);
      } catch (const std::bad_alloc&) {  // within the limits, but not within this machine
        throw std::runtime_error(lf::str(file, ": out of memory decoding and resizing it; lower "
                                               "data.max_pixels to skip such images"));
      }
    }
  });
  at::Tensor labels = at::empty({n}, at::kLong);
  std::copy(labels_.begin() + begin, labels_.begin() + end, labels.data_ptr<int64_t>());
  std::vector<std::string> captions;
  if (captioned_) captions.assign(captions_.begin() + begin, captions_.begin() + end);
  return {to_unit_range(u8.permute({0, 3, 1, 2}).contiguous()), labels, std::move(captions)};
}

void ImageFolderSource::read_metadata(const std::string& path, bool skip_bad, std::vector<std::string>& files,
                                      std::vector<int64_t>& labels, std::vector<std::string>& captions) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(lf::str(path, ": cannot be read"));
  std::vector<std::string> label_text;
  int64_t with_label = 0;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (trim(line).empty()) continue;
    const std::string where = lf::str(path, ":", number);
    std::string problem, file, text, label;
    try {
      if (line.size() > (1u << 20)) throw std::invalid_argument("longer than 1 MiB");
      const nlohmann::json j = nlohmann::json::parse(line);
      if (!j.is_object()) throw std::invalid_argument("not a JSON object");
      if (!j.contains("file_name") || !j["file_name"].is_string())
        throw std::invalid_argument("no \"file_name\" string");
      if (!j.contains("text") || !j["text"].is_string()) throw std::invalid_argument("no \"text\" string (the caption)");
      file = j["file_name"].get<std::string>();
      text = j["text"].get<std::string>();
      if (trim(text).empty()) throw std::invalid_argument("an empty caption");
      if (j.contains("label")) {
        if (!j["label"].is_string() && !j["label"].is_number_integer())
          throw std::invalid_argument("\"label\" is neither a string nor an integer");
        label = j["label"].is_string() ? j["label"].get<std::string>() : std::to_string(j["label"].get<int64_t>());
      }
      const fs::path rel(file);
      bool confined = !file.empty() && rel.is_relative();
      for (const auto& part : rel) confined = confined && part != "..";
      if (!confined) throw std::invalid_argument(lf::str("file_name '", excerpt(file), "' is not a path inside the folder"));
      if (!fs::is_regular_file(fs::path(root_) / rel))
        throw std::invalid_argument(lf::str("file_name '", excerpt(file), "': no such file in ", root_));
    } catch (const std::exception& e) {  // nlohmann's parse errors and the checks above
      problem = e.what();
    }
    if (!problem.empty()) {
      if (!skip_bad)
        throw std::runtime_error(lf::str(where, ": ", problem, " (set data.skip_bad = true to skip bad lines)"));
      skipped_.push_back({where, problem});
      continue;
    }
    files.push_back((fs::path(root_) / file).lexically_normal().string());
    captions.push_back(text);
    label_text.push_back(label);
    with_label += label.empty() ? 0 : 1;
  }
  labelled_ = with_label > 0;
  if (labelled_ && with_label != static_cast<int64_t>(label_text.size()))
    throw std::runtime_error(lf::str(path, ": ", with_label, " of ", label_text.size(),
                                     " lines have a \"label\"; give every line one, or none"));
  if (labelled_) {
    label_names_ = label_text;
    std::sort(label_names_.begin(), label_names_.end());
    label_names_.erase(std::unique(label_names_.begin(), label_names_.end()), label_names_.end());
  }
  for (const std::string& l : label_text)
    labels.push_back(labelled_ ? std::lower_bound(label_names_.begin(), label_names_.end(), l) - label_names_.begin() : 0);
}

}  // namespace lf::data
