// Samplers as functions of (denoiser callback, x_T, timesteps, noise), in that order: DDIM (Song
// et al. 2021), DDPM ancestral sampling (Ho et al. 2020), timestep spacings and classifier-free
// guidance; for flow matching (core/flow.h) Euler and Heun on the probability-flow ODE.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/diffusion.h"

namespace lf::core {


// The network's raw output at (x_t, t) in the Diffusion's parameterisation; t is int64 [N] on
// x_t's device. Called once per sampling step.
using Denoiser = std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t)>;
// Fresh standard-normal noise shaped like x for sampling step `step` (0-based position in the
// timestep list). For the per-sample invariant draw it from the keyed generator, e.g.
// keyed_normal(seed, stream_id(Stream::kSampleStep), /*epoch=*/step, sample_indices, shape).
using NoiseFn = std::function<at::Tensor(int64_t step)>;
// Called after each step with (steps done, total steps); may be empty.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;
// A class-conditional network: raw prediction at (x, t, labels int64 [N]).
using ConditionalModel =
    std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels)>;

// How a subset of `steps` of the T training timesteps is chosen, as in diffusers'
// DDIMScheduler.set_timesteps (with steps_offset = 0):
//   leading:  (0 .. steps-1) * (T / steps), integer division  (DDIM paper's "uniform")
//   trailing: round(T - k T / steps) - 1 for k = 0 .. steps-1  (includes T - 1;
//             Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed")
//   linspace: round(linspace(0, T - 1, steps))
// Rounding is half to even, like numpy.
enum class Spacing { kLeading, kTrailing, kLinspace };
const EnumTable<Spacing>& spacings();  // "leading", "trailing", "linspace"
inline const std::string& to_string(Spacing s) { return spacings().name(s); }

// Which sampler `sample` runs: for a DDPM-objective model DDIM (deterministic at eta = 0) or
// DDPM ancestral sampling; for a flow-objective model the Euler or Heun ODE solver.
enum class SamplerKind { kDDIM, kDDPM, kEuler, kHeun };
const EnumTable<SamplerKind>& sampler_kinds();  // "ddim", "ddpm", "euler", "heun"
inline const std::string& to_string(SamplerKind s) { return sampler_kinds().name(s); }
// The objective a sampler integrates: kFlow for euler and heun, kDDPM for ddim and ddpm.
Objective sampler_objective(SamplerKind s);

// The ODE solvers of a flow-objective model (flow_sample below): Euler or Heun.
enum class FlowSolver { kEuler, kHeun };
const EnumTable<FlowSolver>& flow_solvers();  // "euler", "heun"
inline const std::string& to_string(FlowSolver s) { return flow_solvers().name(s); }

// Throws std::invalid_argument when `sampler` cannot sample a model trained with `objective`,
// naming sample.sampler, the objective's key and the samplers that fit.
void check_sampler_objective(SamplerKind sampler, Objective objective);

// The descending timesteps to sample with. Requires 1 <= steps <= T (std::invalid_argument).
std::vector<int64_t> sampling_timesteps(int64_t timesteps, int64_t steps, Spacing spacing);

// DDIM's sigma_t(eta) between alpha-bars ac (at t) and ac_prev (at the next timestep, 1 after
// the last): eta sqrt((1 - ac_prev) / (1 - ac)) sqrt(1 - ac / ac_prev) (Song et al. 2021,
// eq. 16). With eta = 1 and consecutive steps it is DDPM's posterior std sqrt(beta-tilde_t).
double ddim_sigma(double ac, double ac_prev, double eta);

// DDIM sampling (Song et al. 2021, eq. 12): for each t in `timesteps` (strictly descending,
// in [0, T)), x_prev = sqrt(ac_prev) x0 + sqrt(1 - ac_prev - sigma^2) eps + sigma z, where
// (x0, eps) come from the denoiser's prediction and ac_prev = 1 after the last step. `noise` is
// called only for steps with sigma > 0 (never when eta = 0, which is deterministic). If
// clip_x0 > 0 the predicted x0 is clamped to [-clip_x0, clip_x0] and eps recomputed from it
// (as diffusers' clip_sample); latents are not bounded, so 0 (off) is the default.
// Blocks until done; returns x_0 with x_T's shape, dtype and device.
at::Tensor ddim_sample(const Diffusion& diffusion, const Denoiser& denoiser, at::Tensor x_T,
                       const std::vector<int64_t>& timesteps, const NoiseFn& noise, double eta,
                       const ProgressFn& progress = {}, double clip_x0 = 0.0);

// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) written as guided-diffusion's
// p_sample: x_prev ~ q(x_prev | x_t, x0_hat) with mean and variance beta-tilde from eq. 7.
// `timesteps` empty means all T steps; a strictly descending subset samples the respaced
// process (guided-diffusion space_timesteps: beta'_t = 1 - ac_t / ac_prev). No noise at the
// last step. `noise`, `progress`, clip_x0 and blocking as for ddim_sample.
at::Tensor ddpm_sample(const Diffusion& diffusion, const Denoiser& denoiser, at::Tensor x_T,
                       const std::vector<int64_t>& timesteps, const NoiseFn& noise,
                       const ProgressFn& progress = {}, double clip_x0 = 0.0);

// Classifier-free guidance (Ho & Salimans 2022, eq. 6 written as uncond + s (cond - uncond)):
// a Denoiser that runs `model` once on the batch [x; x] with labels [labels; null_label] and
// mixes the two halves. scale = 1 is the conditional model alone (one call on x, no doubling).
// `labels` is int64 [N] and moves to x's device.
Denoiser classifier_free_guidance(ConditionalModel model, at::Tensor labels, int64_t null_label,
                                  double scale);

// ---- flow matching ---------------------------------------------------------------------------

// The times 1 = t_0 > t_1 > ... > t_steps = 0 of a flow sampler: u_k = 1 - k / steps, mapped
// by SD3's timestep shift t = s u / (1 + (s - 1) u) (Esser et al. 2024, sec. 5.3.2), which for
// s > 1 spends more steps near the noise; shift = 1 is the uniform grid. Requires steps >= 1
// and a finite shift > 0 (std::invalid_argument).
std::vector<double> flow_time_grid(int64_t steps, double shift = 1.0);

// Integrates the flow ODE dx/dt = v(x, t) from times.front() (1: noise) to times.back() (0:
// data) through `times` (strictly descending, in [0, 1]), for a model trained with
// diffusion.objective = flow. `velocity` is a Denoiser whose t is floating [N] in x's dtype
// holding the flow time itself (in [0, 1]; a network is called with FlowMatching::model_time
// of it); wrap it in classifier_free_guidance for CFG, which mixes velocities as it mixes noise
// predictions. solver = euler: x += h v(x, t), one model call per step, global error O(h);
// heun (Heun's method, the explicit trapezoidal rule; Karras et al. 2022, Algorithm 1 without
// noise): a predictor Euler step, then x += h (v(x, t) + v(x_pred, t_next)) / 2, two calls per
// step (also on the last, since v is defined at t = 0), global error O(h^2). Deterministic;
// blocks until done; returns x_0 with x_T's shape, dtype and device.
at::Tensor flow_sample(const Denoiser& velocity, at::Tensor x_T, const std::vector<double>& times,
                       FlowSolver solver, const ProgressFn& progress = {});

}  // namespace lf::core
