// DDIM and DDPM samplers, timestep spacings, classifier-free guidance and the flow ODE
// samplers (see sampler.h).
#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

// numpy's round: half to even (nearbyint under the default rounding mode).
int64_t round_half_even(double x) {
  return static_cast<int64_t>(std::nearbyint(x));
}

void check_timesteps(const std::vector<int64_t>& ts, int64_t T, const char* sampler) {
  TORCH_CHECK(!ts.empty(), sampler, ": the timestep list is empty");
  for (size_t i = 0; i < ts.size(); ++i) {
    TORCH_CHECK(ts[i] >= 0 && ts[i] < T, sampler, ": timestep ", ts[i], " at position ", i,
                " is outside [0, ", T, ")");
    TORCH_CHECK(i == 0 || ts[i] < ts[i - 1], sampler, ": timesteps must be strictly descending, "
                "but position ", i, " holds ", ts[i], " after ", ts[i - 1]);
  }
}

// Runs the denoiser at step t and checks what it returned.
at::Tensor predict(const Denoiser& denoiser, const at::Tensor& x, int64_t t, const char* sampler) {
  auto t_batch = at::full({x.size(0)}, t, x.options().dtype(at::kLong));
  at::Tensor pred = denoiser(x, t_batch);
  TORCH_CHECK(pred.sizes() == x.sizes(), sampler, ": the denoiser returned shape ", pred.sizes(),
              " for x of shape ", x.sizes(), " at t = ", t);
  return pred.to(x.scalar_type());
}

at::Tensor step_noise(const NoiseFn& noise, int64_t step, const at::Tensor& x, const char* sampler) {
  TORCH_CHECK(noise, sampler, ": step ", step, " needs noise but no noise function was given");
  at::Tensor z = noise(step);
  TORCH_CHECK(z.sizes() == x.sizes(), sampler, ": the noise function returned shape ", z.sizes(),
              " at step ", step, ", expected ", x.sizes());
  return z.to(x.options());
}

// (x0, eps) implied by the prediction at x_t; with clipping, x0 is clamped and eps recomputed
// from it, eps = (x_t - sqrt(ac) x0) / sqrt(1 - ac) (diffusers DDIMScheduler.step).
std::pair<at::Tensor, at::Tensor> x0_and_eps(const Diffusion& d, const at::Tensor& pred,
                                             const at::Tensor& x, int64_t t, double clip_x0) {
  auto t_batch = at::full({x.size(0)}, t, x.options().dtype(at::kLong));
  at::Tensor x0 = d.x0_from(pred, x, t_batch);
  if (clip_x0 > 0) {
    x0 = x0.clamp(-clip_x0, clip_x0);
    const double ac = d.schedule().alphas_cumprod()[t].item<double>();
    return {x0, (x - x0 * std::sqrt(ac)) / std::sqrt(1 - ac)};
  }
  return {x0, d.eps_from(pred, x, t_batch)};
}

}  // namespace

const EnumTable<SamplerKind>& sampler_kinds() {
  static const EnumTable<SamplerKind> table = {{"ddim", SamplerKind::kDDIM},
                                               {"ddpm", SamplerKind::kDDPM},
                                               {"euler", SamplerKind::kEuler},
                                               {"heun", SamplerKind::kHeun}};
  return table;
}

Objective sampler_objective(SamplerKind s) {
  return s == SamplerKind::kEuler || s == SamplerKind::kHeun ? Objective::kFlow : Objective::kDDPM;
}

const EnumTable<FlowSolver>& flow_solvers() {
  static const EnumTable<FlowSolver> table = {{"euler", FlowSolver::kEuler}, {"heun", FlowSolver::kHeun}};
  return table;
}

void check_sampler_objective(SamplerKind sampler, Objective objective) {
  if (sampler_objective(sampler) == objective) return;
  std::vector<std::string> fit;
  for (const auto& [name, kind] : sampler_kinds().entries())
    if (sampler_objective(kind) == objective) fit.push_back(name);
  throw std::invalid_argument(lf::str(
      "sample.sampler = ", to_string(sampler), " cannot sample a model trained with ", diffusion_key("objective"), " = ",
      to_string(objective), ": ",
      objective == Objective::kFlow ? "a flow model predicts a velocity" : "a DDPM model predicts on discrete timesteps",
      "; use sample.sampler = ", join(fit, " or ")));
}

const EnumTable<Spacing>& spacings() {
  static const EnumTable<Spacing> table = {
      {"leading", Spacing::kLeading}, {"trailing", Spacing::kTrailing}, {"linspace", Spacing::kLinspace}};
  return table;
}

std::vector<int64_t> sampling_timesteps(int64_t timesteps, int64_t steps, Spacing spacing) {
  if (steps < 1 || steps > timesteps) {
    throw std::invalid_argument(lf::str("sampling steps is ", steps, ", expected 1 <= steps <= T = ",
                                        timesteps));
  }
  std::vector<int64_t> ts(steps);
  const double T = static_cast<double>(timesteps);
  for (int64_t k = 0; k < steps; ++k) {
    switch (spacing) {
      case Spacing::kLeading:  // (arange(steps) * (T // steps))[::-1]
        ts[k] = (steps - 1 - k) * (timesteps / steps);
        break;
      case Spacing::kTrailing:  // round(arange(T, 0, -T / steps)) - 1
        ts[k] = round_half_even(T + static_cast<double>(k) * -(T / static_cast<double>(steps))) - 1;
        break;
      case Spacing::kLinspace: {  // round(linspace(0, T - 1, steps))[::-1]
        const int64_t i = steps - 1 - k;
        ts[k] = steps == 1 ? 0
                : i == steps - 1
                    ? timesteps - 1
                    : round_half_even(static_cast<double>(i) *
                                      ((T - 1) / static_cast<double>(steps - 1)));
        break;
      }
    }
  }
  return ts;
}

double ddim_sigma(double ac, double ac_prev, double eta) {
  return eta * std::sqrt((1 - ac_prev) / (1 - ac)) * std::sqrt(1 - ac / ac_prev);
}

at::Tensor ddim_sample(const Diffusion& diffusion, const Denoiser& denoiser, at::Tensor x_T,
                       const std::vector<int64_t>& timesteps, const NoiseFn& noise, double eta,
                       const ProgressFn& progress, double clip_x0) {
  constexpr const char* kName = "ddim_sample";
  TORCH_CHECK(eta >= 0, kName, ": eta is ", eta, ", expected >= 0 (0 deterministic, 1 DDPM-like)");
  TORCH_CHECK(x_T.dim() >= 1 && at::isFloatingType(x_T.scalar_type()), kName,
              ": x_T must be a floating tensor [N, ...], got ", x_T.scalar_type(), " ",
              x_T.sizes());
  check_timesteps(timesteps, diffusion.timesteps(), kName);
  const auto ac_table = diffusion.schedule().alphas_cumprod();
  const auto* ac_of = ac_table.data_ptr<double>();
  const int64_t total = static_cast<int64_t>(timesteps.size());
  at::Tensor x = std::move(x_T);
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < total; ++i) {
    const int64_t t = timesteps[i];
    const double ac = ac_of[t], ac_prev = i + 1 < total ? ac_of[timesteps[i + 1]] : 1.0;
    auto [x0, eps] = x0_and_eps(diffusion, predict(denoiser, x, t, kName), x, t, clip_x0);
    const double sigma = ddim_sigma(ac, ac_prev, eta);
    // Song et al. 2021, eq. 12; the max guards 1 - ac_prev - sigma^2 against rounding below 0.
    const double dir = std::sqrt(std::max(0.0, 1 - ac_prev - sigma * sigma));
    x = x0 * std::sqrt(ac_prev) + eps * dir;
    if (sigma > 0) x.add_(step_noise(noise, i, x, kName), sigma);
    if (progress) progress(i + 1, total);
  }
  return x;
}

at::Tensor ddpm_sample(const Diffusion& diffusion, const Denoiser& denoiser, at::Tensor x_T,
                       const std::vector<int64_t>& timesteps, const NoiseFn& noise,
                       const ProgressFn& progress, double clip_x0) {
  constexpr const char* kName = "ddpm_sample";
  TORCH_CHECK(x_T.dim() >= 1 && at::isFloatingType(x_T.scalar_type()), kName,
              ": x_T must be a floating tensor [N, ...], got ", x_T.scalar_type(), " ",
              x_T.sizes());
  const int64_t T = diffusion.timesteps();
  std::vector<int64_t> ts = timesteps;
  if (ts.empty()) {
    ts.resize(T);
    for (int64_t k = 0; k < T; ++k) ts[k] = T - 1 - k;
  }
  check_timesteps(ts, T, kName);
  const auto ac_table = diffusion.schedule().alphas_cumprod();
  const auto* ac_of = ac_table.data_ptr<double>();
  const int64_t total = static_cast<int64_t>(ts.size());
  at::Tensor x = std::move(x_T);
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < total; ++i) {
    const int64_t t = ts[i];
    const double ac = ac_of[t], ac_prev = i + 1 < total ? ac_of[ts[i + 1]] : 1.0;
    auto x0 = x0_and_eps(diffusion, predict(denoiser, x, t, kName), x, t, clip_x0).first;
    // Respaced step (guided-diffusion SpacedDiffusion): beta' = 1 - ac / ac_prev. Posterior
    // q(x_prev | x_t, x0) of Ho et al. 2020, eq. 7 (guided-diffusion q_posterior_mean_variance).
    const double beta = 1 - ac / ac_prev, alpha = 1 - beta;
    const double coef_x0 = beta * std::sqrt(ac_prev) / (1 - ac);
    const double coef_xt = (1 - ac_prev) * std::sqrt(alpha) / (1 - ac);
    const double variance = (1 - ac_prev) / (1 - ac) * beta;  // beta-tilde
    x = x0 * coef_x0 + x * coef_xt;
    if (variance > 0) x.add_(step_noise(noise, i, x, kName), std::sqrt(variance));
    if (progress) progress(i + 1, total);
  }
  return x;
}

Denoiser classifier_free_guidance(ConditionalModel model, at::Tensor labels, int64_t null_label,
                                  double scale) {
  TORCH_CHECK(model, "classifier_free_guidance: no model given");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 1,
              "classifier_free_guidance: labels must be int64 [N], got ", labels.scalar_type(), " ",
              labels.sizes());
  TORCH_CHECK(std::isfinite(scale), "classifier_free_guidance: scale is ", scale,
              ", expected a finite number (1 = conditional only)");
  return [model = std::move(model), labels = std::move(labels), null_label, scale](
             const at::Tensor& x, const at::Tensor& t) -> at::Tensor {
    TORCH_CHECK(x.size(0) == labels.size(0), "classifier_free_guidance: x has batch ", x.size(0),
                " but ", labels.size(0), " labels were given");
    auto y = labels.to(x.device());
    if (scale == 1.0) return model(x, t, y);
    auto out = model(at::cat({x, x}), at::cat({t, t}), at::cat({y, at::full_like(y, null_label)}));
    TORCH_CHECK(out.dim() >= 1 && out.size(0) == 2 * x.size(0),
                "classifier_free_guidance: the model returned batch ", out.size(0), " for ",
                2 * x.size(0), " inputs");
    auto halves = out.chunk(2, 0);
    const auto& cond = halves[0];
    const auto& uncond = halves[1];
    return uncond + (cond - uncond) * scale;
  };
}

std::vector<double> flow_time_grid(int64_t steps, double shift) {
  if (steps < 1) throw std::invalid_argument(lf::str("sample.steps is ", steps, ", expected >= 1"));
  if (!(shift > 0) || !std::isfinite(shift))
    throw std::invalid_argument(lf::str("flow timestep shift is ", shift, ", expected a finite value > 0 (1: uniform)"));
  std::vector<double> ts(steps + 1);
  for (int64_t k = 0; k <= steps; ++k) {
    const double u = 1.0 - static_cast<double>(k) / static_cast<double>(steps);
    ts[k] = shift * u / (1.0 + (shift - 1.0) * u);
  }
  ts.front() = 1.0;  // exact ends whatever the rounding of the map
  ts.back() = 0.0;
  return ts;
}

at::Tensor flow_sample(const Denoiser& velocity, at::Tensor x_T, const std::vector<double>& times,
                       FlowSolver solver, const ProgressFn& progress) {
  constexpr const char* kName = "flow_sample";
  TORCH_CHECK(velocity, kName, ": no velocity model given");
  TORCH_CHECK(x_T.dim() >= 1 && at::isFloatingType(x_T.scalar_type()), kName,
              ": x_T must be a floating tensor [N, ...], got ", x_T.scalar_type(), " ", x_T.sizes());
  TORCH_CHECK(times.size() >= 2, kName, ": ", times.size(), " times give no step; expected at least 2 (e.g. 1, 0)");
  for (size_t i = 0; i < times.size(); ++i) {
    TORCH_CHECK(times[i] >= 0.0 && times[i] <= 1.0, kName, ": time ", times[i], " at position ", i,
                " is outside [0, 1]");
    TORCH_CHECK(i == 0 || times[i] < times[i - 1], kName, ": times must be strictly descending, but position ", i,
                " holds ", times[i], " after ", times[i - 1]);
  }
  auto v_at = [&](const at::Tensor& x, double t) {
    at::Tensor v = velocity(x, at::full({x.size(0)}, t, x.options()));
    TORCH_CHECK(v.sizes() == x.sizes(), kName, ": the model returned shape ", v.sizes(), " for x of shape ",
                x.sizes(), " at t = ", t);
    return v.to(x.scalar_type());
  };
  const int64_t total = static_cast<int64_t>(times.size()) - 1;
  at::NoGradGuard no_grad;
  at::Tensor x = std::move(x_T);  // never updated in place: it may share the caller's storage
  for (int64_t i = 0; i < total; ++i) {
    const double t = times[i], t_next = times[i + 1], h = t_next - t;
    const at::Tensor d1 = v_at(x, t);
    if (solver == FlowSolver::kEuler) {
      x = at::add(x, d1, h);
    } else {
      const at::Tensor d2 = v_at(at::add(x, d1, h), t_next);
      x = at::add(x, d1 + d2, 0.5 * h);
    }
    if (progress) progress(i + 1, total);
  }
  return x;
}

}  // namespace lf::core
