// The VAE training loop (see vae_trainer.h). The sample order, the slices of ranks and
// micro-batches and the posterior noise follow the same invariants as the diffusion trainer
// (keyed by seed, epoch and global image index), so 2 ranks == 1 rank and resume is exact.
#include "launch/vae_trainer.h"

#include <glog/logging.h>

#include <chrono>
#include <filesystem>

#include "core/adamw.h"
#include "core/diffusers_vae.h"
#include "core/discriminator.h"
#include "core/ema.h"
#include "core/image_metrics.h"
#include "core/keyed_rng.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/fs.h"
#include "core/util/png.h"
#include "core/util/strings.h"
#include "data/sample_stream.h"
#include "distributed/reducer.h"
#include "launch/data_source.h"
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

// The whole source as uint8 [N, C, H, W] (4x smaller than float in RAM).
at::Tensor load_images_u8(const data::Source& source, int64_t begin, int64_t end) {
  std::vector<at::Tensor> parts;
  for (int64_t i = begin; i < end; i += 4096) {
    at::Tensor x = source.get(i, std::min(end, i + 4096)).images;
    parts.push_back(((x.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte));
  }
  return parts.empty() ? at::empty({0}, at::kByte) : at::cat(parts);
}

at::Tensor to_float(const at::Tensor& u8, const at::TensorOptions& opts) {
  return u8.to(opts) / 127.5 - 1.0;
}

}  // namespace

ReconstructionQuality reconstruction_quality(core::VAE& vae, const at::Tensor& images, int64_t batch) {
  at::NoGradGuard g;
  bool was = vae->is_training();
  vae->eval();
  std::vector<at::Tensor> recs;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    at::Tensor x = images.narrow(0, i, std::min(batch, images.size(0) - i));
    recs.push_back(vae->decode(vae->encode(x).mode()).clamp(-1, 1));
  }
  if (was) vae->train();
  ReconstructionQuality q;
  q.reconstructions = at::cat(recs);
  at::Tensor a = (images.to(at::kDouble) + 1) / 2, b = (q.reconstructions.to(at::kDouble) + 1) / 2;
  q.psnr = core::mean_psnr(a, b);
  q.ssim = a.size(2) >= 11 ? core::ssim(a, b).mean().item<double>() : NAN;
  q.count = images.size(0);
  return q;
}

int train_vae(const Config& cfg, const ConfigRegistry& registry, Runtime& rt, const std::string& resume) {
  const TrainLoopConfig& loop = cfg.vae_train;
  const VAELossConfig& lc = cfg.vae_loss;
  const int64_t world = rt.world();
  if (loop.batch_size % (world * loop.grad_accum) != 0)
    throw UsageError(str("vae_train.batch_size = ", loop.batch_size, " must be divisible by ranks x vae_train.grad_accum = ",
                         world, " x ", loop.grad_accum));
  const at::Device device = rt.device();
  const Precision precision = resolve_precision(loop.precision, device, "vae_train.precision");
  const at::ScalarType dtype = precision == Precision::kF64 ? at::kDouble : at::kFloat;
  const at::TensorOptions opts = at::TensorOptions().dtype(dtype).device(device);
  const uint64_t seed = static_cast<uint64_t>(loop.seed);
  const core::ReconLoss recon_kind = core::recon_loss_from_string(lc.recon_loss);

  // ---- data: the training images in memory, held-out ones for PSNR/SSIM ----------------------
  auto source = open_configured_source(cfg.data);
  at::Tensor eval_u8;
  int64_t n_train = source->size();
  try {
    auto test = open_configured_source(cfg.data, cfg.data.split == "train" ? "test" : "train");
    eval_u8 = load_images_u8(*test, 0, std::min(lc.eval_samples, test->size()));
  } catch (const std::invalid_argument&) {
    // A folder without splits: hold out its last images from training.
    int64_t held = std::min(lc.eval_samples, source->size() / 10);
    n_train = source->size() - held;
    eval_u8 = load_images_u8(*source, n_train, source->size());
  }
  at::Tensor train_u8 = load_images_u8(*source, 0, n_train);
  if (rt.is_root())
    LOG(INFO) << "vae train: " << n_train << " training images " << source->channels() << "x" << source->height() << "x"
              << source->width() << " from " << cfg.data.source << ", " << eval_u8.size(0) << " held out";

  core::VAEOptions vopt = cfg.vae.arch;
  vopt.in_channels = vopt.out_channels = source->channels();
  vopt.sample_size = source->height();
  vopt.validate();
  if (source->height() % vopt.downsample_factor() != 0)
    throw UsageError(str("data.image_size = ", source->height(), " is not divisible by the VAE's factor f = ",
                         vopt.downsample_factor(), " (vae.channels has ", vopt.block_out_channels.size(), " levels)"));

  TrainSession session("vae", loop, cfg.dist, rt.cpu_comm(), registry.to_json());
  std::optional<std::string> ckpt = session.resolve_resume(resume);
  // Initialisation draws from torch's generator: the same on every rank and for any rank count.
  at::manual_seed(seed);
  core::VAE vae(vopt);
  vae->to(dtype);
  vae->to(device);
  const bool use_disc = lc.disc_start > 0;
  core::PatchDiscriminator disc(nullptr);
  if (use_disc) {
    core::DiscriminatorOptions dopt;
    dopt.in_channels = vopt.in_channels;
    dopt.base_channels = lc.disc_channels;
    dopt.n_layers = lc.disc_layers;
    dopt.norm_groups = std::min<int64_t>(32, lc.disc_channels);
    dopt.validate();
    disc = core::PatchDiscriminator(dopt);
    disc->to(dtype);
    disc->to(device);
  }
  nlohmann::json saved;
  int64_t start_step = 0;
  if (ckpt) {
    saved = CheckpointManager::read_state(*ckpt);
    load_module_weights(*vae, (fs::path(*ckpt) / "model.safetensors").string());
    if (use_disc) load_module_weights(*disc, (fs::path(*ckpt) / "disc.safetensors").string());
    start_step = saved.at("step").get<int64_t>();
    if (rt.is_root()) LOG(INFO) << "resuming from " << *ckpt << " at step " << start_step;
  } else if (!loop.init_from.empty()) {
    core::VAE init = fs::is_directory(loop.init_from) ? core::load_diffusers_vae(loop.init_from)
                                                       : core::load_vae_file(loop.init_from);
    load_module_weights_from_map(*vae, core::state_dict(*init), loop.init_from);
  }
  ParamGroup g = make_param_group(*vae, loop, loop.lr, cfg.dist, rt);
  ParamGroup d;
  if (use_disc) d = make_param_group(*disc, loop, lc.disc_lr > 0 ? lc.disc_lr : loop.lr, cfg.dist, rt);
  core::EMA ema(g.named, loop.ema_decay, loop.ema_warmup != 0);
  int64_t bad_steps = 0;
  if (ckpt) {
    g.optimizer->load_state(core::load_safetensors((fs::path(*ckpt) / "optimizer.safetensors").string()).tensors);
    auto e = core::load_safetensors((fs::path(*ckpt) / "ema.safetensors").string()).tensors;
    ema.load_state(core::NamedTensors(e.begin(), e.end()));
    if (use_disc)
      d.optimizer->load_state(core::load_safetensors((fs::path(*ckpt) / "disc_optimizer.safetensors").string()).tensors);
    bad_steps = saved.value("bad_steps", int64_t{0});
  }
  if (rt.is_root())
    LOG(INFO) << "VAE: f = " << vopt.downsample_factor() << ", latent " << vopt.latent_channels << "x"
              << source->height() / vopt.downsample_factor() << "x" << source->width() / vopt.downsample_factor()
              << ", " << core::count_parameters(*vae) << " parameters"
              << (use_disc ? str(", discriminator ", core::count_parameters(*disc), " parameters from step ", lc.disc_start)
                           : std::string())
              << "; " << world << " rank(s), global batch " << loop.batch_size << ", " << to_string(precision);

  // The EMA weights (or the raw ones when EMA is off) in a VAE of their own, for evaluation.
  auto final_vae = [&]() {
    core::VAE out(vopt);
    out->to(dtype);
    out->to(device);
    std::vector<at::Tensor> ps;
    for (auto& p : out->parameters()) ps.push_back(p);
    if (loop.ema_decay > 0) {
      ema.copy_to(ps);
    } else {
      at::NoGradGuard ng;
      for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(g.params[i]);
    }
    return out;
  };
  auto evaluate = [&](int64_t step, bool final) {
    if (!rt.is_root()) return nlohmann::json();
    core::VAE v = final_vae();
    auto q = reconstruction_quality(v, to_float(eval_u8, opts));
    LOG(INFO) << "step " << step << ": held-out PSNR " << q.psnr << " dB, SSIM " << q.ssim << " on " << q.count
              << " images";
    int64_t show = std::min<int64_t>(16, q.count);
    at::Tensor pic = at::cat({to_float(eval_u8.narrow(0, 0, show), opts), q.reconstructions.narrow(0, 0, show)});
    write_png_grid((fs::path(loop.run_dir) / "reconstructions.png").string(), pic.cpu().to(at::kFloat), show);
    nlohmann::json m = {{"step", step}, {"psnr", q.psnr}, {"ssim", q.ssim}, {"eval_images", q.count}};
    if (final) {
      fs::path out = fs::path(loop.run_dir) / "vae";
      core::save_diffusers_vae(v, out.string());
      atomic_write_file((fs::path(loop.run_dir) / "vae_metrics.json").string(), m.dump(2) + "\n");
      LOG(INFO) << "VAE written to " << out.string() << " (diffusers AutoencoderKL layout); reconstructions in "
                << (fs::path(loop.run_dir) / "reconstructions.png").string();
    }
    return m;
  };

  auto save = [&](int64_t step) {
    nlohmann::json state;
    state["samples_seen"] = step * loop.batch_size;
    state["epoch"] = static_cast<double>(step * loop.batch_size) / static_cast<double>(n_train);
    state["bad_steps"] = bad_steps;
    state["vae_config"] = core::diffusers_vae_config(vopt);
    std::vector<CheckpointFile> files = {
        {"model.safetensors", [&](const std::string& p) { save_module_weights(*vae, p); }},
        {"ema.safetensors", [&](const std::string& p) { core::save_safetensors(p, to_cpu_map(ema.state())); }},
        {"optimizer.safetensors", [&](const std::string& p) { core::save_safetensors(p, to_cpu_map(g.optimizer->state())); }},
    };
    if (use_disc) {
      files.push_back({"disc.safetensors", [&](const std::string& p) { save_module_weights(*disc, p); }});
      files.push_back({"disc_optimizer.safetensors",
                       [&](const std::string& p) { core::save_safetensors(p, to_cpu_map(d.optimizer->state())); }});
    }
    uint64_t bytes = 0;
    for (const auto& p : g.params) bytes += p.numel() * p.element_size() * 4;
    session.save_checkpoint(step, state, files, bytes);
  };

  // ---- the loop --------------------------------------------------------------------------------
  data::BatchLayout layout{loop.batch_size, world, rt.rank(), loop.grad_accum};
  layout.validate();
  data::SampleStream stream(n_train, seed);
  const double per_rank = static_cast<double>(layout.per_rank());
  const int64_t micro = layout.micro_size();
  std::vector<int64_t> idx(micro), ep(micro);
  session.begin(start_step, saved.is_null() ? 0.0 : saved.value("train_seconds", 0.0));
  MixedPrecision amp(precision, device);
  vae->train();
  if (use_disc) disc->train();
  at::Tensor last_layer = vae->decoder->conv_out->weight;
  int64_t step = start_step;
  LossWindow logged(4);  // recon, kl, generator, discriminator
  while (step < loop.steps) {
    StepTimes times;
    const int64_t next = step + 1;
    const bool gan = use_disc && next > lc.disc_start;
    double rec_sum = 0, kl_sum = 0, g_sum = 0, d_sum = 0, adaptive = 0;
    for (int64_t a = 0; a < loop.grad_accum; ++a) {
      auto t0 = Clock::now();
      auto [begin, end] = data::micro_batch_positions(layout, step, a);
      stream.lookup(begin, end, idx.data(), ep.data());
      at::Tensor indices = at::tensor(idx, at::kLong), epochs = at::tensor(ep, at::kLong);
      at::Tensor x = to_float(train_u8.index_select(0, indices), opts);
      times.data += since(t0);
      auto tf = Clock::now();
      const bool last = a + 1 == loop.grad_accum;
      if (g.reducer) g.reducer->set_sync(last);
      core::DiagonalGaussian post = vae->encode(x);
      at::Tensor eps = core::keyed_normal(seed, core::stream_id(core::Stream::kPosterior), epochs, indices,
                                          post.mean().sizes().slice(1), opts);
      at::Tensor rec = vae->decode(post.sample(eps));
      // Sums over the rank's samples divided by its share B/W: the reducer's average over
      // ranks then gives the global-batch mean.
      at::Tensor rec_per = (recon_kind == core::ReconLoss::kL1 ? (x - rec).abs() : (x - rec).pow(2)).flatten(1).mean(1);
      at::Tensor kl_per = post.kl();
      at::Tensor nll = rec_per.sum() / per_rank;
      at::Tensor loss = nll + lc.kl_weight * kl_per.sum() / per_rank;
      if (gan) {
        for (auto& p : d.params) p.requires_grad_(false);
        at::Tensor g_loss = core::hinge_g_loss(disc->forward(rec)) * (static_cast<double>(micro) / per_rank);
        for (auto& p : d.params) p.requires_grad_(true);
        if (a == 0) {
          // LDM's calculate_adaptive_weight, with both gradients averaged over the ranks.
          at::Tensor gn = torch::autograd::grad({nll}, {last_layer}, {}, true)[0].detach().clone();
          at::Tensor gg = torch::autograd::grad({g_loss}, {last_layer}, {}, true)[0].detach().clone();
          at::Tensor both = at::stack({gn, gg}).to(at::kDouble).cpu().contiguous();
          if (world > 1) rt.cpu_comm().all_reduce(both, dist::ReduceOp::kSum, "all_reduce of the adaptive-weight gradients");
          adaptive = core::adaptive_disc_weight(both[0].norm().item<double>() / world,
                                                both[1].norm().item<double>() / world, lc.disc_weight);
        }
        loss = loss + adaptive * g_loss;
        g_sum += g_loss.item<double>();
      }
      amp.backward(loss);
      rec_sum += nll.item<double>();
      kl_sum += (kl_per.sum() / per_rank).item<double>();
      if (gan) {
        if (d.reducer) d.reducer->set_sync(last);
        at::Tensor d_loss = core::hinge_d_loss(disc->forward(x), disc->forward(rec.detach())) *
                            (static_cast<double>(micro) / per_rank);
        d_loss.backward();
        d_sum += d_loss.item<double>();
      }
      times.forward_backward += since(tf);
    }
    auto ts = Clock::now();
    if (g.reducer) {
      g.reducer->set_step(step);
      g.reducer->finish_backward();
    }
    if (gan && d.reducer) {
      d.reducer->set_step(step);
      d.reducer->finish_backward();
    }
    times.sync += since(ts);
    auto to = Clock::now();
    double lr = learning_rate(loop.lr, loop.lr_schedule, loop.warmup_steps, loop.min_lr_ratio, next, loop.steps);
    double gnorm = amp.unscale_and_norm(g.params);
    double dnorm = gan ? core::global_grad_norm(d.params) : 0.0;
    bool finite = std::isfinite(gnorm) && std::isfinite(dnorm);
    if (finite) {
      core::clip_grad_norm(g.params, loop.grad_clip, gnorm);
      g.optimizer->step(lr);
      ema.update(g.params);
      if (gan) {
        core::clip_grad_norm(d.params, loop.grad_clip, dnorm);
        double dlr = (lc.disc_lr > 0 ? lc.disc_lr : loop.lr) * lr / std::max(loop.lr, 1e-30);
        d.optimizer->step(dlr);
      }
      bad_steps = 0;
    } else if (++bad_steps >= loop.max_bad_steps) {
      throw std::runtime_error(str(bad_steps, " consecutive steps with non-finite gradients (vae_train.max_bad_steps = ",
                                   loop.max_bad_steps, "); lower vae_train.lr"));
    } else {
      LOG(WARNING) << "step " << next << ": non-finite gradient, update skipped";
    }
    amp.update(finite);
    zero_grads(g.params);
    if (use_disc) zero_grads(d.params);
    times.optimizer += since(to);
    step = next;

    nlohmann::json values = {{"lr", lr}, {"grad_norm", gnorm}, {"skipped", !finite}};
    logged.add({rec_sum, kl_sum, g_sum, d_sum});
    if (step % loop.log_every == 0 || step == loop.steps) {
      std::vector<double> l = logged.take_means(rt.cpu_comm());
      values["recon"] = l[0];
      values["kl"] = l[1];
      values["loss"] = l[0] + lc.kl_weight * l[1];
      if (gan) {
        values["g_loss"] = l[2];
        values["d_loss"] = l[3];
        values["adaptive_weight"] = adaptive;
      }
    }
    session.record_step(step, loop.steps, loop.batch_size, times, values);
    if (lc.eval_every > 0 && step % lc.eval_every == 0 && step != loop.steps) session.write_metrics(evaluate(step, false));

    StopRequest stop = session.agree_stop();
    if (step % loop.ckpt_every == 0 || step == loop.steps || stop != StopRequest::kNone) save(step);
    if (stop != StopRequest::kNone && step < loop.steps) {  // a stop at the last step just finishes
      int code = stop == StopRequest::kRequeue ? kExitRequeue : kExitTerminated;
      if (rt.is_root()) LOG(WARNING) << "stop signal: checkpoint of step " << step << " written; exiting with " << code;
      return code;
    }
  }
  if (rt.is_root()) {
    nlohmann::json m = evaluate(step, true);
    m["kind"] = "vae_eval";
    session.write_metrics(m);
    std::cout << "vae: " << (fs::path(loop.run_dir) / "vae").string() << "  PSNR " << m.value("psnr", 0.0) << " dB  SSIM "
              << m.value("ssim", 0.0) << std::endl;
  }
  return 0;
}

}  // namespace lf::launch
