// The objective `train`, `sample` and the training grids use, whichever diffusion.objective is
// set: DDPM on discrete timesteps (core/diffusion.h) or flow matching on continuous time
// (core/flow.h). Per micro-batch it turns x0 and the sample keys into the network's input (x_t
// and its time input) and scores the output; every draw is keyed per sample (docs/design.md,
// invariant 2). It also integrates a trained model back to latents with the sampler asked for.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "core/diffusion.h"
#include "core/flow.h"
#include "core/sampler.h"

namespace lf::launch {

class LDMObjective {
 public:
  // Validates `options` (std::invalid_argument naming the keys).
  explicit LDMObjective(core::DiffusionOptions options);

  const core::DiffusionOptions& options() const { return options_; }
  bool is_flow() const { return options_.objective == core::Objective::kFlow; }
  // The DDPM process (only when !is_flow()).
  const core::Diffusion& ddpm() const { return *ddpm_; }

  // The noised input of one micro-batch.
  struct Noised {
    at::Tensor x0, noise;
    at::Tensor t;      // the objective's time: int64 steps (DDPM) or floating t in [0, 1] (flow)
    at::Tensor x_t;    // the network's input
    at::Tensor time;   // the network's time input (DDPM: t; flow: 1000 t)
  };
  // Keyed by (seed, epochs, indices): the timestep or flow time, the noise (plus offset noise
  // with DDPM when set). `x0` is [N, ...] in opts' dtype and device.
  Noised noise(const at::Tensor& x0, uint64_t seed, const at::Tensor& epochs, const at::Tensor& indices,
               const at::TensorOptions& opts) const;
  // The same at fixed times: position i of n gets t = floor(i T / n) (DDPM) or (i + 0.5) / n
  // (flow), with the given noise (the validation loss).
  Noised at_fixed_times(const at::Tensor& x0, const at::Tensor& positions, int64_t n, const at::Tensor& noise) const;
  // Per-sample loss [N] of the network's output.
  at::Tensor per_sample_loss(const at::Tensor& out, const Noised& n) const;

  // Throws UsageError when `sampler` does not fit the objective or, for DDPM, `steps` exceeds
  // the schedule's timesteps: sample() checks it, and a job checks it before any work.
  void check_sampling(core::SamplerKind sampler, int64_t steps) const;

  // Latents from x_T with a denoiser callback that takes the network's time input, `steps`
  // sampler steps (throws UsageError when `sampler` does not fit the objective). `noise` feeds
  // the stochastic samplers (DDPM, DDIM with eta > 0). Blocks.
  at::Tensor sample(const core::Denoiser& network, at::Tensor x_T, core::SamplerKind sampler, int64_t steps,
                    core::Spacing spacing, double eta, const core::NoiseFn& noise,
                    const core::ProgressFn& progress = {}) const;

 private:
  core::DiffusionOptions options_;
  std::unique_ptr<core::Diffusion> ddpm_;
  std::unique_ptr<core::FlowMatching> flow_;
};

}  // namespace lf::launch
