// Noise schedules of the forward process: the interface NoiseSchedule (betas and the quantities
// derived from them) and the linear, scaled-linear and cosine schedules behind it.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/util/enum_table.h"

namespace lf::core {

enum class ScheduleKind { kLinear, kScaledLinear, kCosine };

// "linear", "scaled_linear", "cosine".
const EnumTable<ScheduleKind>& schedule_kinds();
inline const std::string& to_string(ScheduleKind kind) { return schedule_kinds().name(kind); }

// A discrete schedule of T steps, t = 0 .. T-1 (t = 0 is the least noisy). All tensors are
// float64 [T] on the CPU, computed once at construction; callers move what they gather.
// Immutable after construction, so it is safe to share between threads.
class NoiseSchedule {
 public:
  virtual ~NoiseSchedule() = default;
  virtual ScheduleKind kind() const = 0;

  // Builds a schedule of `timesteps` >= 1 steps; throws std::invalid_argument otherwise.
  static std::unique_ptr<NoiseSchedule> make(ScheduleKind kind, int64_t timesteps);

  int64_t timesteps() const { return betas_.size(0); }
  const at::Tensor& betas() const { return betas_; }
  const at::Tensor& alphas() const { return alphas_; }                  // 1 - beta_t
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // alpha-bar_t
  const at::Tensor& sqrt_alphas_cumprod() const { return sqrt_alphas_cumprod_; }
  const at::Tensor& sqrt_one_minus_alphas_cumprod() const {
    return sqrt_one_minus_alphas_cumprod_;
  }
  // Signal-to-noise ratio alpha-bar / (1 - alpha-bar) (Kingma et al. 2021, eq. 2), all steps.
  const at::Tensor& snr() const { return snr_; }
  // The SNR at int64 timesteps `t` (any shape, any device): float64 on t's device.
  at::Tensor snr(const at::Tensor& t) const;

 protected:
  // Derives every quantity from `betas` (float64 [T], each in (0, 1)).
  explicit NoiseSchedule(at::Tensor betas);

 private:
  at::Tensor betas_, alphas_, alphas_cumprod_, sqrt_alphas_cumprod_,
      sqrt_one_minus_alphas_cumprod_, snr_;
};

// DDPM's linear betas (Ho et al. 2020, sec. 4: 1e-4 .. 0.02 over T = 1000), rescaled for any T
// as guided-diffusion's get_named_beta_schedule("linear"): scale = 1000 / T, betas =
// linspace(scale 1e-4, scale 0.02, T). For T < 21 that would reach beta >= 1, so betas are
// clipped at 0.999 like the cosine schedule (a no-op for T >= 21).
class LinearSchedule final : public NoiseSchedule {
 public:
  explicit LinearSchedule(int64_t timesteps);
  ScheduleKind kind() const override { return ScheduleKind::kLinear; }
};

// Latent diffusion / Stable Diffusion (CompVis ldm make_beta_schedule("linear"), diffusers
// "scaled_linear"): betas = linspace(sqrt(0.00085), sqrt(0.012), T)^2.
class ScaledLinearSchedule final : public NoiseSchedule {
 public:
  explicit ScaledLinearSchedule(int64_t timesteps);
  ScheduleKind kind() const override { return ScheduleKind::kScaledLinear; }
};

// Nichol & Dhariwal 2021, eq. 17: alpha-bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
// s = 0.008; betas_t = min(1 - alpha-bar(t+1)/alpha-bar(t), 0.999) (guided-diffusion
// betas_for_alpha_bar), the clip preventing a singularity at t = T.
class CosineSchedule final : public NoiseSchedule {
 public:
  explicit CosineSchedule(int64_t timesteps);
  ScheduleKind kind() const override { return ScheduleKind::kCosine; }
};

}  // namespace lf::core
