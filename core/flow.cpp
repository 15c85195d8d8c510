// Flow matching on the linear interpolant (see flow.h).
#include "core/flow.h"

#include <stdexcept>

#include "core/keyed_rng.h"
#include "core/util/strings.h"

namespace lf::core {

FlowMatching::FlowMatching(DiffusionOptions options) : options_(options) {
  options_.validate();
  if (options_.objective != Objective::kFlow)
    throw std::invalid_argument(lf::str("FlowMatching implements ", diffusion_key("objective"), " = flow, not ",
                                        to_string(options_.objective), "; build a Diffusion (core/diffusion.h)"));
}

at::Tensor FlowMatching::sample_time(uint64_t seed, const at::Tensor& epochs, const at::Tensor& indices,
                                     at::TensorOptions opts) const {
  const uint32_t stream = stream_id(Stream::kFlowTime);
  if (options_.t_sampling == TimeSampling::kUniform) return keyed_uniform(seed, stream, epochs, indices, {}, opts);
  // Logit-normal (Esser et al. 2024, sec. 3.1): t = sigmoid(m + s z), computed in float64.
  const at::Tensor z = keyed_normal(seed, stream, epochs, indices, {}, at::TensorOptions().dtype(at::kDouble));
  return at::sigmoid(z * options_.t_std + options_.t_mean)
      .to(opts.has_device() ? opts.device() : indices.device(),
          opts.has_dtype() ? opts.dtype().toScalarType() : at::kDouble);
}

at::Tensor FlowMatching::sample_time(uint64_t seed, int64_t epoch, const at::Tensor& indices,
                                     at::TensorOptions opts) const {
  return sample_time(seed, at::full(indices.sizes(), epoch, indices.options().dtype(at::kLong)), indices, opts);
}

at::Tensor FlowMatching::broadcast_t(const at::Tensor& t, const at::Tensor& x, const char* what) const {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "FlowMatching::", what, ": data must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(t.dim() == 1 && x.dim() >= 1 && t.size(0) == x.size(0), "FlowMatching::", what, ": t has shape ",
              t.sizes(), " but the data has shape ", x.sizes(), "; give one time per sample");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "FlowMatching::", what, ": t must be floating point in [0, 1], got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "FlowMatching::", what, ": t is on ", t.device(), " but the data is on ",
              x.device());
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = t.size(0);
  return t.to(x.scalar_type()).view(shape);
}

at::Tensor FlowMatching::x_t(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const {
  TORCH_CHECK(x0.sizes() == noise.sizes(), "FlowMatching::x_t: x0 has shape ", x0.sizes(), " but noise has shape ",
              noise.sizes());
  const at::Tensor tb = broadcast_t(t, x0, "x_t");
  // Products and a sum, each rounded once per element, so a sample's x_t does not depend on
  // where it sits in the batch (a fused lerp or FMA could round vector lanes and the scalar
  // tail differently); exact at both ends.
  return (1.0 - tb) * x0 + tb * noise;
}

at::Tensor FlowMatching::target(const at::Tensor& x0, const at::Tensor& noise) const {
  TORCH_CHECK(x0.sizes() == noise.sizes(), "FlowMatching::target: x0 has shape ", x0.sizes(),
              " but noise has shape ", noise.sizes());
  return noise - x0;
}

at::Tensor FlowMatching::x0_from(const at::Tensor& v, const at::Tensor& x_t, const at::Tensor& t) const {
  TORCH_CHECK(v.sizes() == x_t.sizes(), "FlowMatching::x0_from: v has shape ", v.sizes(), " but x_t has shape ",
              x_t.sizes());
  return x_t - broadcast_t(t, x_t, "x0_from") * v;
}

at::Tensor FlowMatching::eps_from(const at::Tensor& v, const at::Tensor& x_t, const at::Tensor& t) const {
  TORCH_CHECK(v.sizes() == x_t.sizes(), "FlowMatching::eps_from: v has shape ", v.sizes(), " but x_t has shape ",
              x_t.sizes());
  return x_t + (1.0 - broadcast_t(t, x_t, "eps_from")) * v;
}

at::Tensor FlowMatching::per_sample_loss(const at::Tensor& model_out, const at::Tensor& x0,
                                         const at::Tensor& noise) const {
  TORCH_CHECK(model_out.sizes() == x0.sizes(), "FlowMatching::per_sample_loss: model output has shape ",
              model_out.sizes(), " but x0 has shape ", x0.sizes());
  const auto dtype = model_out.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor sq = (model_out.to(dtype) - target(x0.to(dtype), noise.to(dtype))).pow(2);
  return sq.dim() > 1 ? sq.flatten(1).mean(1) : sq;
}

}  // namespace lf::core
