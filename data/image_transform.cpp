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

// Only the four formats LatentForge documents are compiled in: stb's other decoders (PSD, PIC,
// HDR, TGA, GIF) would be parsers of untrusted bytes that nothing needs (docs/fuzzing.md).
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#include "core/util/strings.h"

namespace lf::data {

namespace fs = std::filesystem;

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> exts = {".png", ".jpg", ".jpeg", ".bmp",
                                                ".pnm", ".ppm", ".pgm"};
  return exts;
}

const std::vector<std::string>& refused_image_extensions() {
  static const std::vector<std::string> exts = {".gif", ".tga", ".psd", ".hdr", ".pic"};
  return exts;
}

bool has_image_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto* list : {&image_extensions(), &refused_image_extensions()})
    if (std::find(list->begin(), list->end(), ext) != list->end()) return true;
  return false;
}

std::string image_format(const unsigned char* h, size_t n) {
  auto starts = [&](const char* sig, size_t len) { return n >= len && std::memcmp(h, sig, len) == 0; };
  // Signatures: PNG spec 5.2; JPEG SOI marker + a marker; BMP "BM"; PNM P5/P6 (the binary
  // grey and colour maps stb reads); the refused ones by their own magic numbers.
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (n >= 3 && h[0] == 0xFF && h[1] == 0xD8 && h[2] == 0xFF) return "JPEG";
  if (starts("BM", 2)) return "BMP";
  if (n >= 2 && h[0] == 'P' && (h[1] == '5' || h[1] == '6')) return "PNM";
  if (starts("GIF8", 4)) return "GIF";
  if (starts("8BPS", 4)) return "PSD";
  if (starts("#?RADIANCE", 10) || starts("#?RGBE", 6)) return "HDR";
  if (starts("\x53\x80\xF6\x34", 4)) return "PIC";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  if (n >= 12 && starts("RIFF", 4) && std::memcmp(h + 8, "WEBP", 4) == 0) return "WebP";
  return "";
}

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_nonempty(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(lf::str(path, ": cannot read: ", ec.message()));
  if (size == 0) throw std::runtime_error(lf::str(path, ": empty file"));
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error(lf::str(path, ": cannot open: ", std::strerror(errno)));
  return f;
}

// The maxval of a binary PNM header ("P5 <w> <h> <maxval>", blanks and # comments between;
// Netpbm's pnm(5)), or -1 when the header is not complete in `head`.
int64_t pnm_maxval(const unsigned char* head, size_t n) {
  size_t i = 2;
  int64_t values[3] = {0, 0, 0};
  for (int64_t& v : values) {
    while (i < n && (std::isspace(head[i]) || head[i] == '#')) {
      if (head[i] == '#')
        while (i < n && head[i] != '\n') ++i;
      else
        ++i;
    }
    if (i >= n || !std::isdigit(head[i])) return -1;
    for (; i < n && std::isdigit(head[i]); ++i) v = std::min<int64_t>(v * 10 + (head[i] - '0'), 1 << 20);
  }
  return values[2];
}

// Walks a PNG's chunks (PNG spec 5.3: length, type, data, CRC) without reading their data:
// "" when every chunk fits in the file, else what does not. stb_image grows its IDAT buffer to
// a chunk's declared length (up to 2^30, doubled) before reading it, so a 130-byte file could
// make it allocate 2 GB (found by fuzz_image).
std::string png_chunk_problem(std::FILE* f) {
  if (std::fseek(f, 0, SEEK_END) != 0) return "";
  const long size = std::ftell(f);
  long at = 8;  // after the signature
  unsigned char h[8];
  while (at + 12 <= size) {
    if (std::fseek(f, at, SEEK_SET) != 0 || std::fread(h, 1, 8, f) != 8) break;
    const uint32_t len = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | h[3];
    if (len > static_cast<uint64_t>(size - at - 12)) {
      std::string type;
      for (int i = 4; i < 8; ++i) type += std::isprint(h[i]) ? static_cast<char>(h[i]) : '?';
      return lf::str("truncated or corrupt PNG: chunk ", type, " at byte ", at, " declares ", len,
                     " bytes, the file holds ", size - at - 12, " after its header");
    }
    if (std::memcmp(h + 4, "IEND", 4) == 0) break;
    at += 12 + static_cast<long>(len);
  }
  std::rewind(f);
  return "";
}

// Checks the format and the declared size; "" when decodable within `limits`, else why not.
// Leaves the file at its start.
std::string header_problem(std::FILE* f, const ImageLimits& limits) {
  unsigned char head[512] = {0};
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::rewind(f);
  const std::string format = image_format(head, n);
  if (format.empty()) {
    std::string bytes;
    for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) bytes += lf::str(i ? " " : "", std::hex, int(head[i]));
    return lf::str("not a PNG, JPEG, BMP or PNM (P5/P6) file (it starts with bytes ", bytes, ")");
  }
  if (format != "PNG" && format != "JPEG" && format != "BMP" && format != "PNM")
    return lf::str(format, " images are not read (only PNG, JPEG, BMP and PNM); convert it");
  // stb_image 2.27 overruns its buffer converting 16-bit PNM (maxval > 255) to 8 bits (found by
  // fuzz_image; tests/fuzz/third_party_findings): such files never reach it.
  if (format == "PNM" && pnm_maxval(head, n) > 255)
    return lf::str("16-bit PNM (maxval ", pnm_maxval(head, n), ") images are not read (only 8-bit); convert it");
  if (format == "PNG") {
    const std::string chunks = png_chunk_problem(f);
    std::rewind(f);
    if (!chunks.empty()) return chunks;
  }
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_file(f, &w, &h, &c))
    return lf::str("cannot decode (stb_image: ", stbi_failure_reason(), ")");
  std::rewind(f);
  if (w < 1 || h < 1) return lf::str("the header declares a ", w, "x", h, " image");
  const int64_t pixels = int64_t{w} * h;
  if (pixels > limits.max_pixels)
    return lf::str("the header declares ", w, "x", h, " = ", pixels, " pixels, more than data.max_pixels = ",
                   limits.max_pixels);
  const double aspect = static_cast<double>(std::max(w, h)) / std::min(w, h);
  if (aspect > limits.max_aspect)
    return lf::str("the header declares ", w, "x", h, ", an aspect ratio of ", aspect,
                   ", more than data.max_aspect = ", limits.max_aspect);
  return "";
}

}  // namespace

bool probe_image(const std::string& path, std::string* reason, const ImageLimits& limits) {
  try {
    auto f = open_nonempty(path);
    const std::string why = header_problem(f.get(), limits);
    if (why.empty()) return true;
    if (reason) *reason = why;
    return false;
  } catch (const std::runtime_error& e) {
    // The message starts with the path; keep only the reason.
    if (reason) *reason = std::string(e.what()).substr(path.size() + 2);
    return false;
  }
}

Image8 decode_image(const std::string& path, int channels, const ImageLimits& limits, const uint8_t* background) {
  auto f = open_nonempty(path);
  const std::string why = header_problem(f.get(), limits);
  if (!why.empty()) throw std::runtime_error(lf::str(path, ": ", why));
  int w = 0, h = 0, c = 0;
  if (background && stbi_info_from_file(f.get(), &w, &h, &c) && (c == 2 || c == 4)) {
    Image8 rgba = decode_image(path, 4, limits);
    Image8 out;
    out.width = rgba.width;
    out.height = rgba.height;
    out.channels = channels;
    const size_t n = static_cast<size_t>(rgba.width * rgba.height);
    out.pixels.resize(n * static_cast<size_t>(channels));
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* px = &rgba.pixels[4 * i];
      const int a = px[3];
      uint8_t rgb[3];
      for (int k = 0; k < 3; ++k) rgb[k] = static_cast<uint8_t>((px[k] * a + background[k] * (255 - a) + 127) / 255);
      if (channels == 3) {
        std::copy(rgb, rgb + 3, &out.pixels[3 * i]);
      } else {  // stb's own RGB -> luminance
        out.pixels[i] = static_cast<uint8_t>((rgb[0] * 77 + rgb[1] * 150 + rgb[2] * 29) >> 8);
      }
    }
    return out;
  }
  unsigned char* px = stbi_load_from_file(f.get(), &w, &h, &c, channels);
  if (!px)
    throw std::runtime_error(lf::str(path, ": cannot decode (stb_image: ", stbi_failure_reason(),
                                 "; the file may be truncated or not an image)"));
  std::unique_ptr<unsigned char, void (*)(void*)> owned(px, stbi_image_free);
  if (int64_t{w} * h > limits.max_pixels)  // the header said otherwise: never trust it twice
    throw std::runtime_error(lf::str(path, ": decoded to ", w, "x", h, ", more than its header declared"));
  Image8 out;
  out.width = w;
  out.height = h;
  out.channels = channels;
  out.pixels.assign(px, px + static_cast<size_t>(w) * h * channels);
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
