// The diffusion objective: the forward process q(x_t | x_0), the network's parameterisations
// (eps, v, x0) and conversions between them, loss weights (uniform, min-SNR-gamma), offset noise;
// and the options of both objectives (DDPM here, flow matching in core/flow.h).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/noise_schedule.h"

namespace lf::core {

// What the network predicts: the noise (Ho et al. 2020), v (Salimans & Ho 2022) or x_0.
enum class Prediction { kEps, kV, kX0 };
// Per-sample loss weights: 1, or min-SNR-gamma (Hang et al. 2023).
enum class LossWeighting { kUniform, kMinSNR };

const EnumTable<Prediction>& predictions();         // "eps", "v", "x0"
const EnumTable<LossWeighting>& loss_weightings();  // "uniform", "min_snr"
inline const std::string& to_string(Prediction p) { return predictions().name(p); }
inline const std::string& to_string(LossWeighting w) { return loss_weightings().name(w); }
// The training objective: DDPM's discrete forward process (this file; Ho et al. 2020) or flow
// matching on the linear interpolant x_t = (1 - t) x0 + t eps (core/flow.h; Liu et al. 2022,
// Lipman et al. 2022).
enum class Objective { kDDPM, kFlow };
const EnumTable<Objective>& objectives();  // "ddpm", "flow"
inline const std::string& to_string(Objective o) { return objectives().name(o); }
// How flow matching draws t in (0, 1): uniformly, or logit-normal t = sigmoid(m + s z), z ~ N(0, 1)
// (Esser et al. 2024, SD3, sec. 3.1), which puts more training on the middle of the path.
enum class TimeSampling { kUniform, kLogitNormal };
const EnumTable<TimeSampling>& time_samplings();  // "uniform", "logit_normal"
inline const std::string& to_string(TimeSampling s) { return time_samplings().name(s); }

// The config key of a [diffusion] field, "diffusion.<field>", as messages name it. The keys of the
// flow objective (objective, t_sampling, t_mean, t_std) are spelled here before the config
// registers them.
std::string diffusion_key(const std::string& field);

// Configuration of the objective ([diffusion] in the INI configs).
struct DiffusionOptions {
  // Noise schedule. scaled_linear is the latent-diffusion schedule (Rombach et al. 2022; CompVis
  // LDM and Stable Diffusion configs), tuned for VAE latents, which this project trains on.
  ScheduleKind schedule = ScheduleKind::kScaledLinear;
  int64_t timesteps = 1000;                          // T, number of discrete steps (>= 1)
  Prediction prediction = Prediction::kEps;          // the network's output
  LossWeighting weighting = LossWeighting::kUniform;  // per-sample loss weights
  double min_snr_gamma = 5.0;                        // gamma of min-SNR (> 0); 5 in the paper
  double offset_noise = 0.0;                         // offset-noise strength (>= 0; 0.1 typical)
  Objective objective = Objective::kDDPM;            // ddpm (the fields above) or flow
  TimeSampling t_sampling = TimeSampling::kUniform;  // flow: how t is drawn
  double t_mean = 0.0;                               // flow, logit-normal: m (SD3 uses 0)
  double t_std = 1.0;                                // flow, logit-normal: s > 0 (SD3 uses 1)

  // Throws std::invalid_argument naming the field (diffusion.<name>), the value and the range.
  // The fields of one objective are refused with the other when they differ from their
  // defaults, with the reason (every such field at once): with flow, schedule, timesteps,
  // prediction, loss_weighting, min_snr_gamma and offset_noise; with ddpm, t_sampling, t_mean
  // and t_std.
  void validate() const;
};

// The objective for one schedule. All operations accept tensors on any device and of any
// floating dtype; `t` is int64 [N] on the data's device, x-like tensors are [N, ...]. Per-step
// coefficients are gathered by t from float64 tables and cast to the data's dtype. Timesteps
// on the CPU are range-checked; on other devices they must lie in [0, T) (no sync is spent
// on checking them). Immutable after construction: safe to share between threads.
class Diffusion {
 public:
  // Validates `options` (std::invalid_argument; objective must be ddpm) and builds the schedule.
  explicit Diffusion(DiffusionOptions options);

  const DiffusionOptions& options() const { return options_; }
  const NoiseSchedule& schedule() const { return *schedule_; }
  int64_t timesteps() const { return options_.timesteps; }

  // x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) noise (Ho et al. 2020, eq. 4).
  at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const;

  // What the network should output for (x0, noise, t) under options().prediction:
  // eps -> noise, x0 -> x0, v -> sqrt(ac) eps - sqrt(1 - ac) x0 (Salimans & Ho 2022, sec. 4).
  at::Tensor target(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;

  // The noise and the clean sample implied by a prediction `pred` (in options().prediction)
  // at x_t. Exact inverses of q_sample/target up to rounding.
  at::Tensor eps_from(const at::Tensor& pred, const at::Tensor& x_t, const at::Tensor& t) const;
  at::Tensor x0_from(const at::Tensor& pred, const at::Tensor& x_t, const at::Tensor& t) const;
  // v = sqrt(ac) eps - sqrt(1 - ac) x0.
  at::Tensor v_from_eps_x0(const at::Tensor& eps, const at::Tensor& x0,
                           const at::Tensor& t) const;
  // The prediction (in options().prediction) that corresponds to (eps, x0) at step t.
  at::Tensor prediction_from_eps_x0(const at::Tensor& eps, const at::Tensor& x0,
                                    const at::Tensor& t) const;

  // Per-sample loss weights, float64 [N] on t's device: 1 (uniform) or min-SNR-gamma
  // (Hang et al. 2023, sec. 3.4): min(snr, g) / snr for eps, min(snr, g) / (snr + 1) for v,
  // min(snr, g) for x0, which all weight the x0-space error by min(snr, g).
  at::Tensor loss_weight(const at::Tensor& t) const;

  // loss_weight(t) * mean over non-batch dims of (model_out - target)^2: [N], float32 (float64
  // when the inputs are float64). Low-precision inputs are promoted to float32 first.
  at::Tensor per_sample_loss(const at::Tensor& model_out, const at::Tensor& x0,
                             const at::Tensor& noise, const at::Tensor& t) const;

  // Offset noise (Guttenberg 2023, "Diffusion with Offset Noise"): noise + offset_noise * c
  // broadcast over the spatial dims, where `channel_noise` [N, C] is standard normal, drawn by
  // the caller (keyed stream Stream::kOffsetNoise) so it obeys the per-sample invariant. Use
  // the result as the noise for both q_sample and target. Returns `noise` when offset_noise = 0.
  at::Tensor offset_noise(const at::Tensor& noise, const at::Tensor& channel_noise) const;

 private:
  // table[t] as a tensor of x's dtype and device, shaped [N, 1, ..., 1] to broadcast over x.
  at::Tensor gather(const at::Tensor& table, const at::Tensor& t, const at::Tensor& x) const;

  DiffusionOptions options_;
  std::unique_ptr<NoiseSchedule> schedule_;
  // float64 [T] tables: sqrt(ac), sqrt(1 - ac), sqrt(1 / ac), sqrt(1 / ac - 1).
  at::Tensor sqrt_ac_, sqrt_one_minus_ac_, sqrt_recip_ac_, sqrt_recipm1_ac_;
};

}  // namespace lf::core
