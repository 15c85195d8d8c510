// The choice of denoising network (model.kind = unet | dit) and its options in one value, and
// the factory that builds it behind the DenoiserModule interface.
#pragma once
#include <cstdint>
#include <memory>

#include "core/denoiser.h"
#include "core/dit.h"
#include "core/unet.h"

namespace lf::core {

// Both option sets are kept (the config fills each from its own keys); only the one of
// `kind` is validated and built.
struct DenoiserOptions {
  DenoiserKind kind = DenoiserKind::kUNet;
  UNetOptions unet;  // used when kind = unet
  DiTOptions dit;    // used when kind = dit
  TextOptions text;  // the text encoder's sizes; set_io copies them to both option sets

  // The latent channels (in = out), the number of classes and the context length (0: no text
  // conditioning) on both option sets, with `text`'s sizes.
  void set_io(int64_t channels, int64_t num_classes, int64_t context_length = 0);
  int64_t num_classes() const;
  int64_t context_length() const;
  int64_t size_multiple() const;
  // Throws std::invalid_argument naming the config keys of the chosen network.
  void validate() const;
  // Throws std::invalid_argument when latents of size h x w do not fit the chosen network,
  // naming the key that decides it (model.channel_mult's levels, model.patch_size).
  void check_latent_size(int64_t h, int64_t w) const;
};

// Builds (and validates) the network of `o.kind`; draws its initial weights from torch's
// generator, like the constructors themselves.
std::shared_ptr<DenoiserModule> make_denoiser(const DenoiserOptions& o);

}  // namespace lf::core
