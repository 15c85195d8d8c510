// Autoencoder: kl VAE or identity (see autoencoder.h).
#include "launch/autoencoder.h"

#include <filesystem>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace lf::launch {

namespace fs = std::filesystem;

Autoencoder Autoencoder::identity(int64_t channels) {
  Autoencoder a;
  a.identity_channels_ = channels;
  a.hash_ = str("identity-c", channels);
  return a;
}

Autoencoder Autoencoder::from_vae(core::VAE vae, std::string weights_path) {
  Autoencoder a;
  vae->eval();
  std::string content = core::hash_tensors(core::state_dict(*vae));
  a.hash_ = sha256_hex(content + core::diffusers_vae_config(vae->options()).dump());
  a.vae_ = std::move(vae);
  a.weights_ = std::move(weights_path);
  return a;
}

Autoencoder Autoencoder::load(const std::string& kind, const std::string& weights, int64_t image_channels) {
  if (kind == "identity") return identity(image_channels);
  if (kind != "kl") throw std::invalid_argument(str("vae.kind = '", kind, "': expected kl or identity"));
  if (weights.empty())
    throw std::invalid_argument("vae.weights is empty: set it to the VAE that `latentforge vae train` wrote "
                                "(RUN_DIR/vae) or a diffusers AutoencoderKL directory, or set vae.kind=identity");
  if (!fs::exists(weights))
    throw std::invalid_argument(str("vae.weights = '", weights, "': no such file or directory"));
  core::VAE vae = fs::is_directory(weights) ? core::load_diffusers_vae(weights) : core::load_vae_file(weights);
  return from_vae(std::move(vae), weights);
}

nlohmann::json Autoencoder::config() const {
  if (is_identity()) return {{"kind", "identity"}, {"channels", identity_channels_}};
  return core::diffusers_vae_config((*vae_)->options());
}

int64_t Autoencoder::image_channels() const {
  return is_identity() ? identity_channels_ : (*vae_)->options().in_channels;
}
int64_t Autoencoder::latent_channels() const {
  return is_identity() ? identity_channels_ : (*vae_)->options().latent_channels;
}
int64_t Autoencoder::downsample_factor() const {
  return is_identity() ? 1 : (*vae_)->options().downsample_factor();
}

std::pair<at::Tensor, at::Tensor> Autoencoder::encode_moments(const at::Tensor& images, int64_t batch) const {
  if (images.size(1) != image_channels())
    throw std::invalid_argument(str("images have ", images.size(1), " channels but the ", kind(), " autoencoder expects ",
                                    image_channels()));
  if (is_identity()) return {images, at::full_like(images, kIdentityLogvar)};
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> means, logvars;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    auto post = (*vae_)->encode(images.narrow(0, i, std::min(batch, images.size(0) - i)));
    means.push_back(post.mean());
    logvars.push_back(post.logvar());
  }
  return {at::cat(means), at::cat(logvars)};
}

at::Tensor Autoencoder::decode(const at::Tensor& latents, int64_t batch) const {
  if (is_identity()) return latents.clamp(-1, 1);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < latents.size(0); i += batch)
    out.push_back((*vae_)->decode(latents.narrow(0, i, std::min(batch, latents.size(0) - i))).clamp(-1, 1));
  return at::cat(out);
}

void Autoencoder::to(at::Device device) {
  if (vae_) (*vae_)->to(device);
}

void Autoencoder::to(at::Device device, at::ScalarType dtype) {
  if (vae_) (*vae_)->to(device, dtype);
}

}  // namespace lf::launch
