// PNG writing (stb_image_write) for sample grids and debugging images: a tensor grid of
// images in [-1, 1] becomes one PNG, written atomically.
#pragma once
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace lf {

// Encodes `image` (uint8, [C,H,W] with C = 1, 3 or 4, on any device) as PNG bytes.
// Throws std::invalid_argument naming the shape or dtype when it is not such an image.
std::string encode_png(const at::Tensor& image);

// Writes encode_png(image) to `path` atomically (temp file + rename). Blocks until on disk.
void write_png(const std::string& path, const at::Tensor& image);

// Tiles images [N,C,H,W] with values in [-1, 1] (clamped) into one uint8 [C, rows*(H+pad)+pad,
// nrow*(W+pad)+pad] image, `nrow` images per row, separated by `pad` pixels of `pad_value`
// (0..255) — the layout of torchvision.utils.make_grid. N may be 0 only if nrow > 0 (an
// empty padded image results).
at::Tensor make_grid(const at::Tensor& images, int64_t nrow = 8, int64_t pad = 2,
                     int pad_value = 0);

// A grid made by make_grid(..., pad) with `labels[r]` written to the left of row r (cells
// `cell_height` pixels high): white text (stb_easy_font, scaled with the cells) in a black
// margin as wide as the longest label. Labels past the last row are ignored; bytes outside
// printable ASCII are drawn as '?'. No labels: the grid itself.
at::Tensor label_grid_rows(const at::Tensor& grid, const std::vector<std::string>& labels, int64_t cell_height,
                           int64_t pad = 2);

// write_png(path, make_grid(images, nrow)), with `row_labels` (e.g. class names) on the left.
void write_png_grid(const std::string& path, const at::Tensor& images, int64_t nrow = 8,
                    const std::vector<std::string>& row_labels = {});

}  // namespace lf
