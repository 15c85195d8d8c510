// Decoding one image file (stb_image: PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM) and
// bringing it to the configured square resolution: resize the short side, then centre-crop.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf::data {

// The file extensions (lower case, with the dot) stb_image can decode.
const std::vector<std::string>& image_extensions();
bool has_image_extension(const std::string& path);

// An 8-bit image with interleaved channels (HWC), as stb returns it.
struct Image8 {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// Decodes `path` into `channels` channels (1: luminance, 3: RGB; stb converts, dropping
// alpha). Throws std::runtime_error "<path>: <reason>" for an empty, truncated or undecodable
// file (the reason is stb's, e.g. "bad png" / "corrupt JPEG"). Thread-safe.
Image8 decode_image(const std::string& path, int channels);

// Whether the file's header can be parsed (cheap; no pixel decoding). Fills `reason` if not.
bool probe_image(const std::string& path, std::string* reason);

// Resizes so that the shorter side equals `size` (aspect ratio kept), then crops the centre
// size x size. Downsampling uses stb_image_resize's box filter (area averaging), upsampling its
// triangle filter (bilinear), both in linear space with clamped edges.
Image8 resize_center_crop(const Image8& in, int64_t size);

}  // namespace lf::data
