// samples.h5, the output of `latentforge sample` and the input of `eval`: `images` (N, C, H,
// W) uint8 and `labels` (N) int64 (-1 for unconditional samples), with attributes
// format_version and label_names (JSON list). Readable with h5py in two lines (docs/cli.md).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace lf::data {

struct SamplesFile {
  at::Tensor images;  // uint8 [N, C, H, W]
  at::Tensor labels;  // int64 [N]
  std::vector<std::string> label_names;
};

// Writes atomically (temporary name, fsync, rename). Throws naming the path.
void write_samples_file(const std::string& path, const at::Tensor& images_u8, const at::Tensor& labels,
                        const std::vector<std::string>& label_names);

// Reads and checks shapes and types (bounded sizes: the file is untrusted); throws
// std::invalid_argument naming the file and what is wrong.
SamplesFile read_samples_file(const std::string& path);

}  // namespace lf::data
