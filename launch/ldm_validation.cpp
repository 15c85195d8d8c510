// Validation loss of the latent diffusion model (see ldm_validation.h).
#include "launch/ldm_validation.h"

#include <algorithm>

#include "core/keyed_rng.h"
#include "core/util/strings.h"
#include "data/latent_cache.h"

namespace lf::launch {

ValidationSet::ValidationSet(const std::string& cache_dir, const std::string& vae_hash, int64_t num, int rank,
                             int world, uint64_t seed, double scale, const at::TensorOptions& opts) {
  auto val = data::LatentCache::open(cache_dir, false);
  val->check_vae(vae_hash);
  const int64_t n = std::min<int64_t>(num, val->size());
  const int64_t begin = n * rank / world, end = n * (rank + 1) / world;
  std::vector<int64_t> idx;
  for (int64_t i = begin; i < end; ++i) idx.push_back(i);
  auto rows = val->read(idx);
  at::Tensor m = rows.latents.count("mean") ? rows.latents["mean"] : rows.latents["latent"];
  x0_ = m.to(opts) * scale;
  labels_ = rows.labels.to(opts.device());
  // Captioned caches: on the host, as the text encoder takes them.
  tokens_ = rows.tokens;
  text_embedding_ = rows.text_embedding;
  text_mask_ = rows.text_mask;
  positions_ = at::arange(begin, end, at::kLong);
  n_ = n;
  noise_ = core::keyed_normal(seed, core::stream_id(core::Stream::kValidation), 0, rows.indices,
                              val->manifest().settings.latent_shape, opts);
}

double ValidationSet::loss(core::DenoiserModule& model, const LDMObjective& objective, dist::Communicator& comm) const {
  at::NoGradGuard g;
  model.eval();
  at::Tensor sum = at::zeros({2}, at::kDouble);
  if (x0_.size(0) > 0) {
    LDMObjective::Noised nz = objective.at_fixed_times(x0_, positions_, n_, noise_);
    at::Tensor y = model.num_classes() > 0 ? labels_ : at::Tensor();
    core::TextInput text;
    if (model.text_embedding_dim() > 0) {
      if (!text_embedding_.defined() || text_embedding_.size(1) != model.context_length() ||
          text_embedding_.size(2) != model.text_embedding_dim())
        throw std::invalid_argument(lf::str("the validation cache holds ",
                                            text_embedding_.defined() ? lf::str("caption embeddings of ", text_embedding_.size(1),
                                                                                " x ", text_embedding_.size(2))
                                                                      : "no caption embeddings",
                                            " but the model reads ", model.context_length(), " x ",
                                            model.text_embedding_dim(), " per caption"));
      text.embeddings = text_embedding_;
      text.mask = text_mask_;
    } else if (model.context_length() > 0) {
      if (!tokens_.defined() || tokens_.size(1) != model.context_length())
        throw std::invalid_argument(lf::str("the validation cache holds ",
                                        tokens_.defined() ? lf::str("captions of ", tokens_.size(1), " tokens") : "no captions",
                                        " but the model reads ", model.context_length(), " tokens per caption"));
      text.tokens = tokens_;
    }
    at::Tensor per = objective.per_sample_loss(model.forward(nz.x_t, nz.time, y, text), nz);
    sum[0] = per.sum().item<double>();
    sum[1] = static_cast<double>(per.size(0));
  }
  model.train();
  if (comm.world_size() > 1) comm.all_reduce(sum, dist::ReduceOp::kSum, "all_reduce of the validation loss");
  return sum[0].item<double>() / std::max(1.0, sum[1].item<double>());
}

}  // namespace lf::launch
