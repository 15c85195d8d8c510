// samples.h5, the output of `latentforge sample` and the input of `eval`: `images` (N, C, H,
// W) uint8 and `labels` (N) int64 (-1 for unconditional samples), with attributes
// format_version and label_names (JSON list). Readable with h5py in two lines (docs/cli.md).
// The same format holds the resumable parts of a sampling job (samples/parts/chunk-*.h5), with
// extra string attributes naming the job and the part's first sample.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace lf::data {

struct SamplesFile {
  at::Tensor images;  // uint8 [N, C, H, W]
  at::Tensor labels;  // int64 [N]
  std::vector<std::string> label_names;
};

// What a samples file holds, without its images.
struct SamplesInfo {
  int64_t num = 0;
  std::vector<int64_t> image_shape;  // C, H, W
  std::vector<std::string> label_names;
};

// Writes a samples file of `num` images in pieces (at most one piece in memory), under a
// temporary name until commit(): a reader, or a re-run after a kill, sees the whole file or
// none. Not thread-safe.
class SamplesWriter {
 public:
  // `image_shape` is (C, H, W); `attributes` are extra string attributes on the root group.
  // Throws naming the path.
  SamplesWriter(std::string path, int64_t num, std::vector<int64_t> image_shape,
                const std::vector<std::string>& label_names, const std::map<std::string, std::string>& attributes = {});
  // Removes the temporary file unless committed.
  ~SamplesWriter();
  SamplesWriter(const SamplesWriter&) = delete;
  SamplesWriter& operator=(const SamplesWriter&) = delete;

  // Rows [begin, begin + n) of the file: images uint8 [n, C, H, W] and labels [n] (any device).
  void write(int64_t begin, const at::Tensor& images_u8, const at::Tensor& labels);
  // Flushes, fsyncs, renames to the final path and fsyncs its directory. Throws unless every
  // row was written once. `crash_point_name` (crash_point.h) fires before the rename.
  void commit(const char* crash_point_name = nullptr);
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int64_t num_ = 0, written_ = 0;
  std::vector<int64_t> image_shape_;
  int64_t file_ = -1;  // hid_t
  bool committed_ = false;
};

// Writes a whole file atomically (temporary name, fsync, rename). Throws naming the path.
void write_samples_file(const std::string& path, const at::Tensor& images_u8, const at::Tensor& labels,
                        const std::vector<std::string>& label_names);

// Reads and checks shapes and types (bounded sizes: the file is untrusted); throws
// std::invalid_argument naming the file and what is wrong.
SamplesFile read_samples_file(const std::string& path);
// Shapes and label names only (checked as read_samples_file does).
SamplesInfo read_samples_info(const std::string& path);
// Rows [begin, begin + count) (within the file, else std::invalid_argument naming it).
SamplesFile read_samples_range(const std::string& path, int64_t begin, int64_t count);
// A string attribute of the root group, or "" when the file has none of that name.
std::string read_samples_attribute(const std::string& path, const std::string& name);

}  // namespace lf::data
