// The diffusion objective: forward process, parameterisations, loss weights and offset noise.
#include "core/diffusion.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "core/util/strings.h"

namespace lf::core {

const EnumTable<Prediction>& predictions() {
  static const EnumTable<Prediction> table = {{"eps", Prediction::kEps}, {"v", Prediction::kV}, {"x0", Prediction::kX0}};
  return table;
}

const EnumTable<LossWeighting>& loss_weightings() {
  static const EnumTable<LossWeighting> table = {{"uniform", LossWeighting::kUniform}, {"min_snr", LossWeighting::kMinSNR}};
  return table;
}

const EnumTable<Objective>& objectives() {
  static const EnumTable<Objective> table = {{"ddpm", Objective::kDDPM}, {"flow", Objective::kFlow}};
  return table;
}

const EnumTable<TimeSampling>& time_samplings() {
  static const EnumTable<TimeSampling> table = {{"uniform", TimeSampling::kUniform},
                                                {"logit_normal", TimeSampling::kLogitNormal}};
  return table;
}

std::string diffusion_key(const std::string& field) { return lf::str("diffusion.", field); }

namespace {

// The fields of the objective not chosen, set away from their defaults: one message each,
// saying why the field has no meaning there.
std::vector<std::string> foreign_fields(const DiffusionOptions& o) {
  const DiffusionOptions d;
  std::vector<std::string> out;
  auto refuse = [&](bool differs, const std::string& field, const std::string& why) {
    if (differs)
      out.push_back(lf::str(diffusion_key(field), " does not apply to ", diffusion_key("objective"), " = ",
                            to_string(o.objective), ": ", why));
  };
  if (o.objective == Objective::kFlow) {
    const char* path = "the linear interpolant x_t = (1 - t) x0 + t eps is the noise path";
    refuse(o.schedule != d.schedule, lf::str("schedule = ", to_string(o.schedule)), path);
    refuse(o.timesteps != d.timesteps, lf::str("timesteps = ", o.timesteps),
           "flow time is continuous in [0, 1] (sample.steps sets the sampler's grid)");
    refuse(o.prediction != d.prediction, lf::str("prediction = ", to_string(o.prediction)),
           "the network predicts the velocity eps - x0");
    refuse(o.weighting != d.weighting, lf::str("loss_weighting = ", to_string(o.weighting)),
           lf::str("min-SNR weights are defined on the DDPM schedule's SNR; the flow loss is the unweighted "
                   "velocity MSE (", diffusion_key("t_sampling"), " shapes where it trains instead)"));
    refuse(o.min_snr_gamma != d.min_snr_gamma, lf::str("min_snr_gamma = ", o.min_snr_gamma),
           "min-SNR weighting is DDPM only");
    refuse(o.offset_noise != d.offset_noise, lf::str("offset_noise = ", o.offset_noise),
           "offset noise remedies a DDPM schedule whose last step keeps signal (Guttenberg 2023); the "
           "interpolant is pure noise at t = 1");
  } else {
    const std::string ddpm = lf::str("DDPM draws integer timesteps uniformly from [0, diffusion.timesteps); set ",
                                     diffusion_key("objective"), " = flow to use it");
    refuse(o.t_sampling != d.t_sampling, lf::str("t_sampling = ", to_string(o.t_sampling)), ddpm);
    refuse(o.t_mean != d.t_mean, lf::str("t_mean = ", o.t_mean), ddpm);
    refuse(o.t_std != d.t_std, lf::str("t_std = ", o.t_std), ddpm);
  }
  return out;
}

}  // namespace

void DiffusionOptions::validate() const {
  if (timesteps < 1) {
    throw std::invalid_argument(lf::str("diffusion.timesteps is ", timesteps,
                                        ", expected an integer >= 1 (typically 1000)"));
  }
  if (!(min_snr_gamma > 0) || !std::isfinite(min_snr_gamma)) {
    throw std::invalid_argument(lf::str("diffusion.min_snr_gamma is ", min_snr_gamma,
                                        ", expected a finite value > 0 (the paper uses 5)"));
  }
  if (!(offset_noise >= 0) || !std::isfinite(offset_noise)) {
    throw std::invalid_argument(lf::str("diffusion.offset_noise is ", offset_noise,
                                        ", expected a finite value >= 0 (0 disables it; 0.1 is "
                                        "typical)"));
  }
  if (!std::isfinite(t_mean))
    throw std::invalid_argument(lf::str(diffusion_key("t_mean"), " is ", t_mean, ", expected a finite value (SD3 uses 0)"));
  if (!(t_std > 0) || !std::isfinite(t_std))
    throw std::invalid_argument(lf::str(diffusion_key("t_std"), " is ", t_std, ", expected a finite value > 0 (SD3 uses 1)"));
  const std::vector<std::string> foreign = foreign_fields(*this);
  if (!foreign.empty()) throw std::invalid_argument(join(foreign, "; "));
}

Diffusion::Diffusion(DiffusionOptions options) : options_(options) {
  options_.validate();
  if (options_.objective != Objective::kDDPM)
    throw std::invalid_argument(lf::str("Diffusion implements ", diffusion_key("objective"), " = ddpm, not ",
                                        to_string(options_.objective), "; build a FlowMatching (core/flow.h)"));
  schedule_ = NoiseSchedule::make(options_.schedule, options_.timesteps);
  const auto& ac = schedule_->alphas_cumprod();
  sqrt_ac_ = schedule_->sqrt_alphas_cumprod();
  sqrt_one_minus_ac_ = schedule_->sqrt_one_minus_alphas_cumprod();
  // guided-diffusion's sqrt_recip_alphas_cumprod and sqrt_recipm1_alphas_cumprod.
  sqrt_recip_ac_ = ac.reciprocal().sqrt();
  sqrt_recipm1_ac_ = (ac.reciprocal() - 1.0).sqrt();
}

at::Tensor Diffusion::gather(const at::Tensor& table, const at::Tensor& t,
                             const at::Tensor& x) const {
  TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 1, "Diffusion: t must be int64 [N], got ",
              t.scalar_type(), " ", t.sizes());
  TORCH_CHECK(x.dim() >= 1 && x.size(0) == t.size(0), "Diffusion: t has ", t.size(0),
              " entries but the data has shape ", x.sizes(), "; give one timestep per sample");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "Diffusion: data must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "Diffusion: t is on ", t.device(), " but the data is on ",
              x.device());
  if (t.is_cpu() && t.numel() > 0) {
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < timesteps(), "Diffusion: timesteps must lie in [0, ",
                timesteps(), "), found min ", lo, " max ", hi);
  }
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = t.size(0);
  return table.to(t.device()).index_select(0, t).to(x.scalar_type()).view(shape);
}

at::Tensor Diffusion::q_sample(const at::Tensor& x0, const at::Tensor& t,
                               const at::Tensor& noise) const {
  TORCH_CHECK(x0.sizes() == noise.sizes(), "Diffusion::q_sample: x0 has shape ", x0.sizes(),
              " but noise has shape ", noise.sizes());
  return gather(sqrt_ac_, t, x0) * x0 + gather(sqrt_one_minus_ac_, t, x0) * noise;
}

at::Tensor Diffusion::v_from_eps_x0(const at::Tensor& eps, const at::Tensor& x0,
                                    const at::Tensor& t) const {
  TORCH_CHECK(eps.sizes() == x0.sizes(), "Diffusion: eps has shape ", eps.sizes(),
              " but x0 has shape ", x0.sizes());
  return gather(sqrt_ac_, t, x0) * eps - gather(sqrt_one_minus_ac_, t, x0) * x0;
}

at::Tensor Diffusion::prediction_from_eps_x0(const at::Tensor& eps, const at::Tensor& x0,
                                             const at::Tensor& t) const {
  TORCH_CHECK(eps.sizes() == x0.sizes(), "Diffusion: eps has shape ", eps.sizes(),
              " but x0 has shape ", x0.sizes());
  switch (options_.prediction) {
    case Prediction::kEps:
      gather(sqrt_ac_, t, x0);  // validates t against the data
      return eps;
    case Prediction::kX0:
      gather(sqrt_ac_, t, x0);
      return x0;
    case Prediction::kV:
      return v_from_eps_x0(eps, x0, t);
  }
  TORCH_CHECK(false, "Diffusion: unknown prediction");
}

at::Tensor Diffusion::target(const at::Tensor& x0, const at::Tensor& noise,
                             const at::Tensor& t) const {
  return prediction_from_eps_x0(noise, x0, t);
}

at::Tensor Diffusion::eps_from(const at::Tensor& pred, const at::Tensor& x_t,
                               const at::Tensor& t) const {
  TORCH_CHECK(pred.sizes() == x_t.sizes(), "Diffusion::eps_from: prediction has shape ",
              pred.sizes(), " but x_t has shape ", x_t.sizes());
  switch (options_.prediction) {
    case Prediction::kEps:
      gather(sqrt_ac_, t, x_t);
      return pred;
    case Prediction::kX0:
      // guided-diffusion _predict_eps_from_xstart: (x_t / sqrt(ac) - x0) / sqrt(1/ac - 1).
      return (gather(sqrt_recip_ac_, t, x_t) * x_t - pred) / gather(sqrt_recipm1_ac_, t, x_t);
    case Prediction::kV:
      // eps = sqrt(ac) v + sqrt(1 - ac) x_t, since sqrt(ac)^2 + sqrt(1 - ac)^2 = 1.
      return gather(sqrt_ac_, t, x_t) * pred + gather(sqrt_one_minus_ac_, t, x_t) * x_t;
  }
  TORCH_CHECK(false, "Diffusion: unknown prediction");
}

at::Tensor Diffusion::x0_from(const at::Tensor& pred, const at::Tensor& x_t,
                              const at::Tensor& t) const {
  TORCH_CHECK(pred.sizes() == x_t.sizes(), "Diffusion::x0_from: prediction has shape ",
              pred.sizes(), " but x_t has shape ", x_t.sizes());
  switch (options_.prediction) {
    case Prediction::kEps:
      // guided-diffusion _predict_xstart_from_eps: x_t / sqrt(ac) - sqrt(1/ac - 1) eps.
      return gather(sqrt_recip_ac_, t, x_t) * x_t - gather(sqrt_recipm1_ac_, t, x_t) * pred;
    case Prediction::kX0:
      gather(sqrt_ac_, t, x_t);
      return pred;
    case Prediction::kV:
      // x0 = sqrt(ac) x_t - sqrt(1 - ac) v (Salimans & Ho 2022, sec. 4).
      return gather(sqrt_ac_, t, x_t) * x_t - gather(sqrt_one_minus_ac_, t, x_t) * pred;
  }
  TORCH_CHECK(false, "Diffusion: unknown prediction");
}

at::Tensor Diffusion::loss_weight(const at::Tensor& t) const {
  TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 1,
              "Diffusion::loss_weight: t must be int64 [N], got ", t.scalar_type(), " ",
              t.sizes());
  if (options_.weighting == LossWeighting::kUniform) {
    return at::ones({t.size(0)}, t.options().dtype(at::kDouble));
  }
  if (t.is_cpu() && t.numel() > 0) {
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < timesteps(), "Diffusion::loss_weight: timesteps must lie in [0, ",
                timesteps(), "), found min ", lo, " max ", hi);
  }
  auto snr = schedule_->snr(t);
  auto clipped = snr.clamp_max(options_.min_snr_gamma);
  switch (options_.prediction) {
    case Prediction::kEps:
      return clipped / snr;
    case Prediction::kV:
      return clipped / (snr + 1.0);
    case Prediction::kX0:
      return clipped;
  }
  TORCH_CHECK(false, "Diffusion: unknown prediction");
}

at::Tensor Diffusion::per_sample_loss(const at::Tensor& model_out, const at::Tensor& x0,
                                      const at::Tensor& noise, const at::Tensor& t) const {
  TORCH_CHECK(model_out.sizes() == x0.sizes(), "Diffusion::per_sample_loss: model output has "
              "shape ", model_out.sizes(), " but x0 has shape ", x0.sizes());
  auto dtype = model_out.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto target_value = target(x0.to(dtype), noise.to(dtype), t);
  auto sq = (model_out.to(dtype) - target_value).pow(2);
  auto mse = sq.dim() > 1 ? sq.flatten(1).mean(1) : sq;
  return mse * loss_weight(t).to(dtype);
}

at::Tensor Diffusion::offset_noise(const at::Tensor& noise, const at::Tensor& channel_noise) const {
  TORCH_CHECK(noise.dim() >= 2, "Diffusion::offset_noise: noise must be [N, C, ...], got shape ",
              noise.sizes());
  TORCH_CHECK(channel_noise.dim() == 2 && channel_noise.size(0) == noise.size(0) &&
                  channel_noise.size(1) == noise.size(1),
              "Diffusion::offset_noise: channel_noise must be [N, C] = [", noise.size(0), ", ",
              noise.size(1), "], got ", channel_noise.sizes());
  if (options_.offset_noise == 0) return noise;
  std::vector<int64_t> shape(noise.dim(), 1);
  shape[0] = noise.size(0);
  shape[1] = noise.size(1);
  return noise + channel_noise.to(noise.options()).view(shape) * options_.offset_noise;
}

}  // namespace lf::core
