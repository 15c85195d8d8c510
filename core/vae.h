// The KL autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and app. G), built with
// the parameter names of diffusers' AutoencoderKL so that its published weights load directly
// and ours load back into diffusers. Also the diagonal Gaussian posterior and the
// reconstruction + KL loss.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/nn_blocks.h"
#include "core/safetensors.h"
#include "core/util/enum_table.h"

namespace lf::core {

// Field names follow the keys of diffusers' AutoencoderKL config.json.
struct VAEOptions {
  int64_t in_channels = 1;       // image channels
  int64_t out_channels = 1;      // reconstructed channels (normally == in_channels)
  int64_t latent_channels = 4;   // channels of z; the encoder emits twice that (mean, logvar)
  int64_t layers_per_block = 1;  // ResnetBlock2Ds per encoder block (decoder: one more)
  int64_t norm_num_groups = 32;  // GroupNorm groups; divides every block_out_channels entry
  // Channels of each resolution level; a down/upsampler between consecutive levels, so the
  // downsampling factor is 2^(levels-1). The default (f = 4, 0.29M parameters) keeps the
  // Fashion-MNIST quickstart fast on 2 CPU cores; {32, 64, 64} would hold 0.95M and cost
  // about twice the compute, nearly all of it in the decoder's 16x16 and 32x32 levels.
  std::vector<int64_t> block_out_channels = {32, 32, 32};
  bool mid_block_add_attention = true;  // self-attention between the two mid-block resnets
  double scaling_factor = 1.0;  // latent scale recorded with the weights (informational here)
  int64_t sample_size = 32;     // training image size (informational)

  int64_t downsample_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
  // Throws std::invalid_argument naming every bad field, its value and the allowed range.
  void validate() const;
};

// The posterior N(mean, exp(logvar)) of LDM's DiagonalGaussianDistribution
// (ldm/modules/distributions/distributions.py), from moments [N, 2C, H, W] split on channels.
class DiagonalGaussian {
 public:
  explicit DiagonalGaussian(const at::Tensor& moments);
  DiagonalGaussian(at::Tensor mean, at::Tensor logvar);  // logvar is clamped as well

  const at::Tensor& mean() const { return mean_; }
  const at::Tensor& logvar() const { return logvar_; }  // clamped to [-30, 20]
  const at::Tensor& std() const { return std_; }
  const at::Tensor& var() const { return var_; }
  // mean + std * eps; eps [N, C, H, W] comes from the caller (keyed per-sample noise).
  at::Tensor sample(const at::Tensor& eps) const;
  at::Tensor mode() const { return mean_; }
  // KL(q || N(0, I)) per sample: 0.5 * sum(mean^2 + var - 1 - logvar) over non-batch dims -> [N].
  at::Tensor kl() const;

 private:
  at::Tensor mean_, logvar_, std_, var_;
};

// diffusers' UNetMidBlock2D without time embedding: resnets.0, [attentions.0 (one head over all
// channels), resnets.1].
class MidBlock2DImpl : public torch::nn::Module {
 public:
  MidBlock2DImpl(int64_t channels, int64_t groups, bool add_attention);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock2D);

// diffusers' DownEncoderBlock2D (resnets.{j}, downsamplers.0) and UpDecoderBlock2D
// (resnets.{j}, upsamplers.0): `layers` resnets, then the optional resampler.
class ResampleBlock2DImpl : public torch::nn::Module {
 public:
  enum class Kind { kDown, kUp, kNone };
  ResampleBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups,
                      Kind resample);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(ResampleBlock2D);

// diffusers' Encoder (autoencoders/vae.py, double_z): conv_in, down_blocks, mid_block,
// conv_norm_out, SiLU, conv_out -> 2 * latent_channels.
class VAEEncoderImpl : public torch::nn::Module {
 public:
  explicit VAEEncoderImpl(const VAEOptions& o);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  MidBlock2D mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VAEEncoder);

// diffusers' Decoder: conv_in, mid_block, up_blocks (layers_per_block + 1 resnets each),
// conv_norm_out, SiLU, conv_out.
class VAEDecoderImpl : public torch::nn::Module {
 public:
  explicit VAEDecoderImpl(const VAEOptions& o);
  at::Tensor forward(const at::Tensor& z);

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  MidBlock2D mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VAEDecoder);

// AutoencoderKL: encoder -> quant_conv (1x1) -> posterior; z -> post_quant_conv -> decoder.
class VAEImpl : public torch::nn::Module {
 public:
  explicit VAEImpl(VAEOptions options = {});  // validates options

  // Posterior of x [N, in_channels, H, W]; H and W must be multiples of downsample_factor().
  DiagonalGaussian encode(const at::Tensor& x);
  // Image [N, out_channels, H*f, W*f] from latents z [N, latent_channels, H, W].
  at::Tensor decode(const at::Tensor& z);
  // decode(encode(x).sample(eps)), or of the mode when eps is undefined.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& eps = {});

  const VAEOptions& options() const { return options_; }

  VAEEncoder encoder{nullptr};
  VAEDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};

 private:
  void check_input(const at::Tensor& x, int64_t channels, int64_t multiple, const char* what) const;
  VAEOptions options_;
};
TORCH_MODULE(VAE);

// Renames the attention keys of older checkpoints (diffusers < 0.14 AttentionBlock: query, key,
// value, proj_attn) to the current ones (to_q, to_k, to_v, to_out.0) and squeezes conv-shaped
// weights ([C, C, 1, 1] or [C, C, 1]) to [C, C], as diffusers' _convert_deprecated_attention_blocks
// and its conv_attn_to_linear script do. Other keys pass through unchanged.
TensorMap map_legacy_vae_keys(const TensorMap& tensors);

enum class ReconLoss { kL1, kL2 };
const EnumTable<ReconLoss>& recon_losses();  // "l1" | "l2"
inline const std::string& to_string(ReconLoss r) { return recon_losses().name(r); }

struct VAELoss {
  at::Tensor total;  // recon + kl_weight * kl
  at::Tensor recon;  // mean over all elements of |x - x_rec| or (x - x_rec)^2
  at::Tensor kl;     // posterior.kl() averaged over the batch
};

// LDM's LPIPSWithDiscriminator loss without LPIPS, discriminator or learned logvar. Note the
// normalisation: recon is a mean over elements (LDM sums per sample), so LDM's kl_weight 1e-6
// corresponds to kl_weight = 1e-6 * C*H*W here.
VAELoss vae_loss(const at::Tensor& x, const at::Tensor& x_rec, const DiagonalGaussian& posterior,
                 ReconLoss kind, double kl_weight);

}  // namespace lf::core
