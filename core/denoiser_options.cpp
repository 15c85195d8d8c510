// The denoiser choice and factory (see denoiser_options.h).
#include "core/denoiser_options.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {

void DenoiserOptions::set_io(int64_t channels, int64_t classes, int64_t context_length) {
  unet.in_channels = unet.out_channels = dit.in_channels = dit.out_channels = channels;
  unet.num_classes = dit.num_classes = classes;
  unet.text = dit.text = text;
  unet.text.context_length = dit.text.context_length = context_length;
}

int64_t DenoiserOptions::num_classes() const {
  return kind == DenoiserKind::kDiT ? dit.num_classes : unet.num_classes;
}

int64_t DenoiserOptions::context_length() const {
  return kind == DenoiserKind::kDiT ? dit.text.context_length : unet.text.context_length;
}

int64_t DenoiserOptions::size_multiple() const {
  return kind == DenoiserKind::kDiT ? dit.patch_size : unet.size_multiple();
}

void DenoiserOptions::validate() const {
  if (kind == DenoiserKind::kDiT)
    dit.validate();
  else
    unet.validate();
}

void DenoiserOptions::check_latent_size(int64_t h, int64_t w) const {
  const int64_t m = size_multiple();
  if (h > 0 && w > 0 && h % m == 0 && w % m == 0) return;
  if (kind == DenoiserKind::kDiT)
    throw std::invalid_argument(lf::str("the latents are ", h, "x", w, " but ", model_key("patch_size"), " = ", m,
                                        " does not divide both sides; choose a patch size that does"));
  throw std::invalid_argument(lf::str("the latents are ", h, "x", w, " but model.channel_mult has ", unet.levels(),
                                      " levels, which needs sizes divisible by ", m));
}

std::shared_ptr<DenoiserModule> make_denoiser(const DenoiserOptions& o) {
  if (o.kind == DenoiserKind::kDiT) return std::make_shared<DiTImpl>(o.dit);
  return std::make_shared<UNetImpl>(o.unet);
}

}  // namespace lf::core
