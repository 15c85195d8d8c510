// Keyed latent generation (see generate.h).
#include "launch/generate.h"

#include "core/keyed_rng.h"
#include "core/util/tokenizer.h"
#include "core/util/strings.h"
#include "launch/mixed_precision.h"

namespace lf::launch {

at::Tensor generate_latents(core::DenoiserModule& model, const LDMObjective& objective, const at::Tensor& ids,
                            const at::Tensor& labels, std::vector<int64_t> latent_shape, const GenerateOptions& o,
                            const std::function<void(int64_t, int64_t)>& progress, const core::TextInput& captions) {
  const bool text = model.context_length() > 0;
  const at::Tensor& rows0 = captions.tokens.defined() ? captions.tokens : captions.embeddings;
  if (text && (!rows0.defined() || rows0.size(0) != ids.size(0)))
    throw std::invalid_argument(str("generate: a text model needs ", ids.size(0), " captions (tokens or embeddings of ",
                                    model.context_length(), " positions), one per sample"));
  at::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  auto param = model.parameters().front();
  auto opts = param.options().requires_grad(false);
  const int64_t num_classes = model.num_classes();
  const int64_t n = ids.size(0);
  // Every batch computes the tokens of the job's longest prompt (padding is masked either way),
  // so which prompts share a batch changes no bit of a sample.
  const int64_t job_length = text ? captions.used(lf::ByteTokenizer::kPad) : 0;
  std::vector<at::Tensor> out;
  for (int64_t begin = 0; begin < n; begin += o.batch_size) {
    int64_t len = std::min(o.batch_size, n - begin);
    // Keyed noise is drawn on the model's device (the same bits on CPU and CUDA).
    at::Tensor bid = ids.narrow(0, begin, len).to(param.device(), at::kLong).contiguous();
    at::Tensor x = core::keyed_normal(o.seed, core::stream_id(core::Stream::kSampleInit), 0, bid, latent_shape, opts);
    core::NoiseFn noise = [&, bid](int64_t step) {
      return core::keyed_normal(o.seed, core::stream_id(core::Stream::kSampleStep), step, bid, latent_shape, opts);
    };
    core::Denoiser denoiser;
    if (text) {
      // Classifier-free guidance over captions: the "labels" CFG doubles are the rows of this
      // batch's captions, and the null label `len` marks the unconditional half (the null condition).
      const core::TextInput batch = captions.rows(at::arange(begin, begin + len, at::kLong));
      core::ConditionalModel cond = [&model, &o, batch, len, job_length](const at::Tensor& xt, const at::Tensor& t,
                                                                          const at::Tensor& rows) {
        MixedPrecision::Guard autocast(o.autocast);
        at::Tensor r = rows.cpu();
        core::TextInput in = batch.rows(r.clamp_max(len - 1));
        in.length = job_length;
        in.drop = r.eq(len);
        return model.forward(xt, t, {}, in).to(xt.scalar_type());
      };
      denoiser = core::classifier_free_guidance(cond, at::arange(len, at::kLong), len, o.guidance);
    } else if (num_classes > 0) {
      at::Tensor y = labels.narrow(0, begin, len).to(param.device(), at::kLong);
      core::ConditionalModel cond = [&model, &o](const at::Tensor& xt, const at::Tensor& t, const at::Tensor& yy) {
        MixedPrecision::Guard autocast(o.autocast);
        return model.forward(xt, t, yy).to(xt.scalar_type());
      };
      denoiser = core::classifier_free_guidance(cond, y, num_classes, o.guidance);
    } else {
      denoiser = [&model, &o](const at::Tensor& xt, const at::Tensor& t) {
        MixedPrecision::Guard autocast(o.autocast);
        return model.forward(xt, t).to(xt.scalar_type());
      };
    }
    out.push_back(objective.sample(denoiser, x, o.sampler, o.steps, o.spacing, o.eta, noise));
    if (progress) progress(begin + len, n);
  }
  if (was_training) model.train();
  return out.empty() ? at::empty({0}) : at::cat(out);
}

std::pair<at::Tensor, at::Tensor> grid_labels(int64_t num_classes, int64_t per_class) {
  int64_t rows = std::max<int64_t>(1, num_classes);
  at::Tensor labels = at::arange(rows, at::kLong).repeat_interleave(per_class);
  if (num_classes == 0) labels.zero_();
  at::Tensor ids = at::arange(rows * per_class, at::kLong);
  return {ids, labels};
}

}  // namespace lf::launch
