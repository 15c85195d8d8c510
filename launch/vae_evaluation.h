// How `vae train` and `eval` measure an autoencoder: PSNR and SSIM of its reconstructions
// (posterior mode) of held-out images, and the picture of a few of them next to the originals.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/vae.h"

namespace lf::launch {

// PSNR and SSIM of `vae` reconstructions of images in [-1, 1] (compared in [0, 1]); also
// returns the reconstructions. No autograd; restores the module's training mode.
struct ReconstructionQuality {
  double psnr = 0, ssim = 0;
  int64_t count = 0;
  at::Tensor reconstructions;
};
ReconstructionQuality reconstruction_quality(core::VAE& vae, const at::Tensor& images, int64_t batch = 256);

// Evaluates `vae` on `held_out` (images in [-1, 1]), writes RUN_DIR/reconstructions.png (16
// originals above their reconstructions) and returns {step, psnr, ssim, eval_images}. With
// `final`, also writes the VAE in diffusers' AutoencoderKL layout to RUN_DIR/vae and the numbers
// to RUN_DIR/vae_metrics.json. Blocks; rank 0 only.
nlohmann::json evaluate_vae(core::VAE& vae, const at::Tensor& held_out, const std::string& run_dir, int64_t step,
                            bool final);

}  // namespace lf::launch
