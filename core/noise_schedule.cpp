// Noise schedules: the betas of each kind and the quantities every schedule derives from them.
#include "core/noise_schedule.h"

#include <cmath>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr double kMaxBeta = 0.999;  // guided-diffusion's clip for betas_for_alpha_bar
constexpr double kCosineOffset = 0.008;  // s of Nichol & Dhariwal 2021, eq. 17
constexpr double kPi = 3.14159265358979323846;

void check_timesteps(int64_t timesteps, const char* schedule) {
  if (timesteps < 1) {
    throw std::invalid_argument(lf::str("noise schedule ", schedule, ": timesteps is ", timesteps,
                                        ", expected an integer >= 1 (typically 1000)"));
  }
}

at::Tensor linspace64(double start, double end, int64_t steps) {
  return at::linspace(start, end, steps, at::TensorOptions().dtype(at::kDouble));
}

}  // namespace

const EnumTable<ScheduleKind>& schedule_kinds() {
  static const EnumTable<ScheduleKind> table = {
      {"linear", ScheduleKind::kLinear}, {"scaled_linear", ScheduleKind::kScaledLinear}, {"cosine", ScheduleKind::kCosine}};
  return table;
}

std::unique_ptr<NoiseSchedule> NoiseSchedule::make(ScheduleKind kind, int64_t timesteps) {
  switch (kind) {
    case ScheduleKind::kLinear:
      return std::make_unique<LinearSchedule>(timesteps);
    case ScheduleKind::kScaledLinear:
      return std::make_unique<ScaledLinearSchedule>(timesteps);
    case ScheduleKind::kCosine:
      return std::make_unique<CosineSchedule>(timesteps);
  }
  throw std::invalid_argument(lf::str("ScheduleKind value ", static_cast<int>(kind),
                                      " is not a known schedule"));
}

NoiseSchedule::NoiseSchedule(at::Tensor betas) : betas_(std::move(betas)) {
  TORCH_CHECK(betas_.scalar_type() == at::kDouble && betas_.dim() == 1 && betas_.numel() >= 1,
              "NoiseSchedule: betas must be float64 [T] with T >= 1, got ", betas_.scalar_type(),
              " ", betas_.sizes());
  TORCH_CHECK((betas_ > 0).all().item<bool>() && (betas_ < 1).all().item<bool>(),
              "NoiseSchedule: every beta must lie in (0, 1); min ", betas_.min().item<double>(),
              " max ", betas_.max().item<double>());
  alphas_ = 1.0 - betas_;
  alphas_cumprod_ = at::cumprod(alphas_, 0);
  sqrt_alphas_cumprod_ = alphas_cumprod_.sqrt();
  sqrt_one_minus_alphas_cumprod_ = (1.0 - alphas_cumprod_).sqrt();
  snr_ = alphas_cumprod_ / (1.0 - alphas_cumprod_);
}

at::Tensor NoiseSchedule::snr(const at::Tensor& t) const {
  TORCH_CHECK(t.scalar_type() == at::kLong, "NoiseSchedule::snr: t must be int64, got ",
              t.scalar_type());
  return snr_.to(t.device()).index_select(0, t.reshape(-1)).view(t.sizes());
}

LinearSchedule::LinearSchedule(int64_t timesteps)
    : NoiseSchedule([&] {
        check_timesteps(timesteps, "linear");
        const double scale = 1000.0 / static_cast<double>(timesteps);
        return linspace64(scale * 1e-4, scale * 0.02, timesteps).clamp_max_(kMaxBeta);
      }()) {}

ScaledLinearSchedule::ScaledLinearSchedule(int64_t timesteps)
    : NoiseSchedule([&] {
        check_timesteps(timesteps, "scaled_linear");
        return linspace64(std::sqrt(0.00085), std::sqrt(0.012), timesteps).pow_(2);
      }()) {}

CosineSchedule::CosineSchedule(int64_t timesteps)
    : NoiseSchedule([&] {
        check_timesteps(timesteps, "cosine");
        auto alpha_bar = [&](const at::Tensor& t) {
          return ((t / static_cast<double>(timesteps) + kCosineOffset) / (1.0 + kCosineOffset) *
                  (kPi / 2))
              .cos()
              .pow(2);
        };
        auto t = at::arange(timesteps, at::TensorOptions().dtype(at::kDouble));
        return (1.0 - alpha_bar(t + 1.0) / alpha_bar(t)).clamp_max_(kMaxBeta);
      }()) {}

}  // namespace lf::core
