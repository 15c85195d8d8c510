// PNG writing through stb_image_write (see png.h). The one STB_IMAGE_WRITE_IMPLEMENTATION of
// the project lives here.
#include "core/util/png.h"

#include <stdexcept>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>

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

void write_png_grid(const std::string& path, const at::Tensor& images, int64_t nrow) {
  write_png(path, make_grid(images, nrow));
}

}  // namespace lf
