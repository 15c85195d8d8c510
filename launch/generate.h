// Generating latents with a trained denoiser: sample i starts from noise keyed by (seed, i)
// and every stochastic sampler step draws keyed noise too, so the same seed gives the same
// images at any batch size and a different seed different ones (docs/design.md, invariant 2).
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "core/denoiser.h"
#include "core/sampler.h"
#include "launch/ldm_objective.h"

namespace lf::launch {

struct GenerateOptions {
  core::SamplerKind sampler = core::SamplerKind::kDDIM;
  int64_t steps = 50;
  double eta = 0.0;
  core::Spacing spacing = core::Spacing::kTrailing;
  double guidance = 1.0;  // classifier-free guidance scale (1: conditional model alone)
  uint64_t seed = 0;
  int64_t batch_size = 256;
  bool autocast = false;  // run the denoiser under CUDA autocast (MixedPrecision's dtype)
};

// Latents [N, c, h, w] for sample ids `ids` (int64 [N]) with `labels` (int64 [N], ignored
// when the model is unconditional or a text model) and, for a text model, `captions`: one
// caption per sample as tokens (int [N, context_length]) or, for a model of external
// embeddings, embeddings [N, L, D] with their mask [N, L]; with options.sampler, which must fit
// the objective (UsageError otherwise). Guidance mixes the caption's prediction with the null
// condition's. Runs without autograd on the model's device and dtype;
// `progress(done, total)` is called after each batch. Blocks.
at::Tensor generate_latents(core::DenoiserModule& model, const LDMObjective& objective, const at::Tensor& ids,
                            const at::Tensor& labels, std::vector<int64_t> latent_shape, const GenerateOptions& options,
                            const std::function<void(int64_t, int64_t)>& progress = {},
                            const core::TextInput& captions = {});

// One row per class, `per_class` samples each: labels 0,0,..,1,1,.. and ids 0..N-1.
std::pair<at::Tensor, at::Tensor> grid_labels(int64_t num_classes, int64_t per_class);

}  // namespace lf::launch
