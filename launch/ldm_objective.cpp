// The objective of the latent diffusion model, DDPM or flow (see ldm_objective.h).
#include "launch/ldm_objective.h"

#include "core/keyed_rng.h"
#include "core/util/strings.h"
#include "launch/config_registry.h"

namespace lf::launch {

namespace {
uint32_t sid(core::Stream s) { return core::stream_id(s); }
}  // namespace

LDMObjective::LDMObjective(core::DiffusionOptions options) : options_(std::move(options)) {
  options_.validate();
  if (is_flow())
    flow_ = std::make_unique<core::FlowMatching>(options_);
  else
    ddpm_ = std::make_unique<core::Diffusion>(options_);
}

LDMObjective::Noised LDMObjective::noise(const at::Tensor& x0, uint64_t seed, const at::Tensor& epochs,
                                         const at::Tensor& indices, const at::TensorOptions& opts) const {
  Noised n;
  n.x0 = x0;
  auto shape = x0.sizes().slice(1);
  n.noise = core::keyed_normal(seed, sid(core::Stream::kNoise), epochs, indices, shape, opts);
  if (is_flow()) {
    n.t = flow_->sample_time(seed, epochs, indices, opts);
    n.x_t = flow_->x_t(x0, n.noise, n.t);
    n.time = core::FlowMatching::model_time(n.t);
    return n;
  }
  n.t = core::keyed_randint(seed, sid(core::Stream::kTimestep), epochs, indices, 0, ddpm_->timesteps()).to(opts.device());
  if (options_.offset_noise > 0) {
    at::Tensor cn = core::keyed_normal(seed, sid(core::Stream::kOffsetNoise), epochs, indices, {shape[0]}, opts);
    n.noise = ddpm_->offset_noise(n.noise, cn);
  }
  n.x_t = ddpm_->q_sample(x0, n.t, n.noise);
  n.time = n.t;
  return n;
}

LDMObjective::Noised LDMObjective::at_fixed_times(const at::Tensor& x0, const at::Tensor& positions, int64_t n,
                                                  const at::Tensor& noise) const {
  Noised out;
  out.x0 = x0;
  out.noise = noise;
  const int64_t count = std::max<int64_t>(1, n);
  if (is_flow()) {
    out.t = ((positions.to(at::kDouble) + 0.5) / static_cast<double>(count)).to(x0.options());
    out.x_t = flow_->x_t(x0, noise, out.t);
    out.time = core::FlowMatching::model_time(out.t);
  } else {
    out.t = (positions * ddpm_->timesteps()).div(count, "floor").to(x0.device());
    out.x_t = ddpm_->q_sample(x0, out.t, noise);
    out.time = out.t;
  }
  return out;
}

at::Tensor LDMObjective::per_sample_loss(const at::Tensor& out, const Noised& n) const {
  return is_flow() ? flow_->per_sample_loss(out, n.x0, n.noise) : ddpm_->per_sample_loss(out, n.x0, n.noise, n.t);
}

void LDMObjective::check_sampling(core::SamplerKind sampler, int64_t steps) const {
  try {
    core::check_sampler_objective(sampler, options_.objective);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  if (!is_flow() && sampler == core::SamplerKind::kDDPM && steps > ddpm_->timesteps())
    throw UsageError(str("sample.steps = ", steps, " exceeds diffusion.timesteps = ", ddpm_->timesteps()));
}

at::Tensor LDMObjective::sample(const core::Denoiser& network, at::Tensor x_T, core::SamplerKind sampler, int64_t steps,
                                core::Spacing spacing, double eta, const core::NoiseFn& noise,
                                const core::ProgressFn& progress) const {
  check_sampling(sampler, steps);
  if (is_flow()) {
    // The network takes 1000 t; the solver integrates in t.
    core::Denoiser velocity = [&network](const at::Tensor& x, const at::Tensor& t) {
      return network(x, core::FlowMatching::model_time(t));
    };
    return core::flow_sample(velocity, std::move(x_T), core::flow_time_grid(steps),
                             sampler == core::SamplerKind::kHeun ? core::FlowSolver::kHeun : core::FlowSolver::kEuler,
                             progress);
  }
  const int64_t T = ddpm_->timesteps();
  std::vector<int64_t> ts;
  if (sampler == core::SamplerKind::kDDIM || steps < T) ts = core::sampling_timesteps(T, std::min(steps, T), spacing);
  if (sampler == core::SamplerKind::kDDPM) return core::ddpm_sample(*ddpm_, network, std::move(x_T), ts, noise, progress);
  return core::ddim_sample(*ddpm_, network, std::move(x_T), ts, noise, eta, progress);
}

}  // namespace lf::launch
