// Image decoding and resize + centre crop (see image_transform.h). The one
// STB_IMAGE_IMPLEMENTATION and STB_IMAGE_RESIZE_IMPLEMENTATION of the project live here.
#include "data/image_transform.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#include "core/util/strings.h"

namespace lf::data {

namespace fs = std::filesystem;

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif",
                                                ".tga", ".psd", ".hdr",  ".pic", ".pnm",
                                                ".ppm", ".pgm"};
  return exts;
}

bool has_image_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto& e = image_extensions();
  return std::find(e.begin(), e.end(), ext) != e.end();
}

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};

std::unique_ptr<std::FILE, FileCloser> open_nonempty(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(lf::str(path, ": cannot read: ", ec.message()));
  if (size == 0) throw std::runtime_error(lf::str(path, ": empty file"));
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error(lf::str(path, ": cannot open: ", std::strerror(errno)));
  return f;
}

}  // namespace

bool probe_image(const std::string& path, std::string* reason) {
  try {
    auto f = open_nonempty(path);
    int w = 0, h = 0, c = 0;
    if (!stbi_info_from_file(f.get(), &w, &h, &c)) {
      if (reason) *reason = lf::str("cannot decode (stb_image: ", stbi_failure_reason(), ")");
      return false;
    }
    return true;
  } catch (const std::runtime_error& e) {
    // The message starts with the path; keep only the reason.
    if (reason) *reason = std::string(e.what()).substr(path.size() + 2);
    return false;
  }
}

Image8 decode_image(const std::string& path, int channels) {
  auto f = open_nonempty(path);
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load_from_file(f.get(), &w, &h, &c, channels);
  if (!px)
    throw std::runtime_error(lf::str(path, ": cannot decode (stb_image: ", stbi_failure_reason(),
                                 "; the file may be truncated or not an image)"));
  Image8 out;
  out.width = w;
  out.height = h;
  out.channels = channels;
  out.pixels.assign(px, px + static_cast<size_t>(w) * h * channels);
  stbi_image_free(px);
  return out;
}

Image8 resize_center_crop(const Image8& in, int64_t size) {
  if (in.width < 1 || in.height < 1 || size < 1)
    throw std::invalid_argument(lf::str("resize_center_crop: image ", in.width, "x", in.height,
                                    " to ", size, ": sizes must be positive"));
  // Scale so the shorter side becomes `size`; round the longer side, never below `size`.
  const double scale = static_cast<double>(size) / std::min(in.width, in.height);
  int64_t rw = std::max<int64_t>(size, std::llround(in.width * scale));
  int64_t rh = std::max<int64_t>(size, std::llround(in.height * scale));
  if (in.width == size) rw = size;
  if (in.height == size) rh = size;
  Image8 resized;
  if (rw == in.width && rh == in.height) {
    resized = in;
  } else {
    resized.width = rw;
    resized.height = rh;
    resized.channels = in.channels;
    resized.pixels.resize(static_cast<size_t>(rw * rh * in.channels));
    stbir_filter filter = scale < 1.0 ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE;
    int ok = stbir_resize_uint8_generic(
        in.pixels.data(), static_cast<int>(in.width), static_cast<int>(in.height),
        static_cast<int>(in.width * in.channels), resized.pixels.data(), static_cast<int>(rw),
        static_cast<int>(rh), static_cast<int>(rw * in.channels), static_cast<int>(in.channels),
        STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, filter, STBIR_COLORSPACE_LINEAR, nullptr);
    if (!ok)
      throw std::runtime_error(lf::str("stb_image_resize failed for ", in.width, "x", in.height,
                                   " -> ", rw, "x", rh));
  }
  if (rw == size && rh == size) return resized;
  Image8 out;
  out.width = out.height = size;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(size * size * in.channels));
  const int64_t x0 = (rw - size) / 2, y0 = (rh - size) / 2;
  for (int64_t y = 0; y < size; ++y)
    std::copy_n(resized.pixels.data() + ((y0 + y) * rw + x0) * in.channels, size * in.channels,
                out.pixels.data() + y * size * in.channels);
  return out;
}

}  // namespace lf::data
