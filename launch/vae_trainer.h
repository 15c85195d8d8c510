// `latentforge vae train`: trains the AutoencoderKL on images, data-parallel like `train`
// (same communicator, checkpoints, resume, signals, metrics): L1/L2 reconstruction + KL, and
// optionally a patch discriminator (hinge loss, started after vae_train.disc_start steps,
// adaptively weighted as in LDM's LPIPSWithDiscriminator). Reports PSNR and SSIM on held-out
// images and writes the VAE in diffusers' AutoencoderKL layout (RUN_DIR/vae).
#pragma once
#include <string>

#include "launch/config.h"
#include "launch/config_registry.h"
#include "launch/runtime.h"

namespace lf::launch {

int train_vae(const Config& config, const ConfigRegistry& registry, Runtime& runtime, const std::string& resume);

// PSNR and SSIM of `vae` reconstructions (posterior mode) of images in [-1, 1] (compared in
// [0, 1]); also returns the reconstructions.
struct ReconstructionQuality {
  double psnr = 0, ssim = 0;
  int64_t count = 0;
  at::Tensor reconstructions;
};
ReconstructionQuality reconstruction_quality(core::VAE& vae, const at::Tensor& images, int64_t batch = 256);

}  // namespace lf::launch
