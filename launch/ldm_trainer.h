// `latentforge train`: the latent diffusion objective on a latent cache across ranks, with
// bucketed gradient sync, EMA, checkpoints, resume, signals, metrics and sample grids.
#pragma once
#include <string>

#include "launch/config.h"
#include "launch/config_registry.h"
#include "launch/runtime.h"

namespace lf::launch {

// Runs the whole training; returns the exit code (0, kExitRequeue or kExitTerminated).
// `resume` is the --resume flag ("", "auto" or a checkpoint directory).
int train_ldm(const Config& config, const ConfigRegistry& registry, Runtime& runtime, const std::string& resume);

}  // namespace lf::launch
