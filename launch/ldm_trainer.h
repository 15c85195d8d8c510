// `latentforge train`: the latent diffusion objective on a latent cache across ranks, with
// bucketed gradient sync, EMA, checkpoints, resume, signals, metrics and sample grids.
#pragma once
#include <string>

#include "launch/config_view.h"
#include "launch/runtime.h"
#include "launch/train_loop.h"

namespace lf::launch {

// Runs the whole training; returns the exit code (0, kExitRequeue or kExitTerminated).
// `flags`: --resume and --break-lock.
int train_ldm(const ConfigView& config, Runtime& runtime, const TrainFlags& flags);

}  // namespace lf::launch
