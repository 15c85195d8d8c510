// The encode engine: turns a Source into the sharded HDF5 latent cache through an encoder
// callback (launch/ wires the VAE in), then finalizes it (verify every shard, write
// manifest.json atomically). data/ knows nothing of models or MPI: ranks are given.
//
// Protocol (docs/design.md, invariant 4; docs/cache.md): shard i holds global samples [iS, (i+1)S).
// Rank r of W (or task k of K in a Slurm job array) owns shards r, r+W, r+2W, ... Each shard
// is written under a temporary name, fsynced, then renamed; a re-run skips finished shards
// that verify and redoes the rest. After every rank returned (the caller's barrier), one
// process calls finalize_cache.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "data/cache_format.h"
#include "data/manifest.h"
#include "data/source.h"

namespace lf::data {

struct EncodeOptions {
  std::string cache_dir;                 // created if missing
  int64_t shard_size = 10000;            // samples per shard (the last one may hold fewer)
  StoreKind store = StoreKind::kMoments;  // moments (mean, logvar) or one sampled latent
  StoreDType dtype = StoreDType::kF16;    // storage dtype of the latents
  bool flip = false;                      // also store the horizontally flipped image's latents
  std::string scale_factor = "auto";      // "auto" (1/std of the latents) or a positive number
  std::string vae_hash;                   // SHA-256 of the VAE weights (binds the cache to them)
  nlohmann::json vae_config = nlohmann::json::object();  // the VAE's config, recorded as given
  int64_t batch_size = 256;               // images per encoder call
  int64_t context_length = 0;             // captioned data: tokens per caption (model.context_length)
  // Captioned data: an HDF5 file of caption embeddings computed elsewhere (data/text_embeddings.h),
  // matched to the images by file name and stored in the shards (f16) beside the tokens.
  std::string text_embeddings;
  bool progress = true;                   // show a progress meter (set on one rank only)
  // Throws std::invalid_argument naming the bad field.
  void validate() const;
};

// What the encoder returns for n images: `mean` and `logvar` [n, c, h, w] (store = moments)
// or `latent` [n, c, h, w] (store = sample); float tensors on any device. An encoder that
// computes asynchronously (on a GPU) sets `wait`, which blocks until the tensors hold their
// values: the engine calls it only after handing the encoder the next batch, so reading,
// encoding and writing overlap.
struct EncodedBatch {
  at::Tensor mean, logvar, latent;
  std::function<void()> wait = {};
};

// The encoder: images [n, C, H, W] in [-1, 1] with their global sample indices int64 [n];
// `flipped` is true when the images are the horizontally flipped variants (so a sampling
// encoder can key its noise by (index, flipped)). Called from the calling thread only.
using EncodeFn =
    std::function<EncodedBatch(const at::Tensor& images, const at::Tensor& indices, bool flipped)>;

// The shards rank `rank` of `world` owns: rank, rank + world, ... below num_shards. For a
// job array pass (task index, task count).
std::vector<int64_t> shards_for_rank(int64_t num_shards, int rank, int world);

struct EncodeReport {
  int64_t shards_total = 0;    // shards in the whole cache
  int64_t shards_written = 0;  // by this call
  int64_t shards_skipped = 0;  // already complete and verified
  int64_t shards_redone = 0;   // found corrupt or unreadable, rewritten
  int64_t samples_encoded = 0;
};

// Encodes this rank's shards into options.cache_dir. Blocks until they are written. A cache
// made with another VAE hash or incompatible settings (store, dtype, flip, shard size, source)
// is refused with std::invalid_argument naming the file, both values and what to do.
// Crash points: "encode.shard_written" (data written and fsynced, before the rename).
EncodeReport encode_shards(const Source& source, const EncodeFn& encode,
                           const EncodeOptions& options, int rank, int world);

// Verifies every shard of `cache_dir` (presence, consistent settings, checksum), computes the
// latent statistics and scale factor, and writes manifest.json atomically. Call once, after
// all ranks/tasks finished encode_shards. Uses options.scale_factor, and checks
// options.vae_hash (if not empty), store, dtype, flip and shard_size against the shards.
// Throws std::runtime_error naming missing or corrupt shards. Crash point:
// "encode.manifest_write" (manifest partly written under its temporary name).
Manifest finalize_cache(const std::string& cache_dir, const EncodeOptions& options);

// Parses a numeric cache.scale_factor; throws std::invalid_argument unless a positive number.
double parse_scale_factor(const std::string& s);

// The text of the error for a cache made with another VAE (used here and by LatentCache).
std::string vae_mismatch_message(const std::string& where, const std::string& cache_hash,
                                 const std::string& configured_hash);

}  // namespace lf::data
