// The sample grids `train` draws while it trains (train.sample_every) and at the end: the EMA
// weights, DDIM (Euler for a flow model) with classifier-free guidance, decoded with the cache's autoencoder, one row
// per class labelled with its name, so a user watching a run sees it learn.
#pragma once
#include <string>
#include <vector>

#include "core/denoiser.h"
#include "core/sampler.h"
#include "launch/autoencoder.h"
#include "launch/ldm_objective.h"

namespace lf::launch {

struct TrainingGridOptions {
  int64_t per_class = 8;    // samples per row
  int64_t steps = 25;       // sampler steps (DDIM for the DDPM objective, Euler for flow)
  double guidance = 3.0;
  uint64_t seed = 0;
  std::vector<std::string> label_names;  // one per class (row labels); empty: "class k"
  std::vector<std::string> prompts;      // a text model: one row per prompt, labelled with it
  // A model of external caption embeddings: the prompts' embeddings and mask (one row each).
  core::TextInput prompt_embeddings;
};

// Samples with `model` (already holding the weights to show), decodes them with `autoencoder`
// (latents / `scale`) and writes RUN_DIR/samples/step-NNNNNNNN.png and RUN_DIR/grid.png.
// Returns the step's path. Blocks; rank 0 only.
std::string write_training_grid(core::DenoiserModule& model, const LDMObjective& objective, Autoencoder& autoencoder,
                                const std::vector<int64_t>& latent_shape, double scale, const TrainingGridOptions& o,
                                const std::string& run_dir, int64_t step);

// The tokens [N, context_length] of prompts, as encode stores captions (the byte tokenizer).
at::Tensor prompt_tokens(const std::vector<std::string>& prompts, int64_t context_length);

// Row labels for a class-conditional grid: the class names where known, else "class k"; an
// unconditional grid gets none.
std::vector<std::string> class_row_labels(const std::vector<int64_t>& classes, const std::vector<std::string>& names);

}  // namespace lf::launch
