// Decoding one image file (stb_image, built for PNG, JPEG, BMP and PNM only) with its size
// checked from the header first, and bringing it to the configured square resolution: resize
// the short side, then centre-crop.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf::data {

// The file extensions (lower case, with the dot) of the formats decoded: PNG, JPEG, BMP, PNM.
const std::vector<std::string>& image_extensions();
// Extensions of image formats stb_image could decode but LatentForge refuses (GIF, TGA, PSD,
// HDR, PIC): listed so that such a file is refused by name instead of silently ignored.
const std::vector<std::string>& refused_image_extensions();
bool has_image_extension(const std::string& path);  // either list

// Bounds checked from an image's header before its pixels are decoded (data.max_pixels,
// data.max_aspect): a small file can declare a huge image.
constexpr int64_t kDefaultMaxPixels = int64_t{1} << 26;  // 64 Mpx, 8192 x 8192
constexpr double kDefaultMaxAspect = 32.0;
struct ImageLimits {
  int64_t max_pixels = kDefaultMaxPixels;
  double max_aspect = kDefaultMaxAspect;  // longer side / shorter side
};

// The format of a file from its first bytes: "PNG", "JPEG", "BMP", "PNM" (decoded), the name of
// a refused one ("GIF", "PSD", "HDR", "PIC", "TIFF", "WebP"), or "" when unknown (TGA has no
// signature and is refused as unknown).
std::string image_format(const unsigned char* head, size_t n);

// An 8-bit image with interleaved channels (HWC), as stb returns it.
struct Image8 {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// Decodes `path` into `channels` channels (1: luminance, 3: RGB; stb converts, dropping
// alpha). Throws std::runtime_error "<path>: <reason>" for an empty, truncated or undecodable
// file (the reason is stb's, e.g. "bad png" / "corrupt JPEG"), a format other than PNG, JPEG,
// BMP and PNM (named), or a header declaring more pixels or a longer aspect than `limits`
// (checked before decoding). Thread-safe.
// With `background` (RGB): an image with an alpha channel (RGBA, grey + alpha) is composited on it
// first — out = (c a + b (255 - a)) / 255, rounded — so transparent pixels show the background,
// not whatever colour the file stores under them.
Image8 decode_image(const std::string& path, int channels, const ImageLimits& limits = {},
                    const uint8_t* background = nullptr);

// Whether the file's header can be parsed and is within `limits` (cheap; no pixel decoding).
// Fills `reason` if not.
bool probe_image(const std::string& path, std::string* reason, const ImageLimits& limits = {});

// Resizes so that the shorter side equals `size` (aspect ratio kept), then crops the centre
// size x size. Downsampling uses stb_image_resize's box filter (area averaging), upsampling its
// triangle filter (bilinear), both in linear space with clamped edges.
Image8 resize_center_crop(const Image8& in, int64_t size);

}  // namespace lf::data
