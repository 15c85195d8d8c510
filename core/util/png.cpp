// PNG writing through stb_image_write (see png.h). The one STB_IMAGE_WRITE_IMPLEMENTATION of
// the project lives here.
#include "core/util/png.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>
// stb_easy_font is header-only with static functions (some unused here).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace lf {

namespace {

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "") + std::to_string(t.size(d));
  return s + "]";
}

}  // namespace

std::string encode_png(const at::Tensor& image) {
  if (image.dim() != 3 || image.scalar_type() != at::kByte ||
      (image.size(0) != 1 && image.size(0) != 3 && image.size(0) != 4) || image.size(1) < 1 ||
      image.size(2) < 1)
    throw std::invalid_argument(lf::str("encode_png: expected a uint8 image [C,H,W] with C in {1,3,4}",
                                    ", got ", image.scalar_type(), " ", shape_str(image)));
  // stb wants interleaved rows (HWC).
  at::Tensor hwc = image.to(at::kCPU).permute({1, 2, 0}).contiguous();
  int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  int c = static_cast<int>(hwc.size(2));
  std::string out;
  if (!stbi_write_png_to_func(append_bytes, &out, w, h, c, hwc.data_ptr<uint8_t>(), w * c))
    throw std::runtime_error(lf::str("encode_png: stb_image_write failed for a ", shape_str(image),
                                 " image"));
  return out;
}

void write_png(const std::string& path, const at::Tensor& image) {
  atomic_write_file(path, encode_png(image));
}

at::Tensor make_grid(const at::Tensor& images, int64_t nrow, int64_t pad, int pad_value) {
  if (images.dim() != 4)
    throw std::invalid_argument(
        lf::str("make_grid: expected images [N,C,H,W], got ", shape_str(images)));
  if (nrow < 1 || pad < 0 || pad_value < 0 || pad_value > 255)
    throw std::invalid_argument(lf::str("make_grid: nrow ", nrow, " must be >= 1, pad ", pad,
                                    " >= 0, pad_value ", pad_value, " in 0..255"));
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = std::min(nrow, std::max<int64_t>(n, 1));
  const int64_t rows = std::max<int64_t>((n + cols - 1) / cols, 1);
  // [-1,1] -> [0,255] with rounding, as torchvision's save_image (x*255+0.5 of [0,1]).
  at::Tensor u8 = ((images.detach().to(at::kCPU, at::kFloat).clamp(-1, 1) + 1) * 127.5 + 0.5)
                      .floor()
                      .clamp(0, 255)
                      .to(at::kByte);
  at::Tensor grid = at::full({c, rows * (h + pad) + pad, cols * (w + pad) + pad}, pad_value,
                             at::TensorOptions().dtype(at::kByte));
  for (int64_t i = 0; i < n; ++i) {
    int64_t y = pad + (i / cols) * (h + pad), x = pad + (i % cols) * (w + pad);
    grid.narrow(1, y, h).narrow(2, x, w).copy_(u8[i]);
  }
  return grid;
}

at::Tensor label_grid_rows(const at::Tensor& grid, const std::vector<std::string>& labels, int64_t cell_height,
                           int64_t pad) {
  if (labels.empty()) return grid;
  const int64_t scale = std::max<int64_t>(1, cell_height / 32);
  const int64_t rows = std::max<int64_t>(1, (grid.size(1) - pad) / std::max<int64_t>(1, cell_height + pad));
  std::vector<std::string> text;
  int64_t width = 0;
  for (size_t r = 0; r < labels.size() && static_cast<int64_t>(r) < rows; ++r) {
    std::string t = labels[r];
    for (char& ch : t)
      if (ch < 32 || ch > 126) ch = '?';
    width = std::max<int64_t>(width, stb_easy_font_width(t.data()));
    text.push_back(std::move(t));
  }
  const int64_t margin = width * scale + 4 * scale;
  at::Tensor out = at::zeros({grid.size(0), grid.size(1), grid.size(2) + margin}, grid.options());
  out.narrow(2, margin, grid.size(2)).copy_(grid);
  at::Tensor canvas = out.narrow(2, 0, margin);
  // stb_easy_font emits axis-aligned quads (4 vertices of 16 bytes: x, y, z floats + colour).
  std::vector<char> quads(64 * 1024);
  for (size_t r = 0; r < text.size(); ++r) {
    const int64_t top = pad + static_cast<int64_t>(r) * (cell_height + pad) + (cell_height - 7 * scale) / 2;
    const int n = stb_easy_font_print(0, 0, text[r].data(), nullptr, quads.data(), static_cast<int>(quads.size()));
    for (int q = 0; q < n; ++q) {
      const float* v = reinterpret_cast<const float*>(quads.data() + q * 64);
      const float x0 = std::min(v[0], v[8]), x1 = std::max(v[0], v[8]);
      const float y0 = std::min(v[1], v[9]), y1 = std::max(v[1], v[9]);
      const int64_t px0 = 2 * scale + static_cast<int64_t>(x0) * scale, px1 = 2 * scale + static_cast<int64_t>(x1) * scale;
      const int64_t py0 = top + static_cast<int64_t>(y0) * scale, py1 = top + static_cast<int64_t>(y1) * scale;
      const int64_t cx0 = std::max<int64_t>(0, px0), cx1 = std::min<int64_t>(margin, px1);
      const int64_t cy0 = std::max<int64_t>(0, py0), cy1 = std::min<int64_t>(out.size(1), py1);
      if (cx1 > cx0 && cy1 > cy0) canvas.narrow(1, cy0, cy1 - cy0).narrow(2, cx0, cx1 - cx0).fill_(255);
    }
  }
  return out;
}

void write_png_grid(const std::string& path, const at::Tensor& images, int64_t nrow,
                    const std::vector<std::string>& row_labels) {
  write_png(path, label_grid_rows(make_grid(images, nrow), row_labels, images.size(2)));
}

}  // namespace lf
