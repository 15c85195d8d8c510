// Text conditioning of the denoisers: the joint text encoder (a small transformer trained with
// the denoiser, as the LDM paper's text-to-image model trained its own), the learned null
// condition for classifier-free guidance, and the attention blocks that read the encoded
// caption: LDM's spatial transformer for the UNet (self-attention, cross-attention with the
// padding masked, feed-forward) and the cross-attention a PixArt block adds to a DiT block.
// Parameter names follow diffusers (Transformer2DModel, BasicTransformerBlock, Attention) and
// CLIP's text model (token_embedding, position_embedding, layers.i.self_attn, final_layer_norm).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

namespace lf::core {

// The text side of a denoiser. context_length 0: no text conditioning.
struct TextOptions {
  int64_t context_length = 0;  // tokens per caption (the tokenizer's, core/util/tokenizer.h)
  int64_t vocab_size = 259;    // ByteTokenizer::kVocabSize
  int64_t width = 256;         // D of the encoded tokens, the context the denoiser attends to
  int64_t depth = 2;           // transformer layers of the encoder
  int64_t heads = 4;           // attention heads of the encoder (divide width)
  int64_t pad_token = 258;     // ByteTokenizer::kPad: masked as a key everywhere
  // > 0: the captions come as embeddings of this size computed elsewhere (a frozen CLIP or T5,
  // cached by encode), [N, context_length, embedding_dim] with a mask; the encoder is then only
  // a projection to `width`, and vocab_size, depth and heads are unused.
  int64_t embedding_dim = 0;

  bool enabled() const { return context_length > 0; }
  bool external() const { return embedding_dim > 0; }
  // Appends "model.<key> = value (must ...)" for every bad field to `errors`.
  void validate(std::vector<std::string>& errors) const;
};

// One batch's text input: tokens int [N, context_length] (pad_token after the caption) for the
// joint encoder, or for external embeddings `embeddings` float [N, context_length,
// embedding_dim] with `mask` [N, context_length] (bool or integer, non-zero: a token; every row
// has one); and `drop` bool [N], true where the null condition replaces the caption
// (classifier-free guidance's unconditional half, caption dropout in training). Neither tokens
// nor embeddings: all null. `length` > 0 computes at least that many token positions (a
// sampling job passes its longest prompt, so a sample's output does not depend on the other
// prompts of its batch).
struct TextInput {
  at::Tensor tokens;
  at::Tensor drop;
  int64_t length = 0;
  at::Tensor embeddings, mask;
  bool defined() const { return tokens.defined() || embeddings.defined(); }
  // Rows `rows` (int64 [M]) of the tokens or embeddings and mask; drop and length are kept.
  TextInput rows(const at::Tensor& rows) const;
  // The number of leading positions that hold a token in any row (0 when none): the context
  // length a batch needs computed. `pad_token` marks padding among tokens.
  int64_t used(int64_t pad_token) const;
};

// The encoded captions a denoiser attends to: [N, L, D] and the key mask bool [N, L] (true: a
// token to attend to; every row has at least one). L is the batch's longest caption in tokens
// (the padding after it is never computed), 1 for the null condition alone.
struct TextContext {
  at::Tensor embeddings;
  at::Tensor mask;
};

// The number of leading token positions that hold a non-padding token in any row of tokens
// [N, L] (0 when every row is padding): the context length a batch needs computed.
int64_t used_length(const at::Tensor& tokens, int64_t pad_token);

// softmax(q k^T / sqrt(d) with masked keys at -inf) v for q [N, H, Lq, d], k and v [N, H, Lk, d]
// and key_mask bool [N, Lk] (undefined: every key). LibTorch 2.x runs the fused
// at::scaled_dot_product_attention; 1.x the two batched GEMMs.
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& key_mask);

// diffusers' Attention without norms: to_out.0(attn(to_q(x), to_k(c), to_v(c))) with c the
// context (x itself for self-attention). q, k, v without bias. Names: to_q, to_k, to_v, to_out.0.
class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim);
  // x [N, Lq, query_dim]; context [N, Lk, context_dim] or undefined (self-attention, x's own
  // positions, all attended); key_mask bool [N, Lk] or undefined.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {}, const at::Tensor& key_mask = {});
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(CrossAttention);

// diffusers' BasicTransformerBlock (LDM's): h += attn1(norm1(h)); h += attn2(norm2(h), context,
// mask); h += ff(norm3(h)) with the GEGLU feed-forward (ff.net.0.proj: dim -> 2 * 4 dim;
// a * gelu(gate); ff.net.2: 4 dim -> dim).
class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(int64_t dim, int64_t heads, int64_t context_dim);
  at::Tensor forward(const at::Tensor& x, const TextContext& context);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  CrossAttention attn1{nullptr}, attn2{nullptr};
  torch::nn::Linear ff_in{nullptr}, ff_out{nullptr};
};
TORCH_MODULE(TransformerBlock);

// LDM's SpatialTransformer (diffusers Transformer2DModel, use_linear_projection): x +
// proj_out(block(proj_in(group_norm(x)) as [N, H*W, C], context)), proj_out zero-initialised so
// it starts as the identity. Names: norm, proj_in, transformer_blocks.0, proj_out.
class SpatialTransformerImpl : public torch::nn::Module {
 public:
  SpatialTransformerImpl(int64_t channels, int64_t heads, int64_t groups, int64_t context_dim);
  at::Tensor forward(const at::Tensor& x, const TextContext& context);
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear proj_in{nullptr}, proj_out{nullptr};
  TransformerBlock block{nullptr};
};
TORCH_MODULE(SpatialTransformer);

// The joint text encoder: token and learned position embeddings, `depth` pre-LayerNorm
// transformer layers (self-attention with the padding masked as keys, GELU MLP of 4 width),
// a final LayerNorm. The null condition is learned: `null_embedding` [1, width] as the only
// attended token (the rest masked). Names: token_embedding, position_embedding,
// layers.i.{layer_norm1, self_attn, layer_norm2, mlp.fc1, mlp.fc2}, final_layer_norm,
// null_embedding.
// With external embeddings (options.external()) it is PixArt's caption projection instead:
// caption_projection.linear_1 (embedding_dim -> width), tanh-GELU, caption_projection.linear_2
// (width -> width), applied per token. The null condition is fixed, not learned: one all-zero
// embedding as the only attended token (so the projection of zeros, its biases), the choice
// of PixArt and of the "zeros" option of diffusers' pipelines for cached embeddings.
class TextEncoderImpl : public torch::nn::Module {
 public:
  explicit TextEncoderImpl(TextOptions options);
  // The context for a batch of n whose activations have `like`'s dtype and device. Throws
  // std::invalid_argument for tokens of the wrong shape or outside the vocabulary.
  TextContext forward(const TextInput& text, int64_t n, const at::Tensor& like);
  const TextOptions& options() const { return options_; }

  torch::nn::Embedding token_embedding{nullptr};
  at::Tensor position_embedding, null_embedding;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};  // external embeddings' projection

 private:
  TextContext forward_external(const TextInput& text, int64_t n, const at::Tensor& like);
  TextOptions options_;
};
TORCH_MODULE(TextEncoder);

}  // namespace lf::core
