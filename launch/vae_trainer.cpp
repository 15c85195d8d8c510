// What the autoencoder brings to the one training loop (train_loop.h). The sample order, the
// slices of ranks and micro-batches and the posterior noise follow the same invariants as the
// diffusion trainer (keyed by seed, epoch and global image index), so 2 ranks == 1 rank and
// resume is exact.
#include "launch/vae_trainer.h"

#include <glog/logging.h>

#include <filesystem>
#include <iostream>

#include "core/diffusers_vae.h"
#include "core/discriminator.h"
#include "core/keyed_rng.h"
#include "core/state_dict.h"
#include "core/util/strings.h"
#include "data/sample_stream.h"
#include "launch/data_source.h"
#include "launch/model_io.h"
#include "launch/train_loop.h"
#include "launch/vae_evaluation.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Images [begin, end) of a source as uint8 [N, C, H, W] (4x smaller than float in RAM).
at::Tensor load_images_u8(const data::Source& source, int64_t begin, int64_t end) {
  std::vector<at::Tensor> parts;
  for (int64_t i = begin; i < end; i += 4096) {
    at::Tensor x = source.get(i, std::min(end, i + 4096)).images;
    parts.push_back(((x.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte));
  }
  return parts.empty() ? at::empty({0}, at::kByte) : at::cat(parts);
}

at::Tensor to_float(const at::Tensor& u8, const at::TensorOptions& opts) { return u8.to(opts) / 127.5 - 1.0; }

class VAETrainer : public Trainer {
 public:
  explicit VAETrainer(const ConfigView& cfg) : cfg_(cfg), lc_(cfg.vae_loss()) {}

  // The training images in memory, held-out ones for PSNR/SSIM: the other split, or for a
  // folder without splits its last images.
  void open_data(TrainingLoop& loop) override {
    auto source = open_configured_source(cfg_.data());
    n_train_ = source->size();
    try {
      auto test = open_configured_source(cfg_.data(), cfg_.data().split == "train" ? "test" : "train");
      eval_u8_ = load_images_u8(*test, 0, std::min(lc_.eval_samples, test->size()));
    } catch (const std::invalid_argument&) {
      int64_t held = std::min(lc_.eval_samples, source->size() / 10);
      n_train_ = source->size() - held;
      eval_u8_ = load_images_u8(*source, n_train_, source->size());
    }
    train_u8_ = load_images_u8(*source, 0, n_train_);
    if (loop.runtime().is_root())
      LOG(INFO) << "vae train: " << n_train_ << " training images " << source->channels() << "x" << source->height()
                << "x" << source->width() << " from " << cfg_.data().source << ", " << eval_u8_.size(0) << " held out";
    vopt_ = cfg_.vae_arch();
    vopt_.in_channels = vopt_.out_channels = source->channels();
    vopt_.sample_size = source->height();
    vopt_.validate();
    if (source->height() % vopt_.downsample_factor() != 0)
      throw UsageError(str("data.image_size = ", source->height(), " is not divisible by the VAE's factor f = ",
                           vopt_.downsample_factor(), " (vae.channels has ", vopt_.block_out_channels.size(),
                           " levels)"));
  }

  std::vector<TrainedModule> build_modules(TrainingLoop& loop) override {
    opts_ = loop.options();
    vae_ = core::VAE(vopt_);
    vae_->to(loop.param_dtype());
    vae_->to(loop.device());
    std::vector<TrainedModule> modules = {{"model", vae_.ptr().get(), cfg_.vae_train().lr}};
    if (lc_.disc_start > 0) {
      core::DiscriminatorOptions dopt;
      dopt.in_channels = vopt_.in_channels;
      dopt.base_channels = lc_.disc_channels;
      dopt.n_layers = lc_.disc_layers;
      dopt.norm_groups = std::min<int64_t>(32, lc_.disc_channels);
      dopt.validate();
      disc_ = core::PatchDiscriminator(dopt);
      disc_->to(loop.param_dtype());
      disc_->to(loop.device());
      modules.push_back({"disc", disc_.ptr().get(), lc_.disc_lr > 0 ? lc_.disc_lr : cfg_.vae_train().lr});
    }
    return modules;
  }

  void init_from(const std::string& from) override {
    core::VAE init = fs::is_directory(from) ? core::load_diffusers_vae(from) : core::load_vae_file(from);
    load_module_weights_from_map(*vae_, core::state_dict(*init), from);
  }

  std::string describe() const override {
    return str("VAE: f = ", vopt_.downsample_factor(), ", latent ", vopt_.latent_channels, "x",
               vopt_.sample_size / vopt_.downsample_factor(), "x", vopt_.sample_size / vopt_.downsample_factor(), ", ",
               core::count_parameters(*vae_), " parameters",
               disc_.is_empty() ? std::string()
                                : str(", discriminator ", core::count_parameters(*disc_), " parameters from step ",
                                      lc_.disc_start));
  }

  void start(TrainingLoop& loop, int64_t) override {
    Runtime& rt = loop.runtime();
    layout_ = {cfg_.vae_train().batch_size, rt.world(), rt.rank(), cfg_.vae_train().grad_accum};
    layout_.validate();
    stream_ = std::make_unique<data::SampleStream>(n_train_, static_cast<uint64_t>(cfg_.vae_train().seed));
    comm_ = &rt.cpu_comm();
    draw_seed_ = loop.draw_seed();
    vae_->train();
    if (!disc_.is_empty()) disc_->train();
  }

  bool trains(size_t module, int64_t next) const override { return module == 0 || next > lc_.disc_start; }

  void micro_step(const MicroStep& m, std::vector<double>& logged) override {
    auto t0 = Clock::now();
    const int64_t micro = layout_.micro_size();
    const double per_rank = static_cast<double>(layout_.per_rank());
    std::vector<int64_t> idx(micro), ep(micro);
    auto [begin, end] = data::micro_batch_positions(layout_, m.step, m.micro);
    stream_->lookup(begin, end, idx.data(), ep.data());
    at::Tensor indices = at::tensor(idx, at::kLong), epochs = at::tensor(ep, at::kLong);
    at::Tensor x = to_float(train_u8_.index_select(0, indices), opts_);
    m.times->data += since(t0);
    auto tf = Clock::now();
    const bool gan = !disc_.is_empty() && trains(1, m.step + 1);
    core::DiagonalGaussian post = vae_->encode(x);
    at::Tensor eps = core::keyed_normal(draw_seed_, core::stream_id(core::Stream::kPosterior), epochs, indices,
                                        post.mean().sizes().slice(1), opts_);
    at::Tensor rec = vae_->decode(post.sample(eps));
    // Sums over the rank's samples divided by its share B/W: the sum over ranks then gives the
    // global-batch mean.
    at::Tensor rec_per =
        (lc_.recon_loss == core::ReconLoss::kL1 ? (x - rec).abs() : (x - rec).pow(2)).flatten(1).mean(1);
    at::Tensor kl_per = post.kl();
    at::Tensor nll = rec_per.sum() / per_rank;
    at::Tensor loss = nll + lc_.kl_weight * kl_per.sum() / per_rank;
    if (gan) loss = loss + adversarial_loss(rec, nll, m.micro, static_cast<double>(micro) / per_rank, logged);
    m.amp->backward(loss);
    logged[0] += nll.item<double>();
    logged[1] += (kl_per.sum() / per_rank).item<double>();
    if (gan) {
      at::Tensor d_loss = core::hinge_d_loss(disc_->forward(x), disc_->forward(rec.detach())) *
                          (static_cast<double>(micro) / per_rank);
      m.amp->backward(d_loss);
      logged[3] += d_loss.item<double>();
    }
    m.times->forward_backward += since(tf);
  }

  std::vector<std::string> logged_names() const override { return {"recon", "kl", "g_loss", "d_loss"}; }

  void log_values(const std::vector<double>& l, int64_t step, nlohmann::json& values) override {
    values["recon"] = l[0];
    values["kl"] = l[1];
    values["loss"] = l[0] + lc_.kl_weight * l[1];
    if (!disc_.is_empty() && trains(1, step)) {
      values["g_loss"] = l[2];
      values["d_loss"] = l[3];
      values["adaptive_weight"] = adaptive_;
    }
  }

  bool wants_eval_weights(int64_t step) const override { return lc_.eval_every > 0 && step % lc_.eval_every == 0; }

  bool periodic(TrainingLoop& loop, int64_t step) override {
    if (lc_.eval_every <= 0 || step % lc_.eval_every != 0) return false;
    if (loop.runtime().is_root()) loop.session().write_metrics(evaluate(loop, step, false));
    return true;
  }

  void finish(TrainingLoop& loop, int64_t step) override {
    if (!loop.runtime().is_root()) return;
    nlohmann::json m = evaluate(loop, step, true);
    m["kind"] = "vae_eval";
    loop.session().write_metrics(m);
    std::cout << "vae: " << (fs::path(cfg_.vae_train().run_dir) / "vae").string() << "  PSNR " << m.value("psnr", 0.0)
              << " dB  SSIM " << m.value("ssim", 0.0) << std::endl;
  }

  void checkpoint_state(nlohmann::json& state) const override { state["vae_config"] = core::diffusers_vae_config(vopt_); }

  int64_t epoch_size() const override { return n_train_; }

 private:
  // The generator's adversarial term for one micro-batch (hinge, LDM's LPIPSWithDiscriminator),
  // times the adaptive weight computed on the step's first micro-batch from both gradients at
  // the decoder's last layer, averaged over the ranks (LDM's calculate_adaptive_weight).
  at::Tensor adversarial_loss(const at::Tensor& rec, const at::Tensor& nll, int64_t micro_index, double share,
                              std::vector<double>& logged) {
    for (auto& p : disc_->parameters()) p.requires_grad_(false);
    at::Tensor g_loss = core::hinge_g_loss(disc_->forward(rec)) * share;
    for (auto& p : disc_->parameters()) p.requires_grad_(true);
    if (micro_index == 0) {
      at::Tensor last_layer = vae_->decoder->conv_out->weight;
      at::Tensor gn = torch::autograd::grad({nll}, {last_layer}, {}, true)[0].detach().clone();
      at::Tensor gg = torch::autograd::grad({g_loss}, {last_layer}, {}, true)[0].detach().clone();
      at::Tensor both = at::stack({gn, gg}).to(at::kDouble).cpu().contiguous();
      const int64_t world = comm_->world_size();
      if (world > 1) comm_->all_reduce(both, dist::ReduceOp::kSum, "all_reduce of the adaptive-weight gradients");
      adaptive_ = core::adaptive_disc_weight(both[0].norm().item<double>() / world,
                                             both[1].norm().item<double>() / world, lc_.disc_weight);
    }
    logged[2] += g_loss.item<double>();
    return adaptive_ * g_loss;
  }

  // The EMA weights (the raw ones when the EMA is off) in a VAE of their own, evaluated.
  nlohmann::json evaluate(TrainingLoop& loop, int64_t step, bool final) {
    core::VAE v(vopt_);
    v->to(loop.param_dtype());
    v->to(loop.device());
    loop.copy_eval_weights(*v);
    return evaluate_vae(v, to_float(eval_u8_, opts_), cfg_.vae_train().run_dir, step, final);
  }

  const ConfigView& cfg_;
  const VAELossConfig& lc_;
  core::VAEOptions vopt_;
  int64_t n_train_ = 0;
  at::Tensor train_u8_, eval_u8_;
  core::VAE vae_{nullptr};
  core::PatchDiscriminator disc_{nullptr};
  at::TensorOptions opts_;
  data::BatchLayout layout_;
  std::unique_ptr<data::SampleStream> stream_;
  dist::Communicator* comm_ = nullptr;
  uint64_t draw_seed_ = 0;
  double adaptive_ = 0.0;
};

}  // namespace

int train_vae(const ConfigView& cfg, Runtime& rt, const TrainFlags& flags) {
  TrainingLoop loop("vae", cfg.vae_train(), cfg.dist(), rt, cfg.all_to_json(), cfg.to_ini());
  VAETrainer trainer(cfg);
  return loop.run(trainer, flags);
}

}  // namespace lf::launch
