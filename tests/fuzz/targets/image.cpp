// Fuzz target of image reading: header probe, decode and resize + centre crop, as an image
// folder source does for every file.
#include <stdexcept>

#include "data/image_transform.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

void run_image(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  write_file(path, data, size);
  // Smaller than the defaults so that one input stays fast under the sanitizers; the checks
  // are the same code.
  data::ImageLimits limits;
  limits.max_pixels = 1 << 22;
  limits.max_aspect = 32;
  std::string reason;
  const bool ok = data::probe_image(path, &reason, limits);
  // Refuses all that the probe refused, and also corrupt pixel data the header hid.
  const data::Image8 im = data::decode_image(path, size % 2 ? 1 : 3, limits);
  if (!ok) throw std::logic_error("decode_image read a file that probe_image refused: " + reason);
  for (int64_t side : {32, 7}) {
    data::Image8 out = data::resize_center_crop(im, side);
    if (out.width != side || out.height != side ||
        out.pixels.size() != static_cast<size_t>(side * side * im.channels))
      throw std::logic_error("resize_center_crop returned the wrong size");
  }
}

}  // namespace lf::fuzz
