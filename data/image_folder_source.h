// A folder of images as a Source: class subfolders give the labels (sorted names, the mapping
// goes into the manifest); images directly in the folder make an unlabelled dataset. Images
// are decoded lazily on get(), resized and centre-cropped to the configured resolution.
#pragma once
#include <string>
#include <vector>

#include "data/image_transform.h"
#include "data/source.h"

namespace lf::data {

class ImageFolderSource : public Source {
 public:
  // Scans options.path. Layout: either class subfolders (each searched recursively; hidden
  // entries and files without an image extension are ignored) or image files directly in the
  // folder (unlabelled: labels all 0, num_classes() == 0) — not both. Order: classes by name,
  // then files by relative path (byte order), so indices never depend on the file system's
  // listing order. With options.validate every image is decoded once here (in parallel) so
  // that bad files are found before indices are assigned; otherwise only headers are checked.
  // A bad file (undecodable; a GIF, TGA, PSD, HDR or PIC; a header declaring more than
  // options.max_pixels or a longer aspect than options.max_aspect) throws std::runtime_error
  // "<file>: <reason>", or with skip_bad is left out and listed in skipped(). Throws
  // std::invalid_argument when no image remains.
  explicit ImageFolderSource(const SourceOptions& options);

  nlohmann::json description() const override;
  SourceBatch get(int64_t begin, int64_t end) const override;
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::string root_;
  bool labelled_ = false;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  ImageLimits limits_;
};

}  // namespace lf::data
