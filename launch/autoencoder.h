// The autoencoder a pipeline stage uses: a trained AutoencoderKL (vae.kind=kl, weights from
// vae.weights) or the identity (vae.kind=identity, f = 1: the pixel-space baseline), behind one
// interface so encode, train (grids), sample and eval do not care which. Its hash binds a
// latent cache and a checkpoint to it (docs/design.md, invariant 4).
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/vae.h"

namespace lf::launch {

class Autoencoder {
 public:
  // vae.kind = "identity" (channels = image channels) or "kl" with `weights` = a diffusers
  // AutoencoderKL directory or a LatentForge vae.safetensors file. Throws naming the path.
  static Autoencoder load(const std::string& kind, const std::string& weights, int64_t image_channels);
  static Autoencoder identity(int64_t channels);
  static Autoencoder from_vae(core::VAE vae, std::string weights_path);

  bool is_identity() const { return !vae_.has_value(); }
  std::string kind() const { return is_identity() ? "identity" : "kl"; }
  // "identity-c1" or the SHA-256 of the weights' content and the architecture.
  const std::string& hash() const { return hash_; }
  nlohmann::json config() const;  // diffusers config for kl; {"kind":"identity","channels":c}
  const std::string& weights_path() const { return weights_; }
  int64_t image_channels() const;
  int64_t latent_channels() const;
  int64_t downsample_factor() const;

  // Images in [-1, 1] [N,C,H,W] -> posterior moments (identity: mean = x, logvar = -inf-like
  // constant so exp(0.5 logvar) = 0). Runs without autograd, in batches of `batch`.
  std::pair<at::Tensor, at::Tensor> encode_moments(const at::Tensor& images, int64_t batch = 256) const;
  // Latents (unscaled) -> images in [-1, 1] (clamped), without autograd, in batches.
  at::Tensor decode(const at::Tensor& latents, int64_t batch = 256) const;

  void to(at::Device device);
  // Parameters to `dtype` (float32, or float64 for f64 exactness runs) on `device`.
  void to(at::Device device, at::ScalarType dtype);
  const core::VAE& vae() const { return *vae_; }

 private:
  mutable std::optional<core::VAE> vae_;  // module calls are not const in LibTorch
  std::string hash_;
  std::string weights_;
  int64_t identity_channels_ = 1;
};

// The log-variance the identity autoencoder reports: exp(0.5 * it) is 0 in float32.
constexpr double kIdentityLogvar = -30.0;

}  // namespace lf::launch
