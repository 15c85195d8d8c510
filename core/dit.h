// The Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
// Transformers"; facebookresearch/DiT models.py) on latents: patchify, fixed 2-D sin-cos
// position embeddings, transformer blocks conditioned by adaLN-Zero on timestep + class, a
// zero-initialised adaptive final layer, unpatchify. Parameter names follow the reference
// (x_embedder.proj, t_embedder.mlp.0, blocks.3.attn.qkv, final_layer.adaLN_modulation.1, ...).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/denoiser.h"

namespace lf::core {

struct DiTOptions {
  int64_t in_channels = 4;   // latent channels in
  int64_t out_channels = 4;  // prediction channels (no learned sigma: the reference's
                             // learn_sigma = False; our objectives fix the variance)
  int64_t patch_size = 2;    // p: tokens are p x p patches (DiT-S/2 ... -XL/2 use 2)
  int64_t depth = 12;        // transformer blocks
  int64_t width = 384;       // hidden size D
  int64_t heads = 6;         // attention heads (divide width)
  double mlp_ratio = 4.0;    // MLP hidden size = int(width * mlp_ratio)
  // 0: unconditional; else labels 0..num_classes-1 and num_classes = the null (dropped) class.
  int64_t num_classes = 0;
  // Text conditioning (text.enabled()): a joint text encoder, and every block cross-attends to
  // the encoded caption after its self-attention (PixArt-alpha's blocks). Excludes num_classes.
  TextOptions text;

  int64_t mlp_hidden() const { return static_cast<int64_t>(static_cast<double>(width) * mlp_ratio); }
  // Scalar parameters of the network built from these options (as count_parameters counts).
  int64_t num_parameters() const;
  // Throws std::invalid_argument naming every bad field by its config key (model.width, ...),
  // its value and the allowed range.
  void validate() const;
};

// The sizes of the paper's models (Peebles & Xie 2023, Table 1): depth, width, heads.
struct DiTSize {
  int64_t depth, width, heads;
};
// "dit-s" (12, 384, 6), "dit-b" (12, 768, 12), "dit-l" (24, 1024, 16), "dit-xl" (28, 1152, 16).
// Throws std::invalid_argument naming the value (as model.preset) and the allowed ones.
DiTSize dit_preset(const std::string& name);
const std::vector<std::string>& dit_preset_names();

// Fixed 2-D sin-cos position embedding [rows * cols, dim] (float64) of a rows x cols token grid
// in row-major order, as DiT's get_2d_sincos_pos_embed (from MAE): token (i, j) gets
// [sin(j w), cos(j w), sin(i w), cos(i w)] with w_k = 10000^(-k / (dim / 4)), k < dim / 4.
// Requires dim % 4 == 0.
at::Tensor sincos_pos_embed_2d(int64_t dim, int64_t rows, int64_t cols);

// [N, C, H, W] -> [N, (H/p)(W/p), p*p*C]: token (i, j) in row-major order holds the patch's
// values in (p_row, p_col, channel) order, the layout DiT's final layer predicts.
at::Tensor patchify(const at::Tensor& x, int64_t p);
// The inverse: [N, rows*cols, p*p*C] -> [N, C, rows*p, cols*p] (DiT.unpatchify's einsum
// 'nhwpqc->nchpwq', for any rows x cols grid).
at::Tensor unpatchify(const at::Tensor& tokens, int64_t p, int64_t rows, int64_t cols, int64_t channels);

// Multi-head self-attention of timm's Attention (qkv_bias = True) on [N, L, D]: one fused qkv
// Linear (q, k, v in that order, head h at features [h d, (h + 1) d)), softmax(q k^T / sqrt(d)) v
// per head (Vaswani et al. 2017, eq. 1), proj. LibTorch 2.x runs the fused
// at::scaled_dot_product_attention; 1.x computes the [N*heads, L, L] scores once, in one batched
// GEMM, and nothing larger. Names: qkv, proj.
class DiTAttentionImpl : public torch::nn::Module {
 public:
  DiTAttentionImpl(int64_t width, int64_t heads);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(DiTAttention);

// DiTBlock: x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa)), then the same with
// the MLP (fc1, GELU tanh, fc2), with (shift, scale, gate) x 2 = adaLN_modulation(c) and
// modulate(h, shift, scale) = h (1 + scale) + shift; norms are LayerNorms without affine
// parameters (eps 1e-6). adaLN_modulation is zero-initialised, so every block starts as the
// identity (adaLN-Zero, Peebles & Xie 2023, sec. 3.2). Names: attn, mlp.fc1, mlp.fc2,
// adaLN_modulation.1 (index 0 is the SiLU). With context_dim > 0 (a text model), PixArt-alpha's
// x = x + cross_attn(x, caption, mask) follows the self-attention (Chen et al. 2023, fig. 4),
// its output projection zero-initialised.
class DiTBlockImpl : public torch::nn::Module {
 public:
  DiTBlockImpl(int64_t width, int64_t heads, int64_t mlp_hidden, int64_t context_dim = 0);
  // x [N, L, D]; c_act = silu(t_emb + y_emb) [N, D] (the SiLU that opens every
  // adaLN_modulation, computed once per forward); context: the caption (text models only).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c_act, const TextContext* context = nullptr);

  DiTAttention attn{nullptr};
  CrossAttention cross_attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, ada_ln{nullptr};
};
TORCH_MODULE(DiTBlock);

class DiTImpl : public DenoiserModule {
 public:
  explicit DiTImpl(DiTOptions options = {});  // validates options; DiT's initialize_weights

  // x [N, in_channels, H, W] with H, W positive multiples of patch_size (the position
  // embedding is computed for the grid it gets, so any such size works); t, y as
  // DenoiserModule. Returns [N, out_channels, H, W].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y = {},
                     const TextInput& text = {}) override;

  DenoiserKind kind() const override { return DenoiserKind::kDiT; }
  int64_t context_length() const override { return options_.text.context_length; }
  int64_t text_embedding_dim() const override { return options_.text.embedding_dim; }
  int64_t in_channels() const override { return options_.in_channels; }
  int64_t out_channels() const override { return options_.out_channels; }
  int64_t num_classes() const override { return options_.num_classes; }
  int64_t size_multiple() const override { return options_.patch_size; }
  // DiT has no dropout (the reference's class dropout is label dropout, done by the caller).
  double dropout() const override { return 0.0; }
  int64_t num_dropout_layers() const override { return 0; }
  void set_dropout_masks(DropoutMasks) override {}

  const DiTOptions& options() const { return options_; }

  // The pieces of forward, for tests: the tokens x_embedder(x) + pos_embed [N, L, width] of
  // x [N, C, H, W] (unchecked), and the conditioning c_act = silu(t_embedder(t) + y_embedder(y))
  // [N, width] the blocks get.
  at::Tensor embed(const at::Tensor& x);
  at::Tensor conditioning(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y);

  torch::nn::Conv2d patch_embed{nullptr};            // x_embedder.proj
  torch::nn::Linear t_mlp_1{nullptr}, t_mlp_2{nullptr};  // t_embedder.mlp.0, .2
  torch::nn::Embedding label_embed{nullptr};          // y_embedder.embedding_table
  TextEncoder text_encoder{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear final_linear{nullptr}, final_ada_ln{nullptr};  // final_layer.*

  static constexpr int64_t kFrequencyDim = 256;  // TimestepEmbedder.frequency_embedding_size

 private:
  void check_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const;
  // The position embedding of a rows x cols grid in `like`'s dtype and device, cached.
  const at::Tensor& pos_embed(int64_t rows, int64_t cols, const at::Tensor& like);

  DiTOptions options_;
  at::Tensor pos_cache_;
  int64_t pos_rows_ = -1, pos_cols_ = -1;
};
TORCH_MODULE(DiT);

}  // namespace lf::core
