// Building blocks shared by the autoencoder and the denoiser: diffusers' ResnetBlock2D,
// Downsample2D, Upsample2D and spatial self-attention (parameter names as diffusers registers
// them), and the sinusoidal timestep embedding.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <memory>
#include <string>

namespace lf::core {

// Sinusoidal embedding of (possibly fractional) timesteps t [N] -> [N, dim]: first half cos,
// second half sin of t * max_period^(-i/half); a zero column when dim is odd. Matches
// guided-diffusion's nn.timestep_embedding (Nichol & Dhariwal 2021).
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, double max_period = 10000.0);

// diffusers' ResnetBlock2D without time embedding (resnet.py, time_embedding_norm "default",
// output_scale_factor 1): x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the skip through a
// 1x1 conv_shortcut when the channel count changes. Names: norm1, conv1, norm2, conv2,
// conv_shortcut.
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t groups, double eps);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

// diffusers' Downsample2D as the VAE uses it (padding=0): pad right and bottom by one, then a
// 3x3 stride-2 conv, so H, W -> ceil(H/2), ceil(W/2) for even sizes exactly H/2. Name: conv.
class Downsample2DImpl : public torch::nn::Module {
 public:
  explicit Downsample2DImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

// diffusers' Upsample2D (and ADM's Upsample): nearest x2, then a 3x3 conv. Name: conv.
class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(int64_t in_channels, int64_t out_channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// Residual self-attention over the H*W positions of [N, C, H, W], as diffusers' Attention with
// group_norm, residual_connection and rescale_output_factor 1 (attention_processor.py,
// AttnProcessor2_0): x + to_out(attn(to_q(n), to_k(n), to_v(n))) with n = group_norm(x) and
// attn = softmax(q k^T / sqrt(d)) v per head (Vaswani et al. 2017, eq. 1); LibTorch 2.x runs it
// as at::scaled_dot_product_attention.
// Names: group_norm, to_q, to_k, to_v, to_out.0. heads must divide channels.
// zero_init_out zeroes to_out.0 as ADM does for proj_out (the block starts as the identity).
class SpatialSelfAttentionImpl : public torch::nn::Module {
 public:
  SpatialSelfAttentionImpl(int64_t channels, int64_t heads, int64_t groups, double eps,
                           bool zero_init_out = false);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(SpatialSelfAttention);

// Zeroes every parameter of `module` (ADM's zero_module).
void zero_parameters(torch::nn::Module& module);

// Registers and returns an empty child that only names its own children (a reference
// implementation's x_embedder, mlp, ff, ...), so parameter names match it.
std::shared_ptr<torch::nn::Module> named_group(torch::nn::Module& parent, const std::string& name);

}  // namespace lf::core
