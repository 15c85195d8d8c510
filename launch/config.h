// The whole effective configuration of a latentforge run: one typed struct per concern
// ([data], [cache], [vae], [vae_train], [model], [diffusion], [train], [dist], [sample],
// [eval]), registered key by key in config.cpp. One INI file can drive every stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "launch/config_registry.h"

namespace lf::launch {

struct DataConfig {
  std::string source = "/usr/share/datasets/fashion-mnist";  // IDX directory or image folder
  std::string split = "train";                               // train|test (where the source has both)
  int64_t image_size = 0;      // 0: the source's own (IDX 28x28 padded to 32x32)
  std::string color = "auto";  // auto|gray|rgb
  bool skip_bad = false;       // skip (and list) undecodable inputs instead of failing
  int64_t limit = 0;           // use only the first N samples (0: all)
};

struct CacheConfig {
  std::string dir = "cache";
  int64_t shard_size = 10000;
  std::string dtype = "f16";       // f16|f32
  std::string store = "moments";   // moments|sample
  bool flip = false;               // also store the horizontally flipped image's moments
  std::string scale_factor = "auto";  // auto (1/std of the latents) or a number
  int64_t encode_batch = 256;
};

// Keys shared by `train` ([train]) and `vae train` ([vae_train]).
struct TrainLoopConfig {
  std::string run_dir = "runs/ldm";
  int64_t steps = 1000;
  int64_t batch_size = 128;   // global batch of one optimizer step
  int64_t grad_accum = 1;     // micro-batches per step (B / (W*A) samples each)
  int64_t seed = 0;
  double lr = 2e-4;
  std::string lr_schedule = "constant";  // constant|cosine
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
  int64_t keep_last = 3;
  int64_t milestone_every = 0;  // 0: none
  int64_t max_bad_steps = 20;   // consecutive non-finite steps before stopping
  std::string in_memory = "auto";  // auto|true|false: load the whole cache into RAM
  int64_t prefetch = 4;            // batches prepared ahead by the loader thread
};

struct DistConfig {
  double bucket_mb = 25.0;
  bool overlap = true;           // all-reduce buckets during backward on a communication thread
  double timeout_s = 300.0;      // a collective that takes longer aborts the job, naming it
  double checkpoint_timeout_s = 1800.0;  // the longer deadline of a checkpoint write
};

struct SampleConfig {
  std::string checkpoint = "";   // checkpoint dir, or a run dir (its newest valid checkpoint)
  std::string out_dir = "";      // default: <checkpoint run dir>/samples
  int64_t num = 100;
  std::string classes = "all";   // all|comma-separated class ids
  double guidance = 3.0;
  std::string sampler = "ddim";  // ddim|ddpm
  int64_t steps = 50;
  double eta = 0.0;
  std::string spacing = "trailing";  // leading|trailing|linspace
  int64_t seed = 0;
  int64_t batch_size = 250;
  bool use_ema = true;
};

struct Config {
  DataConfig data;
  CacheConfig cache;
  TrainLoopConfig train;
  TrainLoopConfig vae_train;
  DistConfig dist;
  SampleConfig sample;
};

// Binds every key of `config` into `registry` (the field values become the defaults).
void register_config(Config& config, ConfigRegistry& registry);

// Cross-key checks after all values are set; throws UsageError naming the keys.
void validate_config(const Config& config);

}  // namespace lf::launch
