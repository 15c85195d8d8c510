// The denoising UNet of ADM (Dhariwal & Nichol 2021; guided-diffusion unet.py UNetModel) as
// LDM uses it on latents: timestep MLP, optional class embedding with a null class for
// classifier-free guidance, scale-shift ResBlocks, multi-head self-attention, skip connections.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/denoiser.h"
#include "core/nn_blocks.h"

namespace lf::core {

struct UNetOptions {
  int64_t in_channels = 4;   // latent channels in
  int64_t out_channels = 4;  // prediction channels (eps, x0 or v)
  int64_t model_channels = 64;               // channels at the input resolution
  std::vector<int64_t> channel_mult = {1, 2, 2};  // per level; levels-1 downsamplings
  int64_t num_res_blocks = 2;                // ResBlocks per level on the way down
  // Downsampling factors (1 = input resolution, 2 = one level down...) whose ResBlocks get
  // self-attention; each must be 2^k for a level k.
  std::vector<int64_t> attention_ds = {2, 4};
  int64_t head_channels = 32;  // channels per attention head (heads = channels / head_channels)
  // 0: unconditional; else labels 0..num_classes-1 and num_classes = the null (dropped) class.
  int64_t num_classes = 0;
  double dropout = 0.0;  // ResBlock dropout; masks come from the DropoutMasks callback
  int64_t norm_groups = 32;  // GroupNorm groups; divides every channel count
  // Text conditioning (text.enabled()): a joint text encoder, and every attention block becomes
  // a SpatialTransformer that cross-attends to the encoded caption. Excludes num_classes.
  TextOptions text;

  int64_t levels() const { return static_cast<int64_t>(channel_mult.size()); }
  int64_t size_multiple() const { return int64_t{1} << (channel_mult.size() - 1); }
  // Throws std::invalid_argument naming every bad field, its value and the allowed range.
  void validate() const;
};

// UNet dropout masks (core/denoiser.h DropoutMasks) are asked for once per ResBlock, layer ids
// in construction order (input blocks, middle, output blocks), shape [N, C, H, W].

// ADM's ResBlock with use_scale_shift_norm: h = conv(silu(norm(x))); then
// out_norm(h) * (1 + scale) + shift with (scale, shift) = emb_proj(silu(emb)); silu, dropout,
// zero-initialised out_conv; plus a skip (1x1 conv when channels change).
class UNetResBlockImpl : public torch::nn::Module {
 public:
  UNetResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t emb_channels,
                   int64_t groups, double dropout, int64_t layer_id,
                   std::shared_ptr<DropoutMasks> masks);
  // emb_act = silu(emb) [N, emb_channels], shared by every block of one forward.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb_act);

  torch::nn::GroupNorm in_norm{nullptr}, out_norm{nullptr};
  torch::nn::Conv2d in_conv{nullptr}, out_conv{nullptr}, skip{nullptr};
  torch::nn::Linear emb_proj{nullptr};

 private:
  double dropout_;
  int64_t layer_id_;
  std::shared_ptr<DropoutMasks> masks_;
};
TORCH_MODULE(UNetResBlock);

// One entry of ADM's input_blocks / output_blocks: a ResBlock with optional attention, or a
// resampler alone (down: 3x3 stride-2 conv; up: nearest x2 + 3x3 conv).
class UNetStageImpl : public torch::nn::Module {
 public:
  UNetStageImpl() = default;
  // `context`: the encoded caption for a text model (nullptr otherwise).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb_act, const TextContext* context = nullptr);

  UNetResBlock res{nullptr};
  SpatialSelfAttention attn{nullptr};
  SpatialTransformer xattn{nullptr};  // instead of attn in a text model
  torch::nn::Conv2d down{nullptr};
  Upsample2D up{nullptr};
};
TORCH_MODULE(UNetStage);

class UNetImpl : public DenoiserModule {
 public:
  explicit UNetImpl(UNetOptions options = {});  // validates options

  // x [N, in_channels, H, W] with H, W multiples of size_multiple(); t [N] timesteps (float or
  // integer; a 0-dim t applies to all); y [N] int64 labels in [0, num_classes] (num_classes =
  // null class) or undefined (all null) when num_classes > 0, and must be undefined when 0.
  // Returns [N, out_channels, H, W]. Throws std::invalid_argument for bad shapes or labels.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y = {},
                     const TextInput& text = {}) override;

  DenoiserKind kind() const override { return DenoiserKind::kUNet; }
  int64_t in_channels() const override { return options_.in_channels; }
  int64_t out_channels() const override { return options_.out_channels; }
  int64_t num_classes() const override { return options_.num_classes; }
  int64_t context_length() const override { return options_.text.context_length; }
  int64_t text_embedding_dim() const override { return options_.text.embedding_dim; }
  int64_t size_multiple() const override { return options_.size_multiple(); }
  double dropout() const override { return options_.dropout; }
  // Sets (or clears, with nullptr) the dropout mask source; required in training when
  // options().dropout > 0.
  void set_dropout_masks(DropoutMasks masks) override;
  int64_t num_dropout_layers() const override { return num_res_blocks_; }

  const UNetOptions& options() const { return options_; }

  torch::nn::Linear time_embed_1{nullptr}, time_embed_2{nullptr};
  torch::nn::Embedding label_emb{nullptr};
  TextEncoder text_encoder{nullptr};
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList input_blocks{nullptr}, middle_block{nullptr}, output_blocks{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};

 private:
  void check_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const;

  UNetOptions options_;
  std::shared_ptr<DropoutMasks> masks_ = std::make_shared<DropoutMasks>();
  int64_t num_res_blocks_ = 0;
};
TORCH_MODULE(UNet);

}  // namespace lf::core
