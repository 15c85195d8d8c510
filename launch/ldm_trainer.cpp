// `latentforge train`: what the latent diffusion model brings to the one training loop
// (train_loop.h). Per optimizer step k, rank r of W takes positions [kB + rB/W, kB + (r+1)B/W)
// of the sample stream in A micro-batches; every per-sample draw (posterior sample, flip,
// timestep, noise, label dropout, dropout masks) is keyed by (seed, epoch, global sample index),
// so W ranks x B/W == 1 rank x B and a resumed run equals one never stopped (docs/design.md,
// invariants 1-3).
#include "launch/ldm_trainer.h"

#include <glog/logging.h>

#include <filesystem>
#include <memory>

#include "core/denoiser_options.h"
#include "core/keyed_rng.h"
#include "core/state_dict.h"
#include "core/util/crash_point.h"
#include "core/util/strings.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"
#include "launch/autoencoder.h"
#include "launch/checkpoint_tensors.h"
#include "launch/ldm_objective.h"
#include "launch/ldm_validation.h"
#include "launch/model_io.h"
#include "launch/shared_verification.h"
#include "launch/train_loop.h"
#include "launch/training_grid.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint32_t sid(core::Stream s) { return core::stream_id(s); }

// The diffusion input x0 for a micro-batch: a latent drawn from the stored posterior (or the
// stored sample), the flip picked per sample and epoch, times the cache's scale factor.
at::Tensor draw_x0(const data::LatentBatch& b, uint64_t seed, bool flip, double scale, const at::TensorOptions& opts) {
  at::Tensor mean = b.mean.defined() ? b.mean : b.latent;
  at::Tensor logvar = b.logvar;
  if (flip) {
    at::Tensor f = core::keyed_bernoulli(seed, sid(core::Stream::kFlip), b.epochs, b.indices, 0.5).view({-1, 1, 1, 1});
    mean = at::where(f, b.mean.defined() ? b.mean_flip : b.latent_flip, mean);
    if (logvar.defined()) logvar = at::where(f, b.logvar_flip, logvar);
  }
  mean = mean.to(opts);
  if (logvar.defined()) {
    at::Tensor eps = core::keyed_normal(seed, sid(core::Stream::kPosterior), b.epochs, b.indices,
                                        mean.sizes().slice(1), opts);
    mean = mean + at::exp(0.5 * logvar.to(opts)) * eps;
  }
  return mean * scale;
}

// The keyed draws of one micro-batch: the noised input and the condition with its keyed
// dropout to the null condition (for classifier-free guidance): class-conditional models get
// the labels with dropped ones set to the null class, text models the tokens with a drop mask
// (the learned null embedding replaces a dropped caption). One draw per sample and epoch
// decides both, so a caption is dropped exactly where a label would be.
struct Batch {
  LDMObjective::Noised noised;
  at::Tensor labels;
  core::TextInput text;
};

Batch prepare(const data::LatentBatch& b, uint64_t seed, bool flip, double scale, const LDMObjective& objective,
              int64_t num_classes, bool text, bool external, double cond_dropout, const at::TensorOptions& opts) {
  Batch out;
  out.noised = objective.noise(draw_x0(b, seed, flip, scale, opts), seed, b.epochs, b.indices, opts);
  if (num_classes == 0 && !text) return out;
  at::Tensor drop = core::keyed_bernoulli(seed, sid(core::Stream::kLabelDrop), b.epochs, b.indices, cond_dropout);
  if (num_classes > 0) out.labels = at::where(drop, at::full_like(b.labels, num_classes), b.labels).to(opts.device());
  if (text) {
    if (external) {
      if (!b.text_embedding.defined()) throw std::logic_error("a text model's batch holds no caption embeddings");
      out.text.embeddings = b.text_embedding;
      out.text.mask = b.text_mask;
    } else {
      if (!b.tokens.defined()) throw std::logic_error("a text model's batch holds no tokens");
      out.text.tokens = b.tokens;  // on the host: the encoder checks them there, then moves them
    }
    out.text.drop = drop;
  }
  return out;
}

// Resuming on another cache would silently change the samples of every later step (the order
// is a function of the dataset size) or the latents themselves (another VAE or scale), so the
// run would no longer be the one that was stopped (docs/design.md, invariants 2 and 4). The
// checkpoint's state.json records the cache it was trained on.
void check_same_cache(const nlohmann::json& state, const std::string& checkpoint, const std::string& cache_dir,
                      const data::LatentCache& cache) {
  if (!state.contains("cache")) return;
  const nlohmann::json& c = state["cache"];
  const data::Manifest& m = cache.manifest();
  auto mismatch = [&](const std::string& what, const std::string& saved, const std::string& now) {
    throw UsageError(str("cache.dir = ", cache_dir, " has ", what, " ", now, " but the checkpoint ", checkpoint,
                         " was trained on a cache with ", what, " ", saved, " (", c.value("dir", std::string("?")),
                         "); resume with that cache, or start a new run_dir (train.init_from to fine-tune)"));
  };
  if (c.contains("vae_sha256") && c["vae_sha256"].get<std::string>() != m.settings.vae_sha256)
    mismatch("VAE sha256", c["vae_sha256"].get<std::string>().substr(0, 12) + "…", m.settings.vae_sha256.substr(0, 12) + "…");
  if (c.contains("num_samples") && c["num_samples"].get<int64_t>() != cache.size())
    mismatch("num_samples", std::to_string(c["num_samples"].get<int64_t>()), std::to_string(cache.size()));
  if (c.contains("latent_shape") && c["latent_shape"].get<std::vector<int64_t>>() != m.settings.latent_shape)
    mismatch("latent_shape", c["latent_shape"].dump(), nlohmann::json(m.settings.latent_shape).dump());
  if (c.contains("scale_factor") && c["scale_factor"].get<double>() != m.scale_factor)
    mismatch("scale factor", nlohmann::json(c["scale_factor"].get<double>()).dump(), nlohmann::json(m.scale_factor).dump());
}

class LDMTrainer : public Trainer {
 public:
  explicit LDMTrainer(const ConfigView& cfg) : cfg_(cfg), objective_(cfg.diffusion()) {}

  void open_data(TrainingLoop& loop) override {
    const std::string dir = cfg_.cache().dir;
    cache_ = data::LatentCache::open(dir, /*verify=*/false);
    verify_shared(cache_->num_shards(), [&](int64_t i) { cache_->verify_shard(i); }, loop.runtime().cpu_comm(),
                  "verification of the cache " + dir, cache_->shard_file_mb(), "MB");
    const data::Manifest& manifest = cache_->manifest();
    ae_ = std::make_unique<Autoencoder>(
        Autoencoder::load(cfg_.value("vae.kind"), cfg_.value("vae.weights"), manifest.settings.image_shape.at(0)));
    cache_->check_vae(ae_->hash());
    latent_shape_ = manifest.settings.latent_shape;
    scale_ = manifest.scale_factor;
    mopt_ = model_options(manifest);
  }

  std::vector<TrainedModule> build_modules(TrainingLoop& loop) override {
    opts_ = loop.options();
    model_ = core::make_denoiser(mopt_);
    model_->to(loop.param_dtype());
    model_->to(loop.device());
    return {{"model", model_.get(), cfg_.train().lr}};
  }

  void check_resume(const nlohmann::json& state, const std::string& checkpoint) override {
    check_same_cache(state, checkpoint, cfg_.cache().dir, *cache_);
  }

  void init_from(const std::string& from) override {
    if (fs::is_directory(from)) {  // a checkpoint: its EMA weights, whole or sharded
      load_module_weights_from_map(*model_, read_checkpoint_weights(from, /*ema=*/true),
                                   (fs::path(from) / "ema.safetensors").string());
      return;
    }
    load_module_weights(*model_, from);
  }

  std::string describe() const override {
    std::vector<std::string> dims;
    for (auto d : latent_shape_) dims.push_back(std::to_string(d));
    return str("model: ", mopt_.kind == core::DenoiserKind::kDiT ? "DiT " : "UNet ", core::count_parameters(*model_),
               " parameters, ", core::to_string(objective_.options().objective), " objective, latents ", join(dims, "x"),
               ", ", mopt_.num_classes(), " classes, scale factor ", scale_);
  }

  void start(TrainingLoop& loop, int64_t start_step) override {
    Runtime& rt = loop.runtime();
    data::LoaderOptions lopt;
    lopt.layout = {cfg_.train().batch_size, rt.world(), rt.rank(), cfg_.train().grad_accum};
    lopt.seed = static_cast<uint64_t>(cfg_.train().seed);
    lopt.start_step = start_step;
    lopt.prefetch_steps = cfg_.train().prefetch;
    lopt.in_memory = decide_in_memory(cfg_.train().in_memory, cache_->size() * cache_->sample_bytes());
    loader_ = std::make_unique<data::LatentLoader>(cache_, lopt);
    per_rank_ = static_cast<double>(lopt.layout.per_rank());
    draw_seed_ = loop.draw_seed();
    if (!cfg_.ldm().val_cache.empty())
      validation_ = std::make_unique<ValidationSet>(cfg_.ldm().val_cache, ae_->hash(), cfg_.ldm().val_samples, rt.rank(),
                                                    rt.world(), static_cast<uint64_t>(cfg_.train().seed), scale_,
                                                    opts_);
    model_->train();
    if (model_->dropout() > 0) model_->set_dropout_masks(nullptr);
  }

  void micro_step(const MicroStep& m, std::vector<double>& logged) override {
    auto t0 = Clock::now();
    if (m.micro == 0) current_ = loader_->next();
    const data::LatentBatch& mb = current_.micro[m.micro];
    Batch b = prepare(mb, draw_seed_, cache_->manifest().settings.flip, scale_, objective_, mopt_.num_classes(),
                      mopt_.context_length() > 0, mopt_.text.external(), cfg_.ldm().label_dropout, opts_);
    if (model_->dropout() > 0) set_dropout_masks(mb);
    m.times->data += since(t0);
    auto tf = Clock::now();
    at::Tensor per;
    {
      auto guard = m.amp->autocast();
      at::Tensor out = model_->forward(b.noised.x_t, b.noised.time, b.labels, b.text);
      per = objective_.per_sample_loss(out.to(opts_.dtype().toScalarType()), b.noised);
    }
    at::Tensor loss = per.sum() / per_rank_;
    m.amp->backward(loss);
    logged[0] += loss.item<double>();
    m.times->forward_backward += since(tf);
  }

  std::vector<std::string> logged_names() const override { return {"loss"}; }

  void after_step(TrainingLoop& loop, int64_t step, nlohmann::json& values) override {
    if (!validation_) return;
    if ((cfg_.ldm().val_every > 0 && step % cfg_.ldm().val_every == 0) || step == cfg_.train().steps) {
      double v = validation_->loss(*model_, objective_, loop.runtime().cpu_comm());
      values["val_loss"] = v;
      if (loop.runtime().is_root()) LOG(INFO) << "step " << step << ": validation loss " << v;
    }
  }

  bool wants_eval_weights(int64_t step) const override {
    return cfg_.ldm().sample_every > 0 && step % cfg_.ldm().sample_every == 0;
  }

  bool periodic(TrainingLoop& loop, int64_t step) override {
    if (cfg_.ldm().sample_every <= 0 || step % cfg_.ldm().sample_every != 0) return false;
    write_grid(loop, step);  // rank 0 only
    return true;
  }

  void finish(TrainingLoop& loop, int64_t step) override { write_grid(loop, step); }

  void checkpoint_state(nlohmann::json& state) const override {
    const data::Manifest& manifest = cache_->manifest();
    state["model"] = to_json(mopt_);
    state["diffusion"] = to_json(cfg_.diffusion());
    state["cache"] = {{"dir", fs::absolute(cfg_.cache().dir).string()}, {"vae_sha256", manifest.settings.vae_sha256},
                      {"scale_factor", scale_}, {"latent_shape", latent_shape_},
                      {"label_names", manifest.settings.label_names}, {"num_samples", cache_->size()},
                      {"image_shape", manifest.settings.image_shape}};
    state["vae"] = {{"kind", ae_->kind()},
                    {"weights", ae_->weights_path().empty() ? "" : fs::absolute(ae_->weights_path()).string()},
                    {"sha256", ae_->hash()}, {"config", ae_->config()}};
  }

  int64_t epoch_size() const override { return cache_->size(); }

 private:
  // The network's options: the config's, with channels and classes from the cache.
  core::DenoiserOptions model_options(const data::Manifest& manifest) const {
    const ModelConfig& m = cfg_.model();
    const data::TextSettings& cache_text = manifest.settings.text;
    if (m.conditioning == "text" && !cache_text.enabled())
      throw UsageError(str("model.conditioning = text but the cache ", cfg_.cache().dir,
                           " holds no captions; encode an image folder with a metadata.jsonl (captions)"));
    if ((m.conditioning == "auto" || m.conditioning == "text") && cache_text.enabled()) {
      if (m.num_classes > 0)
        throw UsageError(str("model.num_classes = ", m.num_classes, " but the cache ", cfg_.cache().dir,
                             " holds captions, which condition the model instead; set model.conditioning = class ",
                             "for a class-conditional model of this data, or model.num_classes = -1"));
      if (m.net.text.context_length != cache_text.context_length)
        throw UsageError(str("model.context_length = ", m.net.text.context_length, " but the cache ", cfg_.cache().dir,
                             " holds captions tokenised to ", cache_text.context_length,
                             " tokens; set model.context_length = ", cache_text.context_length,
                             " or re-encode with the new length"));
      core::DenoiserOptions o = m.resolve(latent_shape_.at(0), 0, cache_text.context_length);
      if (cache_text.external()) {  // the cached embeddings replace the joint encoder
        o.text.embedding_dim = cache_text.embedding_dim;
        o.set_io(latent_shape_.at(0), 0, cache_text.embedding_length);
      }
      o.validate();
      o.check_latent_size(latent_shape_.at(1), latent_shape_.at(2));
      return o;
    }
    int64_t classes = m.num_classes < 0 ? manifest.num_classes() : m.num_classes;
    if (m.conditioning == "none") classes = 0;
    if (classes > 0 && manifest.num_classes() == 0)
      throw UsageError(str("model.num_classes = ", classes, " but the cache ", cfg_.cache().dir,
                           " has no labels (an unlabelled image folder); set model.num_classes = 0 or -1"));
    if (classes > 0 && classes < manifest.num_classes())
      throw UsageError(str("model.num_classes = ", classes, " but the cache has ", manifest.num_classes(), " classes"));
    core::DenoiserOptions o = m.resolve(latent_shape_.at(0), classes);
    o.validate();
    o.check_latent_size(latent_shape_.at(1), latent_shape_.at(2));
    return o;
  }

  // A text model's grid rows: the captions of up to 8 samples spread over the cache, distinct
  // (with their cached embeddings for a model of external embeddings).
  void grid_prompts(TrainingGridOptions& g) const {
    std::vector<int64_t> rows;
    const int64_t n = cache_->size(), want = std::min<int64_t>(8, n);
    for (int64_t k = 0; k < n && static_cast<int64_t>(g.prompts.size()) < want; ++k) {
      const int64_t i = (k % want) * (n / want) + k / want;  // 0, n/8, 2n/8, ..., then 1, n/8+1, ...
      std::string c = cache_->read_captions({i}).at(0);
      if (std::find(g.prompts.begin(), g.prompts.end(), c) != g.prompts.end()) continue;
      g.prompts.push_back(std::move(c));
      rows.push_back(i);
    }
    if (mopt_.text.external()) {
      data::LatentRows r = cache_->read(rows, /*as_float=*/true);
      g.prompt_embeddings.embeddings = r.text_embedding;
      g.prompt_embeddings.mask = r.text_mask;
    }
  }

  // Dropout masks drawn per sample from the keyed generator (one stream per layer).
  void set_dropout_masks(const data::LatentBatch& mb) {
    at::Tensor ep = mb.epochs, ix = mb.indices;
    const double p = model_->dropout();
    const uint64_t seed = draw_seed_;
    const at::Device device = opts_.device();
    model_->set_dropout_masks([=](int64_t layer, at::IntArrayRef shape) {
      at::Tensor u = core::keyed_uniform(seed, sid(core::Stream::kDropoutBase) + static_cast<uint32_t>(layer), ep, ix,
                                         shape.slice(1), at::TensorOptions().dtype(at::kFloat));
      return (u >= p).to(device);
    });
  }

  void write_grid(TrainingLoop& loop, int64_t step) {
    if (!loop.runtime().is_root()) return;
    pause_point("ldm.grid");  // tests hold rank 0 here past dist.timeout_s (tests/e2e/train_waits.sh)
    auto t0 = Clock::now();
    if (!ema_model_) {
      ema_model_ = core::make_denoiser(mopt_);
      ema_model_->to(loop.param_dtype());
      ema_model_->to(loop.device());
    }
    loop.copy_eval_weights(*ema_model_);
    TrainingGridOptions g;
    g.per_class = cfg_.ldm().grid_per_class;
    g.steps = cfg_.ldm().grid_steps;
    g.guidance = cfg_.ldm().grid_guidance;
    g.seed = static_cast<uint64_t>(cfg_.train().seed);
    g.label_names = cache_->manifest().settings.label_names;
    if (ema_model_->context_length() > 0) grid_prompts(g);
    std::string path = write_training_grid(*ema_model_, objective_, *ae_, latent_shape_, scale_, g, cfg_.train().run_dir, step);
    LOG(INFO) << "sample grid (EMA, " << (objective_.is_flow() ? "Euler " : "DDIM ") << g.steps << " steps, guidance "
              << g.guidance << ") in " << since(t0) << " s: " << path;
  }

  const ConfigView& cfg_;
  LDMObjective objective_;
  std::shared_ptr<data::LatentCache> cache_;
  std::unique_ptr<Autoencoder> ae_;
  std::vector<int64_t> latent_shape_;
  double scale_ = 1.0;
  core::DenoiserOptions mopt_;
  std::shared_ptr<core::DenoiserModule> model_;
  std::shared_ptr<core::DenoiserModule> ema_model_;
  at::TensorOptions opts_;
  std::unique_ptr<data::LatentLoader> loader_;
  data::LoaderStep current_;
  std::unique_ptr<ValidationSet> validation_;
  double per_rank_ = 1.0;
  uint64_t draw_seed_ = 0;
};

}  // namespace

int train_ldm(const ConfigView& cfg, Runtime& rt, const TrainFlags& flags) {
  TrainingLoop loop("ldm", cfg.train(), cfg.dist(), rt, cfg.all_to_json(), cfg.to_ini());
  LDMTrainer trainer(cfg);
  return loop.run(trainer, flags);
}

}  // namespace lf::launch
