// Flow matching on the linear interpolant (rectified flow: Liu et al. 2022, "Flow Straight and
// Fast"; Lipman et al. 2022, "Flow Matching for Generative Modeling"; as SiT, Ma et al. 2024,
// and SD3, Esser et al. 2024, train it): x_t = (1 - t) x0 + t eps for continuous t in [0, 1],
// the network predicts the velocity v = eps - x0, the loss is the per-sample MSE to it, and t
// is drawn per sample from the keyed generator, uniform or logit-normal.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "core/diffusion.h"

namespace lf::core {

// The objective for DiffusionOptions with objective = flow (only t_sampling, t_mean and t_std
// apply). x-like tensors are [N, ...] of any floating dtype and device; t is floating [N] on
// their device, cast to their dtype. Immutable: safe to share between threads.
class FlowMatching {
 public:
  // The factor between flow time and the networks' time input: they embed 1000 t, the range
  // their sinusoidal embedding is tuned for (DDPM's steps; SD3 and FLUX scale t likewise).
  static constexpr double kTimeScale = 1000.0;

  // Validates `options` (std::invalid_argument; objective must be flow).
  explicit FlowMatching(DiffusionOptions options);
  const DiffusionOptions& options() const { return options_; }

  // t for each sample, keyed by (seed, Stream::kFlowTime, epoch, index) and nothing else, so a
  // sample gets the same t in any batch layout and on any number of ranks. uniform: the keyed
  // uniform in (0, 1); logit_normal: sigmoid(t_mean + t_std z) with the keyed normal z, in
  // float64, then cast. Returns [N] with opts' dtype (float64 when unset) on opts' device
  // (else the indices').
  at::Tensor sample_time(uint64_t seed, const at::Tensor& epochs, const at::Tensor& indices,
                         at::TensorOptions opts = {}) const;
  at::Tensor sample_time(uint64_t seed, int64_t epoch, const at::Tensor& indices,
                         at::TensorOptions opts = {}) const;

  // What the networks are given as time: kTimeScale * t.
  static at::Tensor model_time(const at::Tensor& t) { return t * kTimeScale; }

  // x_t = (1 - t) x0 + t eps (the linear interpolant; Liu et al. 2022, eq. 1).
  at::Tensor x_t(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  // The regression target v = eps - x0 = d x_t / dt.
  at::Tensor target(const at::Tensor& x0, const at::Tensor& noise) const;
  // x0 and eps implied by a velocity v at x_t: x0 = x_t - t v, eps = x_t + (1 - t) v.
  at::Tensor x0_from(const at::Tensor& v, const at::Tensor& x_t, const at::Tensor& t) const;
  at::Tensor eps_from(const at::Tensor& v, const at::Tensor& x_t, const at::Tensor& t) const;

  // Mean over non-batch dims of (model_out - (noise - x0))^2: [N], float32 (float64 when
  // model_out is float64); low-precision inputs are promoted to float32 first.
  at::Tensor per_sample_loss(const at::Tensor& model_out, const at::Tensor& x0, const at::Tensor& noise) const;

 private:
  // t as [N, 1, ..., 1] in x's dtype; checks shapes.
  at::Tensor broadcast_t(const at::Tensor& t, const at::Tensor& x, const char* what) const;

  DiffusionOptions options_;
};

}  // namespace lf::core
