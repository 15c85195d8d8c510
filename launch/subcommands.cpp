// The subcommand table (see subcommands.h).
#include "launch/subcommands.h"

namespace lf::launch {

int run_encode(const Invocation& inv);
int run_train(const Invocation& inv);
int run_vae_train(const Invocation& inv);
int run_sample(const Invocation& inv);
int run_eval(const Invocation& inv);
int run_train_classifier(const Invocation& inv);
int run_export(const Invocation& inv);

namespace {

std::vector<std::string> vae_train_reads() {
  std::vector<std::string> r = {"data", "vae_train", "dist"};
  r.insert(r.end(), kVAEArchKeys.begin(), kVAEArchKeys.end());
  return r;
}

}  // namespace

const std::vector<Subcommand>& subcommands() {
  static const std::vector<Subcommand> table = {
      {"vae train", "train the autoencoder (AutoencoderKL) on images (MPI ranks)",
       "[--config FILE] [--resume auto|PATH] [--break-lock] [--section.key=VALUE ...]",
       "Trains the VAE on data.source (L1/L2 + KL, optional patch discriminator), data-parallel over the\n"
       "ranks. Writes RUN_DIR/vae (diffusers AutoencoderKL layout), reconstructions.png and PSNR/SSIM on\n"
       "held-out images. Exit codes as for train.",
       {{"resume", true, "auto|PATH", "auto: newest valid checkpoint of vae_train.run_dir (fresh if none); or a checkpoint dir"},
        {"break-lock", false, "", "take the run directory's lock from a job on another host that is gone (logged)"}},
       vae_train_reads(),
       run_vae_train},
      {"encode", "precompute the latent cache of a dataset (MPI ranks or a Slurm job array)",
       "[--config FILE] [--task-index K --task-count N | --finalize] [--section.key=VALUE ...]",
       "Encodes data.source with the VAE (vae.kind, vae.weights) into the sharded HDF5 cache at cache.dir.\n"
       "Shard i holds samples [i*S, (i+1)*S) whatever the number of processes; finished shards are\n"
       "skipped on a re-run; the last rank verifies every shard and writes manifest.json. The VAE runs on\n"
       "cache.device (auto: the local rank's GPU) under cache.precision. Captions (metadata.jsonl) are\n"
       "stored as UTF-8 and as tokens of model.context_length.",
       {{"task-index", true, "K", "this job-array task (0-based); encodes shards K, K+N, ..."},
        {"task-count", true, "N", "number of job-array tasks"},
        {"finalize", false, "", "only verify the shards and write manifest.json (after a job array)"},
        {"no-finalize", false, "", "do not finalize (array tasks)"}},
       {"data", "cache", "vae.kind", "vae.weights", "model.context_length", "dist"},
       run_encode},
      {"train", "train the latent diffusion model on a latent cache (MPI ranks)",
       "[--config FILE] [--resume auto|PATH] [--break-lock] [--section.key=VALUE ...]",
       "Trains the text-conditioned (captioned cache), class-conditional or unconditional UNet or DiT on cache.dir with the DDPM or flow objective,\n"
       "data-parallel over the ranks of mpirun or srun. Exit codes: 0 done, 75 checkpointed after\n"
       "SIGUSR1 (requeue me), 143 checkpointed after SIGTERM, 1 failure, 2 usage/config error.",
       {{"resume", true, "auto|PATH", "auto: newest valid checkpoint of train.run_dir (fresh if none); or a checkpoint dir"},
        {"break-lock", false, "", "take the run directory's lock from a job on another host that is gone (logged)"}},
       {"cache", "vae.kind", "vae.weights", "model", "diffusion", "train", "dist"},
       run_train},
      {"sample", "generate images from a trained checkpoint (grid.png + samples.h5)",
       "[--config FILE] [--sample.checkpoint=PATH] [--section.key=VALUE ...]",
       "Samples sample.num images with DDIM or DDPM and classifier-free guidance from a checkpoint (EMA\n"
       "weights by default), decodes them with the VAE the checkpoint records, writes grid.png (one row\n"
       "per class, or per prompt for a text model: sample.prompt, sample.prompt_file) and samples.h5.\n"
       "Sample i's noise is keyed by (sample.seed, i): any number of ranks and\n"
       "any sample.batch_size give the same images. Runs on sample.device, in resumable chunks of\n"
       "sample.chunk_size (a re-run of a killed job samples only the missing ones); rank 0 merges them.",
       {},
       {"sample", "train.run_dir", "vae.weights", "dist"},
       run_sample},
      {"eval", "measure a VAE (PSNR, SSIM) and samples (FD against the test split, class or prompt accuracy)",
       "[--config FILE] [--eval.samples=samples.h5] [--section.key=VALUE ...]",
       "Reports the VAE's PSNR/SSIM on the test split and, for samples.h5, the Fréchet distance of the\n"
       "classifier's features against the test split, with its floor (as many real training\n"
       "images), the class accuracy of class-conditional samples and, for a text model's samples, the\n"
       "category accuracy of each prompt's samples (the label the prompt has as a caption of the test\n"
       "split), macro-averaged beside the classifier's and the majority baseline; writes metrics.json. Runs on\n"
       "eval.device and on any number of ranks (the same metrics as one process).",
       {},
       {"data", "vae.kind", "vae.weights", "eval", "sample.checkpoint", "sample.out_dir", "train.run_dir", "dist"},
       run_eval},
      {"eval train-classifier", "train the evaluation classifier (a fixed recipe) on the labelled data",
       "[--config FILE] [--eval.classifier=PATH]",
       "Trains the small CNN whose features and predictions `eval` uses, on the training split of\n"
       "data.source, and reports its test accuracy (>= 90% expected on Fashion-MNIST).",
       {},
       {"data", "eval.classifier", "eval.batch_size", "eval.classifier_epochs"},
       run_train_classifier},
      {"inspect", "describe and verify a safetensors file, cache, checkpoint or run directory", "PATH",
       "Lists a safetensors file's tensors (name, dtype, shape, bytes); summarises and verifies a latent\n"
       "cache (manifest.json) or a checkpoint (state.json); lists a run directory's checkpoints.",
       {},
       {},
       run_inspect},
      {"export", "write a checkpoint's model whole (safetensors + config + diffusers VAE) for use elsewhere",
       "CHECKPOINT OUT_DIR",
       "Writes OUT_DIR/model.safetensors and ema.safetensors (whole tensors, whether the checkpoint was\n"
       "written by one rank or sharded by dist.shard_optimizer over several), model_config.json (the\n"
       "network, diffusion and latent settings) and, for a latent model with a KL VAE, OUT_DIR/vae in the\n"
       "diffusers AutoencoderKL layout. CHECKPOINT may be a run directory (its newest valid checkpoint).",
       {},
       {},
       run_export},
  };
  return table;
}

}  // namespace lf::launch
