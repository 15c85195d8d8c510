// A folder of images as a Source: class subfolders give the labels (sorted names, the mapping
// goes into the manifest); images directly in the folder make an unlabelled dataset; a
// metadata.jsonl in the folder makes a captioned one (Hugging Face's imagefolder layout: one
// JSON object per line, {"file_name": relative path, "text": caption, "label": optional class
// name}). Images are decoded lazily on get(), composited on data.background where they have an
// alpha channel, resized and centre-cropped to the configured resolution.
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
  //
  // Captioned (metadata.jsonl): images in the order of its lines; labels are the sorted distinct
  // "label" values (every line has one, or none does). A line that is not a JSON object, lacks
  // file_name or a non-empty text, names a file outside the folder or a missing or bad image is an
  // error "metadata.jsonl:LINE: ..." (std::runtime_error), or with skip_bad is left out and listed.
  explicit ImageFolderSource(const SourceOptions& options);

  nlohmann::json description() const override;
  SourceBatch get(int64_t begin, int64_t end) const override;
  const std::vector<std::string>& files() const { return files_; }
  // The files' paths relative to the folder, normalised (a/b.png).
  std::vector<std::string> item_names() const override;
  const std::vector<std::string>& captions() const { return captions_; }

 private:
  std::string root_;
  bool labelled_ = false;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> captions_;
  ImageLimits limits_;
  std::array<uint8_t, 3> background_{};
  // Reads metadata.jsonl into files, labels and captions (see the constructor).
  void read_metadata(const std::string& path, bool skip_bad, std::vector<std::string>& files,
                     std::vector<int64_t>& labels, std::vector<std::string>& captions);
};

}  // namespace lf::data
