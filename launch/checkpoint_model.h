// A trained latent diffusion model as a checkpoint describes it (state.json + weights): the
// denoiser (EMA or raw weights), the diffusion options, the autoencoder that decodes its latents
// and the cache's scale factor and labels. Used by `sample` and `eval`.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/denoiser.h"
#include "core/diffusion.h"
#include "launch/autoencoder.h"

namespace lf::launch {

struct TrainedModel {
  std::string checkpoint;  // the checkpoint directory
  int64_t step = 0;
  std::shared_ptr<core::DenoiserModule> model;  // the UNet or the DiT, in eval mode
  core::DiffusionOptions diffusion;
  std::vector<int64_t> latent_shape;
  double scale_factor = 1.0;
  std::vector<std::string> label_names;
  Autoencoder autoencoder;
};

// `path`: a checkpoint directory or a run directory (its newest valid checkpoint). Verifies
// the checkpoint, loads EMA (use_ema) or raw weights, and the VAE recorded in state.json (its
// hash must match); `vae_override` replaces the recorded VAE path (same hash required).
TrainedModel load_trained_model(const std::string& path, bool use_ema, const std::string& vae_override = "");

// The newest valid checkpoint of a run directory, or `path` itself when it is a checkpoint.
std::string resolve_checkpoint(const std::string& path);

}  // namespace lf::launch
