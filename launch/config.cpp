// Registration of every config key with its range and doc (see config.h, docs/cli.md).
#include "launch/config.h"

#include "core/util/strings.h"
#include "launch/mixed_precision.h"

namespace lf::launch {

namespace {

constexpr int64_t kBig = 1000000000000LL;

// The device and precision keys every stage has (train, vae_train, cache for encode, sample, eval).
void register_device_keys(const std::string& s, std::string* device, std::string* precision, ConfigRegistry& r) {
  std::vector<std::string> precision_choices = {"auto"};
  for (const auto& name : precisions().names()) precision_choices.push_back(name);
  r.add_choice(s + ".precision", precision, precision_choices,
               "auto: f32 on CPU, bf16 autocast on GPU; f64 on CPU for exactness tests");
  r.add_choice(s + ".device", device, {"auto", "cpu", "cuda"}, "auto: CUDA when available (the local rank's GPU)");
}

void register_model(ModelConfig& m, ConfigRegistry& r) {
  core::UNetOptions& u = m.net.unet;
  core::DiTOptions& d = m.net.dit;
  r.add_enum("model.kind", &m.net.kind, core::denoiser_kinds(),
             "the denoiser: unet (ADM UNet, Dhariwal & Nichol 2021) or dit (DiT, Peebles & Xie 2023)");
  r.add_int("model.num_classes", &m.num_classes, -1, 1000000,
            "-1: from the cache's labels (0 when unlabelled); 0: unconditional");
  r.add_choice("model.conditioning", &m.conditioning, {"auto", "text", "class", "none"},
               "auto: captions when the cache has them, else class labels when it has labels, else none");
  r.add_int("model.context_length", &m.net.text.context_length, 3, 4096,
            "tokens per caption (UTF-8 bytes + begin/end; longer captions are cut): encode tokenises to it");
  r.add_int("model.text_width", &m.net.text.width, 1, 16384, "text models: width of the joint text encoder (the context)");
  r.add_int("model.text_depth", &m.net.text.depth, 1, 64, "text models: transformer layers of the joint text encoder");
  r.add_int("model.text_heads", &m.net.text.heads, 1, 256, "text models: attention heads of the joint text encoder");
  r.add_int("model.channels", &u.model_channels, 1, 4096, "unet: channels at the input resolution");
  r.add_int_list("model.channel_mult", &u.channel_mult, 1, 64, 1, 8, "unet: channel multiplier per level");
  r.add_int("model.num_res_blocks", &u.num_res_blocks, 1, 16, "unet: ResBlocks per level");
  r.add_int_list("model.attention_ds", &u.attention_ds, 1, 1024, 0, 8,
                 "unet: downsampling factors (1 = input resolution, 2 = one level down, ...) with self-attention");
  r.add_int("model.head_channels", &u.head_channels, 1, 4096, "unet: channels per attention head");
  r.add_float("model.dropout", &u.dropout, 0.0, 0.99, "unet: ResBlock dropout (masks from the keyed generator)");
  r.add_int("model.norm_groups", &u.norm_groups, 1, 1024, "unet: GroupNorm groups");
  std::vector<std::string> presets = {"none"};
  for (const auto& p : core::dit_preset_names()) presets.push_back(p);
  r.add_choice("model.preset", &m.preset, presets, "dit: the paper's sizes (depth, width, heads; Table 1), or none");
  r.add_int("model.patch_size", &d.patch_size, 1, 64, "dit: tokens are patch_size x patch_size latent patches");
  r.add_int("model.depth", &d.depth, 1, 256, "dit: transformer blocks");
  r.add_int("model.width", &d.width, 4, 16384, "dit: hidden size (divisible by model.heads, and by 4)");
  r.add_int("model.heads", &d.heads, 1, 256, "dit: attention heads");
  r.add_float("model.mlp_ratio", &d.mlp_ratio, 0.25, 64.0, "dit: MLP hidden size as a multiple of model.width");
}

void register_train_loop(TrainLoopConfig& t, const std::string& s, ConfigRegistry& r) {
  r.add_path(s + ".run_dir", &t.run_dir, "directory for checkpoints/, metrics.jsonl and grids of this run");
  r.add_int(s + ".steps", &t.steps, 1, kBig, "optimizer steps to train in total (may grow on resume)");
  r.add_int(s + ".batch_size", &t.batch_size, 1, 1 << 24, "global batch of one optimizer step, over all ranks");
  r.add_int(s + ".grad_accum", &t.grad_accum, 1, 4096, "micro-batches per step; B/(ranks*grad_accum) must be whole");
  r.add_int(s + ".seed", &t.seed, 0, (1LL << 62), "the one seed: data order and every per-sample draw");
  r.add_float(s + ".lr", &t.lr, 0.0, 10.0, "peak learning rate (AdamW)");
  r.add_enum(s + ".lr_schedule", &t.lr_schedule, lr_schedules(), "after warm-up: constant or cosine decay");
  r.add_int(s + ".warmup_steps", &t.warmup_steps, 0, kBig, "linear learning-rate warm-up steps");
  r.add_float(s + ".min_lr_ratio", &t.min_lr_ratio, 0.0, 1.0, "cosine schedule's final lr as a fraction of lr");
  r.add_float(s + ".weight_decay", &t.weight_decay, 0.0, 10.0, "AdamW decoupled weight decay");
  r.add_float(s + ".adam_beta1", &t.adam_beta1, 0.0, 0.999999, "AdamW beta1");
  r.add_float(s + ".adam_beta2", &t.adam_beta2, 0.0, 0.999999999, "AdamW beta2");
  r.add_float(s + ".adam_eps", &t.adam_eps, 1e-30, 1.0, "AdamW epsilon");
  r.add_float(s + ".grad_clip", &t.grad_clip, 0.0, 1e9, "clip the global gradient norm to this (0: off)");
  r.add_float(s + ".ema_decay", &t.ema_decay, 0.0, 1.0, "EMA decay of the weights (0: EMA = weights)");
  r.add_int(s + ".ema_warmup", &t.ema_warmup, 0, 1, "1: EMA decay warms up as min(decay, (1+n)/(10+n))");
  register_device_keys(s, &t.device, &t.precision, r);
  r.add_path(s + ".init_from", &t.init_from, "start from these weights (fine-tuning); not a resume");
  r.add_int(s + ".log_every", &t.log_every, 1, kBig, "log a line and a metrics.jsonl record every N steps");
  r.add_int(s + ".ckpt_every", &t.ckpt_every, 1, kBig, "write a checkpoint every N steps (and at the end)");
  r.add_bool(s + ".async_checkpoint", &t.async_checkpoint,
             "write checkpoints in a background thread from host copies taken at the step boundary (one in flight; "
             "the last one and a stop's are written before exit)");
  r.add_int(s + ".keep_last", &t.keep_last, 1, 1000, "keep the last K checkpoints");
  r.add_int(s + ".milestone_every", &t.milestone_every, 0, kBig, "also keep every M-th step's checkpoint forever (0: none)");
  r.add_int(s + ".max_bad_steps", &t.max_bad_steps, 1, 1000000, "consecutive non-finite steps before the run stops");
  r.add_choice(s + ".in_memory", &t.in_memory, {"auto", "true", "false"}, "load the whole cache into RAM (auto: when it fits in a quarter of RAM)");
  r.add_int(s + ".prefetch", &t.prefetch, 1, 1024, "batches the loader thread prepares ahead");
}

}  // namespace

void register_config(Config& c, ConfigRegistry& r) {
  c.model.num_classes = -1;  // from the cache's labels unless set
  c.model.net.text.context_length = 77;  // CLIP's; the emoji captions fit with their skin tones
  r.add_path("data.source", &c.data.source, "IDX directory (MNIST/Fashion-MNIST) or image folder (class = subfolder; or metadata.jsonl: captions, labels)");
  r.add_choice("data.split", &c.data.split, {"train", "test"}, "which split, where the source has both");
  r.add_path("data.test_source", &c.data.test_source,
             "image folders: the folder of the test split (held-out images for eval, the classifier and encode with "
             "data.split = test); IDX directories hold both splits");
  r.add_path("data.text_embeddings", &c.data.text_embeddings,
             "captioned folders: an HDF5 file of caption embeddings computed elsewhere (embedding N x L x D, mask, "
             "file_name), stored in the cache (f16); the text model then reads them instead of its own encoder. "
             "One file per folder: the test folder's is data.test_text_embeddings");
  r.add_path("data.test_text_embeddings", &c.data.test_text_embeddings,
             "captioned folders: the caption embeddings of data.test_source (encode --data.split=test reads them "
             "instead of data.text_embeddings)");
  r.add_int("data.image_size", &c.data.image_size, 8, 8192, "image side: IDX 28x28 is padded to it, folder images resized + centre-cropped");
  r.add_choice("data.color", &c.data.color, {"auto", "gray", "rgb"}, "channels of folder images (auto: gray for IDX, rgb otherwise)");
  r.add_bool("data.skip_bad", &c.data.skip_bad, "skip undecodable, empty, truncated or too large inputs (listed in the manifest)");
  r.add_int("data.limit", &c.data.limit, 0, kBig, "use only the first N samples (0: all)");
  r.add_int("data.max_pixels", &c.data.max_pixels, 1, kBig,
            "folder images whose header declares more pixels are refused before decoding (skipped with skip_bad)");
  r.add_float("data.max_aspect", &c.data.max_aspect, 1, 1e9,
              "folder images with a longer / shorter side ratio above this are refused likewise");
  r.add_string("data.background", &c.data.background,
               "folder images with transparency are composited on this colour: white, black or R,G,B (0..255 each)");

  r.add_path("cache.dir", &c.cache.dir, "latent cache directory (shard-*.h5 + manifest.json)");
  r.add_int("cache.shard_size", &c.cache.shard_size, 1, 100000000, "samples per shard; shard i holds [i*S, (i+1)*S)");
  r.add_enum("cache.dtype", &c.cache.dtype, data::store_dtypes(), "storage dtype of latents");
  r.add_enum("cache.store", &c.cache.store, data::store_kinds(), "posterior mean+logvar, or one sampled latent");
  r.add_bool("cache.flip", &c.cache.flip, "also store the horizontally flipped images' moments");
  r.add_custom("cache.scale_factor", "string", "auto|positive number", c.cache.scale_factor,
               "latent scale factor: auto = 1/std of the latents, or a number",
               [&c](const std::string& v) {
                 std::string t = trim(v);
                 if (t != "auto") {
                   char* end = nullptr;
                   double x = std::strtod(t.c_str(), &end);
                   if (t.empty() || *end != '\0' || !(x > 0))
                     throw UsageError(str("cache.scale_factor = '", v, "': expected auto or a positive number"));
                 }
                 c.cache.scale_factor = t;
               },
               [&c] { return c.cache.scale_factor; });
  r.add_int("cache.encode_batch", &c.cache.encode_batch, 1, 65536, "images per VAE encode call");
  r.add_int("cache.seed", &c.cache.seed, 0, (1LL << 62), "keys the latent drawn per sample when cache.store = sample");
  register_device_keys("cache", &c.cache.device, &c.cache.precision, r);

  r.add_choice("vae.kind", &c.vae.kind, {"kl", "identity"}, "kl: a trained AutoencoderKL; identity: f = 1, the pixel-space baseline");
  r.add_path("vae.weights", &c.vae.weights, "the VAE: a diffusers AutoencoderKL directory (config.json + weights) or a vae.safetensors file");
  r.add_int_list("vae.channels", &c.vae.arch.block_out_channels, 1, 4096, 1, 6,
                 "block_out_channels per level; f = 2^(levels-1) (1 level: f = 1)");
  r.add_int("vae.layers_per_block", &c.vae.arch.layers_per_block, 1, 16, "ResNet blocks per encoder level (decoder: one more)");
  r.add_int("vae.latent_channels", &c.vae.arch.latent_channels, 1, 256, "channels of the latent z");
  r.add_int("vae.norm_groups", &c.vae.arch.norm_num_groups, 1, 1024, "GroupNorm groups (divides every channel count)");
  r.add_bool("vae.mid_attention", &c.vae.arch.mid_block_add_attention, "self-attention in the middle blocks");

  register_model(c.model, r);

  r.add_enum("diffusion.objective", &c.diffusion.objective, core::objectives(),
             "ddpm (discrete timesteps; the keys below) or flow (rectified flow, v = eps - x0; t_* keys)");
  r.add_enum("diffusion.schedule", &c.diffusion.schedule, core::schedule_kinds(),
             "noise schedule: DDPM linear, LDM scaled_linear, or cosine (Nichol & Dhariwal)");
  r.add_int("diffusion.timesteps", &c.diffusion.timesteps, 1, 100000, "T, the number of diffusion steps");
  r.add_enum("diffusion.prediction", &c.diffusion.prediction, core::predictions(), "what the network predicts");
  r.add_enum("diffusion.loss_weighting", &c.diffusion.weighting, core::loss_weightings(),
             "per-sample loss weights: uniform or min-SNR-gamma (Hang et al. 2023)");
  r.add_float("diffusion.min_snr_gamma", &c.diffusion.min_snr_gamma, 1e-6, 1e6, "gamma of min-SNR weighting");
  r.add_float("diffusion.offset_noise", &c.diffusion.offset_noise, 0.0, 10.0, "offset-noise strength (0: off)");
  r.add_enum("diffusion.t_sampling", &c.diffusion.t_sampling, core::time_samplings(),
             "flow: how t is drawn per sample, uniform or logit-normal (SD3, Esser et al. 2024)");
  r.add_float("diffusion.t_mean", &c.diffusion.t_mean, -10.0, 10.0, "flow, logit_normal: mean m of the normal");
  r.add_float("diffusion.t_std", &c.diffusion.t_std, 0.01, 10.0, "flow, logit_normal: standard deviation s");

  register_train_loop(c.train, "train", r);
  r.add_float("train.label_dropout", &c.ldm.label_dropout, 0.0, 1.0, "probability of the null condition, class or caption (for classifier-free guidance)");
  r.add_int("train.sample_every", &c.ldm.sample_every, 0, kBig, "decode a sample grid (EMA, DDIM, CFG) every N steps (0: at the end only)");
  r.add_int("train.grid_per_class", &c.ldm.grid_per_class, 1, 64, "samples per class (row) in the training grids");
  r.add_int("train.grid_steps", &c.ldm.grid_steps, 1, 10000, "sampler steps of the training grids (DDIM; Euler for a flow model)");
  r.add_float("train.grid_guidance", &c.ldm.grid_guidance, 0.0, 100.0, "guidance scale of the training grids");
  r.add_path("train.val_cache", &c.ldm.val_cache, "held-out latent cache (e.g. the test split) for a validation loss");
  r.add_int("train.val_every", &c.ldm.val_every, 0, kBig, "validation loss every N steps (0: at the end only)");
  r.add_int("train.val_samples", &c.ldm.val_samples, 1, 10000000, "held-out samples in the validation loss");

  c.vae_train.section = "vae_train";
  c.vae_train.run_dir = "runs/vae";
  c.vae_train.lr = 1e-3;
  c.vae_train.ema_decay = 0.0;
  register_train_loop(c.vae_train, "vae_train", r);
  r.add_enum("vae_train.recon_loss", &c.vae_loss.recon_loss, core::recon_losses(), "reconstruction loss");
  r.add_float("vae_train.kl_weight", &c.vae_loss.kl_weight, 0.0, 1e6, "weight of the KL term");
  r.add_int("vae_train.disc_start", &c.vae_loss.disc_start, 0, kBig, "step at which the patch discriminator starts (0: never)");
  r.add_float("vae_train.disc_weight", &c.vae_loss.disc_weight, 0.0, 1e6, "scale of the adaptive adversarial weight");
  r.add_int("vae_train.disc_layers", &c.vae_loss.disc_layers, 1, 8, "discriminator layers");
  r.add_int("vae_train.disc_channels", &c.vae_loss.disc_channels, 1, 4096, "discriminator base channels");
  r.add_float("vae_train.disc_lr", &c.vae_loss.disc_lr, 0.0, 10.0, "discriminator learning rate (0: vae_train.lr)");
  r.add_int("vae_train.eval_samples", &c.vae_loss.eval_samples, 1, 10000000, "held-out test images for PSNR/SSIM");
  r.add_int("vae_train.eval_every", &c.vae_loss.eval_every, 0, kBig, "PSNR/SSIM every N steps (0: at the end only)");

  r.add_float("dist.bucket_mb", &c.dist.bucket_mb, 0.001, 4096, "gradient all-reduce bucket size (MB)");
  r.add_bool("dist.overlap", &c.dist.overlap, "all-reduce buckets during backward on a communication thread");
  r.add_enum("dist.allreduce", &c.dist.allreduce, dist::allreduce_algorithms(),
             "gradient all-reduce: flat over all ranks, or hierarchical (within hosts, then between them); auto: "
             "hierarchical on several hosts with several ranks each");
  r.add_enum("dist.grad_wire", &c.dist.grad_wire, dist::grad_wires(),
             "format of gradients between ranks (hierarchical: between hosts): f32, or bf16 (half the bytes, f32 sums)");
  r.add_float("dist.timeout_s", &c.dist.timeout_s, 1, 86400, "a collective (or MPI start-up or shut-down) slower than this ends the job, naming it");
  r.add_float("dist.checkpoint_timeout_s", &c.dist.checkpoint_timeout_s, 1, 86400 * 7,
              "deadline of waits for rank 0's own work: a checkpoint write or verification, grids, evaluation");
  r.add_bool("dist.shard_optimizer", &c.dist.shard_optimizer,
             "ZeRO-1: each rank keeps AdamW moments and EMA for 1/W of the parameters (gradients reduce-scattered, "
             "parameters all-gathered) and writes its part of every checkpoint in parallel; needs grad_wire = f32");

  r.add_path("sample.checkpoint", &c.sample.checkpoint, "checkpoint directory, or a run dir (its newest valid checkpoint)");
  r.add_path("sample.out_dir", &c.sample.out_dir, "where grid.png and samples.h5 go (default: RUN_DIR/samples)");
  r.add_int("sample.num", &c.sample.num, 1, 100000000, "number of samples");
  r.add_string("sample.classes", &c.sample.classes, "all, or comma-separated class ids to sample");
  r.add_string("sample.prompt", &c.sample.prompt, "text models: the prompt (with sample.prompt_file: the first one)");
  r.add_path("sample.prompt_file", &c.sample.prompt_file,
             "text models: a UTF-8 file of prompts, one per line (blank lines skipped); sample i gets prompt i mod K");
  r.add_path("sample.prompt_embeddings", &c.sample.prompt_embeddings,
             "models of external caption embeddings: an HDF5 file of the prompts' embeddings (embedding, mask, text); "
             "sample i gets prompt i mod K");
  r.add_float("sample.guidance", &c.sample.guidance, 0, 100, "classifier-free guidance scale (1: none)");
  r.add_enum("sample.sampler", &c.sample.sampler, core::sampler_kinds(),
             "ddim or ddpm for a ddpm-objective model, euler or heun for a flow one");
  r.add_int("sample.steps", &c.sample.steps, 1, 100000, "sampling steps (DDPM: at most T)");
  r.add_float("sample.eta", &c.sample.eta, 0, 1, "DDIM eta (0: deterministic, 1: DDPM-like)");
  r.add_enum("sample.spacing", &c.sample.spacing, core::spacings(), "timestep spacing");
  r.add_int("sample.seed", &c.sample.seed, 0, (1LL << 62), "sample i's noise is keyed by (seed, i)");
  r.add_int("sample.batch_size", &c.sample.batch_size, 1, 1 << 20, "samples per model call (does not change results)");
  r.add_bool("sample.use_ema", &c.sample.use_ema, "sample with the EMA weights");
  r.add_int("sample.chunk_size", &c.sample.chunk_size, 1, 100000000,
            "samples per resumable part; chunk k holds samples [k*C, (k+1)*C) (does not change results)");
  register_device_keys("sample", &c.sample.device, &c.sample.precision, r);

  r.add_path("eval.classifier", &c.eval.classifier, "the feature/label network written by `eval train-classifier`");
  r.add_path("eval.samples", &c.eval.samples, "samples.h5 to evaluate (default: sample.out_dir/samples.h5)");
  r.add_path("eval.out", &c.eval.out, "metrics.json to write (default: next to samples.h5)");
  r.add_bool("eval.vae", &c.eval.vae, "also report the VAE's PSNR/SSIM on the test split (vae.kind = kl)");
  r.add_int("eval.vae_images", &c.eval.vae_images, 1, 100000000, "test images for the VAE's PSNR/SSIM");
  r.add_int("eval.batch_size", &c.eval.batch_size, 1, 1 << 20, "images per classifier/VAE call");
  r.add_int("eval.classifier_epochs", &c.eval.classifier_epochs, 1, 1000, "epochs of the classifier recipe");
  register_device_keys("eval", &c.eval.device, &c.eval.precision, r);
}

core::DenoiserOptions ModelConfig::resolve(int64_t channels, int64_t classes, int64_t context_length) const {
  core::DenoiserOptions o = net;
  if (preset != "none") {
    const core::DiTSize s = core::dit_preset(preset);
    const core::DiTOptions defaults;
    auto take = [&](int64_t* field, int64_t preset_value, int64_t default_value, const char* key) {
      if (*field != default_value && *field != preset_value)
        throw UsageError(str(key, " = ", *field, " conflicts with model.preset = ", preset, ", whose ", key, " is ",
                             preset_value, "; set the preset or the size, not both"));
      *field = preset_value;
    };
    take(&o.dit.depth, s.depth, defaults.depth, "model.depth");
    take(&o.dit.width, s.width, defaults.width, "model.width");
    take(&o.dit.heads, s.heads, defaults.heads, "model.heads");
  }
  o.set_io(channels, classes, context_length);
  return o;
}

void validate_config(const Config& c) {
  c.diffusion.validate();
  if (c.model.preset != "none" && c.model.net.kind != core::DenoiserKind::kDiT)
    throw UsageError(str("model.preset = ", c.model.preset, " sizes a DiT, but model.kind = ",
                         core::to_string(c.model.net.kind), "; set model.kind = dit"));
  // Channels and classes come from the cache later; any valid ones check the rest now.
  const bool text = c.model.conditioning == "text";
  c.model.resolve(4, text ? 0 : std::max<int64_t>(0, c.model.num_classes), text ? c.model.net.text.context_length : 0)
      .validate();
  c.vae.arch.validate();
  for (const auto* t : {&c.train, &c.vae_train}) check_batch_layout(*t, 1);
  if (c.dist.shard_optimizer && c.dist.grad_wire == dist::GradWire::kBF16)
    throw UsageError("dist.shard_optimizer = true all-gathers the parameters themselves, which dist.grad_wire = bf16 "
                     "would round; set dist.grad_wire = f32");
  if (c.dist.shard_optimizer)
    for (const auto* t : {&c.train, &c.vae_train})
      if (t->async_checkpoint)
        throw UsageError(str(t->section, ".async_checkpoint = true with dist.shard_optimizer = true: sharded "
                             "checkpoints are written by every rank in parallel, synchronously; set one of them "
                             "to false"));
}

void check_batch_layout(const TrainLoopConfig& loop, int64_t world) {
  const int64_t unit = world * loop.grad_accum;
  if (loop.batch_size % unit != 0)
    throw UsageError(str(loop.section, ".batch_size = ", loop.batch_size, " must be divisible by ", loop.section,
                         ".grad_accum = ", loop.grad_accum, " times the number of ranks (", world,
                         "): every rank takes the same number of samples per micro-batch (e.g. ", loop.section,
                         ".batch_size = ", (loop.batch_size + unit - 1) / unit * unit, ")"));
}

}  // namespace lf::launch
