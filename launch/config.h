// The whole effective configuration of a latentforge run: one typed struct per concern
// ([data], [cache], [vae], [vae_train], [model], [diffusion], [train], [dist], [sample],
// [eval]), registered key by key in config.cpp. One INI file can drive every stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/diffusion.h"
#include "core/sampler.h"
#include "core/denoiser_options.h"
#include "core/vae.h"
#include "data/cache_format.h"
#include "distributed/sync_options.h"
#include "launch/config_registry.h"
#include "launch/lr_schedule.h"

namespace lf::launch {

struct DataConfig {
  std::string source = "/usr/share/datasets/fashion-mnist";  // IDX directory or image folder
  std::string split = "train";                               // train|test (where the source has both)
  std::string test_source = "";  // image folders: the test split's folder (IDX files hold both splits)
  std::string text_embeddings = "";  // captioned folders: caption embeddings computed elsewhere (HDF5)
  std::string test_text_embeddings = "";  // the test folder's (encode --data.split=test)
  int64_t image_size = 32;     // IDX 28x28 is padded to it; folder images resized + cropped
  std::string color = "auto";  // auto|gray|rgb
  bool skip_bad = false;       // skip (and list) undecodable inputs instead of failing
  int64_t limit = 0;           // use only the first N samples (0: all)
  int64_t max_pixels = int64_t{1} << 26;  // folder images: refused above this many pixels
  double max_aspect = 32.0;               // ...or a longer / shorter side ratio above this
  std::string background = "white";       // folder: colour under transparent pixels
};

struct CacheConfig {
  std::string dir = "cache";
  int64_t shard_size = 10000;
  data::StoreDType dtype = data::StoreDType::kF16;
  data::StoreKind store = data::StoreKind::kMoments;
  bool flip = false;               // also store the horizontally flipped image's moments
  std::string scale_factor = "auto";  // auto (1/std of the latents) or a number
  int64_t encode_batch = 256;
  int64_t seed = 0;  // keys the one latent drawn per sample when store = sample
  std::string device = "auto";     // auto|cpu|cuda: where the VAE encodes
  std::string precision = "auto";  // auto|f32|f64|bf16|f16 (auto: bf16 autocast on CUDA)
};

// Keys shared by `train` ([train]) and `vae train` ([vae_train]).
struct TrainLoopConfig {
  std::string section = "train";  // the INI section these keys are in (not a key itself)
  std::string run_dir = "runs/ldm";
  int64_t steps = 1000;
  int64_t batch_size = 128;   // global batch of one optimizer step
  int64_t grad_accum = 1;     // micro-batches per step (B / (W*A) samples each)
  int64_t seed = 0;
  double lr = 2e-4;
  LRSchedule lr_schedule = LRSchedule::kConstant;
  int64_t warmup_steps = 100;
  double min_lr_ratio = 0.1;  // cosine floor as a fraction of lr
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;     // global norm; 0 disables
  double ema_decay = 0.999;
  int64_t ema_warmup = 1;      // 1: decay_t = min(decay, (1+n)/(10+n))
  std::string precision = "auto";  // auto|f32|f64|bf16|f16
  std::string device = "auto";     // auto|cpu|cuda
  std::string init_from = "";      // weights to start from (fine-tuning), not a resume
  int64_t log_every = 50;
  int64_t ckpt_every = 1000;
  bool async_checkpoint = false;  // write checkpoints from host copies in a background thread
  int64_t keep_last = 3;
  int64_t milestone_every = 0;  // 0: none
  int64_t max_bad_steps = 20;   // consecutive non-finite steps before stopping
  std::string in_memory = "auto";  // auto|true|false: load the whole cache into RAM
  int64_t prefetch = 4;            // batches prepared ahead by the loader thread
};

// [vae]: which autoencoder, and the architecture `vae train` builds.
struct VAEConfig {
  std::string kind = "kl";   // kl|identity
  std::string weights = "";  // diffusers AutoencoderKL dir or vae.safetensors (kind=kl)
  core::VAEOptions arch;     // in/out channels come from the data
};

// [vae_train] beyond the shared loop keys: the autoencoder's loss.
struct VAELossConfig {
  core::ReconLoss recon_loss = core::ReconLoss::kL1;
  double kl_weight = 1e-6;
  int64_t disc_start = 0;      // step at which the patch discriminator starts (0: never)
  double disc_weight = 0.5;
  int64_t disc_layers = 2;
  int64_t disc_channels = 32;
  double disc_lr = 0.0;        // 0: same as vae_train.lr
  int64_t eval_samples = 1000; // held-out test images for PSNR/SSIM at the end and on eval_every
  int64_t eval_every = 0;      // 0: only at the end
};

// [train] beyond the shared loop keys: the latent diffusion model's own.
struct LDMTrainConfig {
  double label_dropout = 0.1;   // probability of the null class (classifier-free guidance)
  int64_t sample_every = 0;     // decode a sample grid every N steps (0: only at the end)
  int64_t grid_per_class = 8;
  int64_t grid_steps = 25;
  double grid_guidance = 3.0;
  std::string val_cache = "";   // held-out latent cache (e.g. the test split) for a val loss
  int64_t val_every = 0;        // 0: only at the end (when val_cache is set)
  int64_t val_samples = 1000;
};

// [model]: the denoiser (model.kind) and its sizes; the DiT's may come from a preset.
struct ModelConfig {
  core::DenoiserOptions net;
  std::string preset = "none";  // none|dit-s|dit-b|dit-l|dit-xl: the DiT's depth, width, heads
  int64_t num_classes = -1;     // -1: from the cache's labels (0 when unlabelled)
  // What the model is conditioned on: auto (captions when the cache has them, else class labels
  // when it has labels, else nothing), text, class or none.
  std::string conditioning = "auto";

  // The network's options: the preset applied (a size set to neither its default nor the
  // preset's value is a UsageError naming both keys), `channels` in and out, `classes`, and
  // `context_length` tokens per caption (0: no text conditioning).
  core::DenoiserOptions resolve(int64_t channels, int64_t classes, int64_t context_length = 0) const;
};

struct DistConfig {
  double bucket_mb = 25.0;
  bool overlap = true;           // all-reduce buckets during backward on a communication thread
  dist::AllReduceAlgorithm allreduce = dist::AllReduceAlgorithm::kAuto;  // flat|hierarchical|auto
  dist::GradWire grad_wire = dist::GradWire::kF32;  // bf16: half the bytes, f32 sums
  double timeout_s = 300.0;      // a collective that takes longer aborts the job, naming it
  double checkpoint_timeout_s = 1800.0;  // the longer deadline of waits for rank 0's own work (checkpoints, grids)
  bool shard_optimizer = false;  // ZeRO-1: AdamW moments and EMA split across ranks, sharded checkpoints
};

struct SampleConfig {
  std::string checkpoint = "";   // checkpoint dir, or a run dir (its newest valid checkpoint)
  std::string out_dir = "";      // default: <checkpoint run dir>/samples
  int64_t num = 100;
  std::string classes = "all";   // all|comma-separated class ids
  std::string prompt = "";       // a text model's prompt (sample i gets prompt i mod K)
  std::string prompt_file = "";  // ...or one prompt per line (UTF-8; blank lines skipped)
  std::string prompt_embeddings = "";  // models of external embeddings: the prompts' (HDF5)
  double guidance = 3.0;
  core::SamplerKind sampler = core::SamplerKind::kDDIM;
  int64_t steps = 50;
  double eta = 0.0;
  core::Spacing spacing = core::Spacing::kTrailing;
  int64_t seed = 0;
  int64_t batch_size = 250;
  bool use_ema = true;
  int64_t chunk_size = 1000;       // samples per resumable part (samples/parts/chunk-*.h5)
  std::string device = "auto";     // auto|cpu|cuda
  std::string precision = "auto";  // auto|f32|f64|bf16|f16
};

// [eval]: the feature network and what `eval` compares.
struct EvalConfig {
  std::string classifier = "runs/classifier/classifier.safetensors";  // written by eval train-classifier
  std::string samples = "";    // samples.h5 to evaluate (default: the sample command's output)
  std::string out = "";        // metrics.json (default: next to samples.h5)
  bool vae = true;             // also PSNR/SSIM of the VAE (vae.weights) on the test split
  int64_t vae_images = 10000;  // test images for PSNR/SSIM
  int64_t batch_size = 500;
  int64_t classifier_epochs = 3;  // the fixed recipe of eval train-classifier
  std::string device = "auto";     // auto|cpu|cuda
  std::string precision = "auto";  // auto|f32|f64|bf16|f16
};

struct Config {
  DataConfig data;
  CacheConfig cache;
  VAEConfig vae;
  VAELossConfig vae_loss;
  ModelConfig model;
  core::DiffusionOptions diffusion;
  TrainLoopConfig train;
  LDMTrainConfig ldm;
  TrainLoopConfig vae_train;
  DistConfig dist;
  SampleConfig sample;
  EvalConfig eval;
};

// Binds every key of `config` into `registry` (the field values become the defaults).
void register_config(Config& config, ConfigRegistry& registry);

// Cross-key checks after all values are set; throws UsageError naming the keys.
void validate_config(const Config& config);

// The one rule of the batch layout: SECTION.batch_size must be divisible by SECTION.grad_accum
// times the number of ranks (every rank takes the same number of samples per micro-batch).
// Throws UsageError naming both keys and a batch size that would do.
void check_batch_layout(const TrainLoopConfig& loop, int64_t world);

}  // namespace lf::launch
