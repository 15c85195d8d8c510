// The latent diffusion training loop (see ldm_trainer.h). Per optimizer step k, rank r of W
// takes positions [kB + rB/W, kB + (r+1)B/W) of the sample stream in A micro-batches; every
// per-sample draw (posterior sample, flip, timestep, noise, label dropout, dropout masks) is
// keyed by (seed, epoch, global sample index), so W ranks x B/W == 1 rank x B and a resumed
// run equals one never stopped (DESIGN.md invariants 1-3).
#include "launch/ldm_trainer.h"

#include <glog/logging.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "core/adamw.h"
#include "core/ema.h"
#include "core/keyed_rng.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/png.h"
#include "core/util/strings.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"
#include "distributed/reducer.h"
#include "launch/autoencoder.h"
#include "launch/generate.h"
#include "launch/cli.h"
#include "launch/job.h"
#include "launch/lr_schedule.h"
#include "launch/mixed_precision.h"
#include "launch/model_io.h"
#include "launch/train_parts.h"
#include "launch/train_session.h"

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

struct Batch {
  at::Tensor x0, t, noise, labels;
};

Batch prepare(const data::LatentBatch& b, uint64_t seed, bool flip, double scale, const core::Diffusion& diffusion,
              const core::DiffusionOptions& dopt, int64_t num_classes, double label_dropout,
              const at::TensorOptions& opts) {
  Batch out;
  out.x0 = draw_x0(b, seed, flip, scale, opts);
  auto shape = out.x0.sizes().slice(1);
  out.t = core::keyed_randint(seed, sid(core::Stream::kTimestep), b.epochs, b.indices, 0, diffusion.timesteps())
              .to(opts.device());
  out.noise = core::keyed_normal(seed, sid(core::Stream::kNoise), b.epochs, b.indices, shape, opts);
  if (dopt.offset_noise > 0) {
    at::Tensor cn = core::keyed_normal(seed, sid(core::Stream::kOffsetNoise), b.epochs, b.indices, {shape[0]}, opts);
    out.noise = diffusion.offset_noise(out.noise, cn);
  }
  if (num_classes > 0) {
    at::Tensor drop = core::keyed_bernoulli(seed, sid(core::Stream::kLabelDrop), b.epochs, b.indices, label_dropout);
    out.labels = at::where(drop, at::full_like(b.labels, num_classes), b.labels).to(opts.device());
  }
  return out;
}

// Resuming on another cache would silently change the samples of every later step (the order
// is a function of the dataset size) or the latents themselves (another VAE or scale), so
// the run would no longer be the one that was stopped (DESIGN.md invariants 2 and 4). The
// checkpoint's state.json records the cache it was trained on.
void check_same_cache(const nlohmann::json& state, const std::string& checkpoint, const std::string& cache_dir,
                      const std::string& vae_sha256, int64_t num_samples, const std::vector<int64_t>& latent_shape,
                      double scale) {
  if (!state.contains("cache")) return;
  const nlohmann::json& c = state["cache"];
  auto mismatch = [&](const std::string& what, const std::string& saved, const std::string& now) {
    throw UsageError(str("cache.dir = ", cache_dir, " has ", what, " ", now, " but the checkpoint ", checkpoint,
                         " was trained on a cache with ", what, " ", saved, " (", c.value("dir", std::string("?")),
                         "); resume with that cache, or start a new run_dir (train.init_from to fine-tune)"));
  };
  if (c.contains("vae_sha256") && c["vae_sha256"].get<std::string>() != vae_sha256)
    mismatch("VAE sha256", c["vae_sha256"].get<std::string>().substr(0, 12) + "…", vae_sha256.substr(0, 12) + "…");
  if (c.contains("num_samples") && c["num_samples"].get<int64_t>() != num_samples)
    mismatch("num_samples", std::to_string(c["num_samples"].get<int64_t>()), std::to_string(num_samples));
  if (c.contains("latent_shape") && c["latent_shape"].get<std::vector<int64_t>>() != latent_shape)
    mismatch("latent_shape", c["latent_shape"].dump(), nlohmann::json(latent_shape).dump());
  if (c.contains("scale_factor") && c["scale_factor"].get<double>() != scale)
    mismatch("scale factor", nlohmann::json(c["scale_factor"].get<double>()).dump(), nlohmann::json(scale).dump());
}

}  // namespace

int train_ldm(const Config& cfg, const ConfigRegistry& registry, Runtime& rt, const std::string& resume) {
  const TrainLoopConfig& loop = cfg.train;
  const int64_t world = rt.world();
  if (loop.batch_size % (world * loop.grad_accum) != 0)
    throw UsageError(str("train.batch_size = ", loop.batch_size, " must be divisible by ranks x train.grad_accum = ",
                         world, " x ", loop.grad_accum));
  const at::Device device = rt.device();
  const Precision precision = resolve_precision(loop.precision, device, "train.precision");
  const at::ScalarType param_dtype = precision == Precision::kF64 ? at::kDouble : at::kFloat;
  const at::TensorOptions opts = at::TensorOptions().dtype(param_dtype).device(device);
  const uint64_t seed = static_cast<uint64_t>(loop.seed);
  // First, so that its stop handlers are in place before the slow start-up (opening the cache,
  // building the model, loading a checkpoint): a SIGUSR1 then is honoured at the first step.
  TrainSession session("ldm", loop, cfg.dist, rt.cpu_comm(), registry.to_json());
  const DebugSwitches debug = read_debug_switches();
  if (debug.any())
    LOG(WARNING) << "debug switches active (results will NOT match an ordinary run):"
                 << (debug.sum_grads ? " LF_DEBUG_SUM_GRADS" : "") << (debug.rank_noise ? " LF_DEBUG_RANK_NOISE" : "")
                 << (debug.throw_at_step >= 0 ? str(" LF_DEBUG_THROW_AT_STEP=", debug.throw_at_step,
                                                    " LF_DEBUG_THROW_RANK=", debug.throw_rank)
                                              : "");
  // The key of every per-sample draw; only LF_DEBUG_RANK_NOISE makes it depend on the rank.
  const uint64_t draw_seed = seed + (debug.rank_noise ? static_cast<uint64_t>(rt.rank()) : 0);

  // ---- the cache and its autoencoder ---------------------------------------------------------
  auto cache = data::LatentCache::open(cfg.cache.dir, /*verify=*/rt.is_root());
  const data::Manifest& manifest = cache->manifest();
  const int64_t image_channels = manifest.settings.image_shape.at(0);
  Autoencoder ae = Autoencoder::load(cfg.vae.kind, cfg.vae.weights, image_channels);
  cache->check_vae(ae.hash());
  const std::vector<int64_t> latent_shape = manifest.settings.latent_shape;
  const double scale = manifest.scale_factor;
  const bool flip = manifest.settings.flip;

  core::UNetOptions mopt = cfg.model;
  mopt.in_channels = mopt.out_channels = latent_shape.at(0);
  if (mopt.num_classes < 0) mopt.num_classes = manifest.num_classes();
  if (mopt.num_classes > 0 && manifest.num_classes() == 0)
    throw UsageError(str("model.num_classes = ", mopt.num_classes, " but the cache ", cfg.cache.dir,
                         " has no labels (an unlabelled image folder); set model.num_classes = 0 or -1"));
  if (mopt.num_classes > 0 && mopt.num_classes < manifest.num_classes())
    throw UsageError(str("model.num_classes = ", mopt.num_classes, " but the cache has ", manifest.num_classes(),
                         " classes"));
  mopt.validate();
  if (latent_shape.at(1) % mopt.size_multiple() != 0 || latent_shape.at(2) % mopt.size_multiple() != 0)
    throw UsageError(str("the latents are ", latent_shape[1], "x", latent_shape[2], " but model.channel_mult has ",
                         mopt.levels(), " levels, which needs sizes divisible by ", mopt.size_multiple()));
  core::Diffusion diffusion(cfg.diffusion);

  // ---- model, resume or init, sync, optimizer, EMA -----------------------------------------
  std::optional<std::string> ckpt = session.resolve_resume(resume);
  // Initialisation draws from torch's generator: the same on every rank and for any rank count.
  at::manual_seed(seed);
  core::UNet model(mopt);
  model->to(param_dtype);
  model->to(device);
  nlohmann::json saved_state;
  int64_t start_step = 0;
  if (ckpt) {
    saved_state = CheckpointManager::read_state(*ckpt);
    check_same_cache(saved_state, *ckpt, cfg.cache.dir, manifest.settings.vae_sha256, cache->size(), latent_shape,
                     scale);
    load_module_weights(*model, (fs::path(*ckpt) / "model.safetensors").string());
    start_step = saved_state.at("step").get<int64_t>();
    if (rt.is_root()) LOG(INFO) << "resuming from " << *ckpt << " at step " << start_step;
  } else if (!loop.init_from.empty()) {
    std::string path = fs::is_directory(loop.init_from) ? (fs::path(loop.init_from) / "ema.safetensors").string()
                                                         : loop.init_from;
    load_module_weights(*model, path);
    if (rt.is_root()) LOG(INFO) << "initialised the model from " << path << " (fine-tuning; step 0)";
  }
  // On 2^k ranks the reducer only sums, and the 1/world factor rides on passes that read the
  // gradients anyway (the norm and AdamW): one pass over all gradients fewer per step, and
  // bitwise the same result, since scaling by a power of two is exact. LF_DEBUG_SUM_GRADS
  // (the negative control of the rank-equivalence tests) sums and never scales.
  const bool fold_average = world > 1 && (world & (world - 1)) == 0 && !debug.sum_grads;
  const double grad_scale = fold_average ? 1.0 / static_cast<double>(world) : 1.0;
  ParamGroup group = make_param_group(*model, loop, loop.lr, cfg.dist, rt,
                                      debug.sum_grads || fold_average ? dist::GradReduction::kSum
                                                                      : dist::GradReduction::kAverage);
  const NamedTensors& named = group.named;
  const std::vector<at::Tensor>& params = group.params;
  dist::Reducer* reducer = group.reducer.get();
  core::AdamW& optimizer = *group.optimizer;
  core::EMA ema(named, loop.ema_decay, loop.ema_warmup != 0);
  int64_t bad_steps = 0;
  if (ckpt) {
    auto opt_state = core::load_safetensors((fs::path(*ckpt) / "optimizer.safetensors").string()).tensors;
    optimizer.load_state(opt_state);
    auto ema_file = core::load_safetensors((fs::path(*ckpt) / "ema.safetensors").string()).tensors;
    core::NamedTensors ema_state(ema_file.begin(), ema_file.end());
    ema.load_state(ema_state);
    bad_steps = saved_state.value("bad_steps", int64_t{0});
  }
  if (rt.is_root()) {
    LOG(INFO) << "model: UNet " << core::count_parameters(*model) << " parameters, latents "
              << join([&] {
                   std::vector<std::string> v;
                   for (auto d : latent_shape) v.push_back(std::to_string(d));
                   return v;
                 }(), "x")
              << ", " << mopt.num_classes << " classes, scale factor " << scale << ", " << world << " rank(s), "
              << "global batch " << loop.batch_size << " (" << loop.grad_accum << " micro-batches), "
              << to_string(precision) << " on " << device.str();
  }

  // ---- data ------------------------------------------------------------------------------------
  data::LoaderOptions lopt;
  lopt.layout = {loop.batch_size, world, rt.rank(), loop.grad_accum};
  lopt.seed = seed;
  lopt.start_step = start_step;
  lopt.prefetch_steps = loop.prefetch;
  lopt.in_memory = decide_in_memory(loop.in_memory, cache->size() * cache->sample_bytes());
  data::LatentLoader loader(cache, lopt);

  // Held-out validation latents (posterior means), a fixed slice per rank.
  at::Tensor val_x0, val_labels, val_t, val_noise;
  if (!cfg.ldm.val_cache.empty()) {
    auto val = data::LatentCache::open(cfg.ldm.val_cache, false);
    val->check_vae(ae.hash());
    int64_t n = std::min<int64_t>(cfg.ldm.val_samples, val->size());
    int64_t begin = n * rt.rank() / world, end = n * (rt.rank() + 1) / world;
    std::vector<int64_t> idx;
    for (int64_t i = begin; i < end; ++i) idx.push_back(i);
    auto rows = val->read(idx);
    at::Tensor m = rows.latents.count("mean") ? rows.latents["mean"] : rows.latents["latent"];
    val_x0 = m.to(opts) * scale;
    val_labels = rows.labels.to(device);
    at::Tensor ids = rows.indices;
    // Fixed timesteps spread evenly over [0, T) and fixed keyed noise.
    val_t = (at::arange(begin, end, at::kLong) * diffusion.timesteps()).div(std::max<int64_t>(1, n), "floor").to(device);
    val_noise = core::keyed_normal(seed, sid(core::Stream::kValidation), 0, ids, latent_shape, opts);
  }
  auto validation_loss = [&]() -> double {
    if (!val_x0.defined()) return NAN;
    at::NoGradGuard g;
    model->eval();
    at::Tensor sum = at::zeros({2}, at::kDouble);
    if (val_x0.size(0) > 0) {
      at::Tensor xt = diffusion.q_sample(val_x0, val_t, val_noise);
      at::Tensor y = mopt.num_classes > 0 ? val_labels : at::Tensor();
      at::Tensor per = diffusion.per_sample_loss(model->forward(xt, val_t, y), val_x0, val_noise, val_t);
      sum[0] = per.sum().item<double>();
      sum[1] = static_cast<double>(per.size(0));
    }
    model->train();
    if (world > 1) rt.cpu_comm().all_reduce(sum, dist::ReduceOp::kSum, "all_reduce of the validation loss");
    return sum[0].item<double>() / std::max(1.0, sum[1].item<double>());
  };

  // EMA weights in a model of their own, for grids (rank 0).
  core::UNet ema_model(nullptr);
  auto write_grid = [&](int64_t step) {
    if (!rt.is_root()) return;
    if (ema_model.is_empty()) {
      ema_model = core::UNet(mopt);
      ema_model->to(param_dtype);
      ema_model->to(device);
    }
    std::vector<at::Tensor> ps;
    for (auto& p : ema_model->parameters()) ps.push_back(p);
    ema.copy_to(ps);
    auto [ids, labels] = grid_labels(mopt.num_classes, cfg.ldm.grid_per_class);
    GenerateOptions g;
    g.steps = cfg.ldm.grid_steps;
    g.guidance = cfg.ldm.grid_guidance;
    g.seed = seed;
    at::Tensor z = generate_latents(ema_model, diffusion, ids, labels, latent_shape, g);
    ae.to(device);
    at::Tensor images = ae.decode(z.to(at::kFloat) / scale);
    fs::create_directories(fs::path(loop.run_dir) / "samples");
    std::string path = (fs::path(loop.run_dir) / "samples" / (CheckpointManager::name_for_step(step) + ".png")).string();
    write_png_grid(path, images.cpu(), cfg.ldm.grid_per_class);
    write_png_grid((fs::path(loop.run_dir) / "grid.png").string(), images.cpu(), cfg.ldm.grid_per_class);
    LOG(INFO) << "sample grid (EMA, DDIM " << g.steps << " steps, guidance " << g.guidance << "): " << path;
  };

  auto save = [&](int64_t step) {
    nlohmann::json state;
    state["samples_seen"] = step * loop.batch_size;
    state["epoch"] = static_cast<double>(step * loop.batch_size) / static_cast<double>(cache->size());
    state["seed"] = loop.seed;
    state["bad_steps"] = bad_steps;
    state["model"] = to_json(mopt);
    state["diffusion"] = to_json(cfg.diffusion);
    state["cache"] = {{"dir", fs::absolute(cfg.cache.dir).string()}, {"vae_sha256", manifest.settings.vae_sha256},
                      {"scale_factor", scale}, {"latent_shape", latent_shape},
                      {"label_names", manifest.settings.label_names}, {"num_samples", cache->size()},
                      {"image_shape", manifest.settings.image_shape}};
    state["vae"] = {{"kind", ae.kind()}, {"weights", ae.weights_path().empty() ? "" : fs::absolute(ae.weights_path()).string()},
                    {"sha256", ae.hash()}, {"config", ae.config()}};
    std::vector<CheckpointFile> files = {
        {"model.safetensors", [&](const std::string& p) { save_module_weights(*model, p); }},
        {"ema.safetensors", [&](const std::string& p) { core::save_safetensors(p, to_cpu_map(ema.state())); }},
        {"optimizer.safetensors", [&](const std::string& p) { core::save_safetensors(p, to_cpu_map(optimizer.state())); }},
    };
    uint64_t bytes = 0;
    for (const auto& p : params) bytes += p.numel() * p.element_size() * 4;
    session.save_checkpoint(step, state, files, bytes);
  };

  // ---- the loop ----------------------------------------------------------------------------
  session.begin(start_step, saved_state.is_null() ? 0.0 : saved_state.value("train_seconds", 0.0));
  MixedPrecision amp(precision, device);
  const int64_t micro = lopt.layout.micro_size();
  const double per_rank = static_cast<double>(lopt.layout.per_rank());
  int64_t step = start_step;
  int exit_code = kExitOk;
  model->train();
  if (mopt.dropout > 0) {
    model->set_dropout_masks(nullptr);
  }
  LossWindow logged(1);
  while (step < loop.steps) {
    if (step + 1 == debug.throw_at_step && rt.rank() == debug.throw_rank)
      throw std::runtime_error(str("injected failure at step ", step + 1, " (LF_DEBUG_THROW_AT_STEP)"));
    StepTimes times;
    auto t0 = Clock::now();
    data::LoaderStep ls = loader.next();
    times.data += since(t0);
    double loss_sum = 0.0;
    for (int64_t a = 0; a < loop.grad_accum; ++a) {
      auto ta = Clock::now();
      const data::LatentBatch& mb = ls.micro[a];
      Batch b = prepare(mb, draw_seed, flip, scale, diffusion, cfg.diffusion, mopt.num_classes, cfg.ldm.label_dropout, opts);
      if (mopt.dropout > 0) {
        at::Tensor ep = mb.epochs, ix = mb.indices;
        double p = mopt.dropout;
        model->set_dropout_masks([=](int64_t layer, at::IntArrayRef shape) {
          at::Tensor u = core::keyed_uniform(draw_seed, sid(core::Stream::kDropoutBase) + static_cast<uint32_t>(layer), ep,
                                             ix, shape.slice(1), at::TensorOptions().dtype(at::kFloat));
          return (u >= p).to(opts.device());
        });
      }
      times.data += since(ta);
      auto tf = Clock::now();
      bool last = a + 1 == loop.grad_accum;
      if (reducer) reducer->set_sync(last);
      at::Tensor per;
      {
        auto guard = amp.autocast();
        at::Tensor out = model->forward(diffusion.q_sample(b.x0, b.t, b.noise), b.t, b.labels);
        per = diffusion.per_sample_loss(out.to(param_dtype), b.x0, b.noise, b.t);
      }
      at::Tensor loss = per.sum() / per_rank;
      amp.backward(loss);
      loss_sum += loss.item<double>();
      times.forward_backward += since(tf);
      (void)micro;
    }
    auto ts = Clock::now();
    if (reducer) {
      reducer->set_step(step);
      reducer->finish_backward();
    }
    times.sync += since(ts);
    auto to = Clock::now();
    const int64_t next = step + 1;
    double gnorm = amp.unscale_and_norm(params) * grad_scale;
    bool finite = std::isfinite(gnorm);
    double lr = learning_rate(loop.lr, loop.lr_schedule, loop.warmup_steps, loop.min_lr_ratio, next, loop.steps);
    if (finite) {
      core::clip_grad_norm(params, loop.grad_clip, gnorm);
      optimizer.step(lr, grad_scale);
      ema.update(params);
      bad_steps = 0;
    } else {
      ++bad_steps;
      LOG(WARNING) << "step " << next << ": non-finite gradient (norm " << gnorm << "), update skipped (" << bad_steps
                   << " in a row)";
      if (bad_steps >= loop.max_bad_steps)
        throw std::runtime_error(str(bad_steps, " consecutive steps with non-finite loss or gradients (train.max_bad_steps = ",
                                     loop.max_bad_steps, "); lower train.lr or check the cache"));
    }
    amp.update(finite);
    zero_grads(params);
    times.optimizer += since(to);
    step = next;

    nlohmann::json values = {{"lr", lr}, {"grad_norm", gnorm}, {"skipped", !finite}};
    logged.add({loss_sum});
    if (step % loop.log_every == 0 || step == loop.steps) {
      values["loss"] = logged.take_means(rt.cpu_comm())[0];
      values["epoch"] = static_cast<double>(step * loop.batch_size) / static_cast<double>(cache->size());
    }
    if (val_x0.defined() || !cfg.ldm.val_cache.empty()) {
      if ((cfg.ldm.val_every > 0 && step % cfg.ldm.val_every == 0) || step == loop.steps) {
        double v = validation_loss();
        values["val_loss"] = v;
        if (rt.is_root()) LOG(INFO) << "step " << step << ": validation loss " << v;
      }
    }
    session.record_step(step, loop.steps, loop.batch_size, times, values);
    if (cfg.ldm.sample_every > 0 && step % cfg.ldm.sample_every == 0 && step != loop.steps) write_grid(step);

    StopRequest stop = session.agree_stop();
    bool periodic = step % loop.ckpt_every == 0 || step == loop.steps;
    if (periodic || stop != StopRequest::kNone) save(step);
    if (stop != StopRequest::kNone && step < loop.steps) {  // a stop at the last step just finishes
      exit_code = stop == StopRequest::kRequeue ? kExitRequeue : kExitTerminated;
      if (rt.is_root())
        LOG(WARNING) << (stop == StopRequest::kRequeue ? "SIGUSR1" : "SIGTERM") << ": checkpoint of step " << step
                     << " written; exiting with " << exit_code
                     << (stop == StopRequest::kRequeue ? " (requeue me)" : " (terminated)");
      return exit_code;
    }
  }
  if (start_step < loop.steps) write_grid(step);
  if (rt.is_root()) LOG(INFO) << "training done at step " << step << "; checkpoints in " << session.checkpoints().dir();
  return exit_code;
}

}  // namespace lf::launch
