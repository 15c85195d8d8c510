// `latentforge vae train`: trains the AutoencoderKL on images with the one training loop
// (train_loop.h: same communicator, checkpoints, resume, signals, metrics as `train`): L1/L2
// reconstruction + KL, and optionally a patch discriminator (hinge loss, started after
// vae_train.disc_start steps, adaptively weighted as in LDM's LPIPSWithDiscriminator). Reports
// PSNR and SSIM on held-out images and writes the VAE in diffusers' layout (RUN_DIR/vae).
#pragma once
#include <string>

#include "launch/config_view.h"
#include "launch/runtime.h"
#include "launch/train_loop.h"

namespace lf::launch {

int train_vae(const ConfigView& config, Runtime& runtime, const TrainFlags& flags);

}  // namespace lf::launch
