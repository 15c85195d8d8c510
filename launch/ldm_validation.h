// The validation loss of `train`: held-out latents (posterior means of train.val_cache), a
// fixed slice per rank, at times spread evenly over the objective's range (LDMObjective::
// at_fixed_times) with fixed keyed noise, so the number is comparable across steps, runs and
// rank counts.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "core/denoiser.h"
#include "distributed/communicator.h"
#include "launch/ldm_objective.h"

namespace lf::launch {

class ValidationSet {
 public:
  // Reads the first min(num, size) samples of the cache at `cache_dir` (checked against the VAE
  // `vae_hash`); rank r of `world` keeps its contiguous slice. Blocks on the reads.
  ValidationSet(const std::string& cache_dir, const std::string& vae_hash, int64_t num, int rank, int world,
                uint64_t seed, double scale, const at::TensorOptions& opts);

  // The mean per-sample loss over every rank's slice (a collective on `comm` when it has more
  // than one rank); the model is put back in training mode.
  double loss(core::DenoiserModule& model, const LDMObjective& objective, dist::Communicator& comm) const;

 private:
  at::Tensor x0_, labels_, positions_, noise_, tokens_, text_embedding_, text_mask_;
  int64_t n_ = 0;
};

}  // namespace lf::launch
