// `latentforge encode`: the latent precompute job. Shards are dealt out to the ranks of an
// MPI job (or picked by --task-index/--task-count in a Slurm job array); after a barrier the
// last rank verifies every shard and writes manifest.json (or `encode --finalize` does).
// The VAE runs on cache.device (the local rank's GPU with auto) under cache.precision; on a
// GPU the images go up through pinned memory and the latents come back while the next batch
// encodes (launch/stage_device.h).
#include <filesystem>
#include <glog/logging.h>

#include "core/keyed_rng.h"
#include "core/util/strings.h"
#include "data/encode.h"
#include "data/manifest.h"
#include "launch/autoencoder.h"
#include "launch/data_source.h"
#include "launch/runtime.h"
#include "launch/stage_device.h"
#include "launch/subcommands.h"

namespace lf::launch {

namespace {

int64_t parse_count(const ParsedArgs& a, const std::string& flag, int64_t fallback) {
  if (!a.has(flag)) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(a.flag(flag).c_str(), &end, 10);
  if (!end || *end != '\0' || v < 0) throw UsageError(str("--", flag, " = '", a.flag(flag), "': expected an integer >= 0"));
  return v;
}

data::EncodeOptions encode_options(const CacheConfig& c, const Autoencoder& ae) {
  data::EncodeOptions o;
  o.cache_dir = c.dir;
  o.shard_size = c.shard_size;
  o.store = c.store;
  o.dtype = c.dtype;
  o.flip = c.flip;
  o.scale_factor = c.scale_factor;
  o.vae_hash = ae.hash();
  o.vae_config = ae.config();
  o.batch_size = c.encode_batch;
  return o;
}

}  // namespace

int run_encode(const Invocation& inv) {
  const CacheConfig& cache = inv.config.cache();
  const DataConfig& data_cfg = inv.config.data();
  const ParsedArgs& a = inv.args;
  bool finalize_only = a.has("finalize");
  bool no_finalize = a.has("no-finalize");
  int64_t task_count = parse_count(a, "task-count", 0);
  int64_t task_index = parse_count(a, "task-index", 0);
  if (a.has("task-index") != a.has("task-count"))
    throw UsageError("--task-index and --task-count go together (a Slurm job array: task k of K)");
  if (task_count > 0 && task_index >= task_count)
    throw UsageError(str("--task-index = ", task_index, " must be below --task-count = ", task_count));

  Runtime rt(cache.device, inv.config.dist(), "cache.device", /*device_collectives=*/false);
  StageDevice dev = stage_device(rt.device(), cache.precision, "cache.precision");
  if (task_count > 0 && rt.world() > 1)
    throw UsageError("--task-index/--task-count are for single-process array tasks, not for an MPI job");
  auto source = open_configured_source(data_cfg);
  const std::string weights = inv.config.value("vae.weights");
  Autoencoder ae = Autoencoder::load(inv.config.value("vae.kind"), weights, source->channels());
  if (!ae.is_identity() && ae.image_channels() != source->channels())
    throw UsageError(str("vae.weights = ", weights, " encodes ", ae.image_channels(), "-channel images but ",
                         data_cfg.source, " has ", source->channels(), " (set data.color)"));
  data::EncodeOptions eo = encode_options(cache, ae);
  eo.progress = rt.is_root();
  if (source->captioned()) eo.context_length = std::stoll(inv.config.value("model.context_length"));
  // The test folder's captions have their own file (the names are relative to each folder).
  const std::string emb_key =
      data_cfg.split == "test" && !data_cfg.test_text_embeddings.empty() ? "data.test_text_embeddings" : "data.text_embeddings";
  eo.text_embeddings = inv.config.value(emb_key);
  if (!eo.text_embeddings.empty() && !std::filesystem::is_regular_file(eo.text_embeddings))
    throw UsageError(str(emb_key, " = ", eo.text_embeddings, ": no such file"));
  ae.to(dev.device(), dev.dtype());
  if (rt.is_root() && !finalize_only) LOG(INFO) << "encode: " << rt.world() << " rank(s), VAE on " << dev.describe();

  if (!finalize_only) {
    const uint64_t seed = static_cast<uint64_t>(cache.seed);
    const bool sample = eo.store == data::StoreKind::kSample;
    data::EncodeFn fn = [&](const at::Tensor& images, const at::Tensor& indices, bool flipped) {
      at::Tensor x = dev.upload(images);
      at::Tensor mean, logvar;
      {
        auto autocast = dev.autocast();
        std::tie(mean, logvar) = ae.encode_moments(x, cache.encode_batch);
      }
      mean = mean.to(dev.dtype());
      logvar = logvar.to(dev.dtype());
      std::vector<at::Tensor> out;
      if (!sample) {
        out = {mean, logvar};
      } else if (ae.is_identity()) {
        out = {mean};
      } else {
        // Keyed by (cache.seed, index, flipped), drawn on the device: the same bits as on the CPU.
        at::Tensor eps = core::keyed_normal(seed, core::stream_id(core::Stream::kPosterior), flipped ? 1 : 0,
                                            indices.to(dev.device()), mean.sizes().slice(1), mean.options());
        out = {mean + at::exp(0.5 * logvar) * eps};
      }
      auto host = std::make_shared<HostResult>(dev.download(out));
      data::EncodedBatch eb;
      if (!sample) {
        eb.mean = host->tensors[0];
        eb.logvar = host->tensors[1];
      } else {
        eb.latent = host->tensors[0];
      }
      if (host->ready) eb.wait = [host] { host->wait(); };
      return eb;
    };
    int rank = task_count > 0 ? static_cast<int>(task_index) : rt.rank();
    int world = task_count > 0 ? static_cast<int>(task_count) : rt.world();
    auto report = data::encode_shards(*source, fn, eo, rank, world);
    LOG(INFO) << "encode: " << report.shards_written << " shard(s) written, " << report.shards_skipped
              << " already complete, " << report.shards_redone << " redone (" << report.samples_encoded
              << " images encoded) of " << report.shards_total << " in " << cache.dir;
    if (rt.world() > 1) {
      rt.comm().barrier(dist::Deadline::after(dist::Seconds(inv.config.dist().checkpoint_timeout_s)),
                        "barrier before finalizing the cache");
    }
  }
  bool finalizer = finalize_only || (task_count == 0 && rt.rank() == rt.world() - 1);
  bool finalize = !no_finalize && (finalize_only || task_count == 0);
  if (finalize && finalizer) data::finalize_cache(cache.dir, eo);
  // The finalizer hashes every shard meanwhile: the long deadline, not the collective one.
  if (rt.world() > 1)
    rt.comm().barrier(dist::Deadline::after(dist::Seconds(inv.config.dist().checkpoint_timeout_s)),
                      "barrier after finalize (the last rank verifies every shard)");
  if (finalize && rt.is_root()) {
    auto m = data::Manifest::read(cache.dir + "/" + data::kManifestName);
    LOG(INFO) << "encode: cache " << cache.dir << " finalized: " << m.num_samples() << " samples in "
              << m.shards.size() << " shard(s), latents " << str(m.settings.latent_shape.at(0), "x",
              m.settings.latent_shape.at(1), "x", m.settings.latent_shape.at(2)) << " " << data::to_string(cache.dtype)
              << ", scale factor " << m.scale_factor;
  }
  return 0;
}

}  // namespace lf::launch
