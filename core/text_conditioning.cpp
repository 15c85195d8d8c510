// Text encoder and attention blocks for text conditioning (see text_conditioning.h).
#include "core/text_conditioning.h"

#include <torch/nn/modules/container/sequential.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "core/nn_blocks.h"
#include "core/util/strings.h"

namespace lf::core {

namespace {

at::Tensor linear(const at::Tensor& x, const torch::nn::Linear& l) {
  return l->bias.defined() ? at::linear(x, l->weight, l->bias) : at::linear(x, l->weight);
}

// [N, L, H*d] -> [N, H, L, d]
at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

// One layer of the text encoder (CLIP's CLIPEncoderLayer without the causal mask).
class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(int64_t width, int64_t heads) {
    using namespace torch::nn;
    layer_norm1 = register_module("layer_norm1", LayerNorm(LayerNormOptions({width})));
    self_attn = register_module("self_attn", CrossAttention(width, width, heads, width / heads));
    layer_norm2 = register_module("layer_norm2", LayerNorm(LayerNormOptions({width})));
    auto mlp = named_group(*this, "mlp");
    fc1 = mlp->register_module("fc1", Linear(width, 4 * width));
    fc2 = mlp->register_module("fc2", Linear(4 * width, width));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) {
    at::Tensor h = x + self_attn->forward(layer_norm1(x), at::Tensor(), mask);
    return h + fc2(at::gelu(fc1(layer_norm2(h))));
  }
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  CrossAttention self_attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(EncoderLayer);

}  // namespace

void TextOptions::validate(std::vector<std::string>& errors) const {
  if (!enabled()) return;
  if (context_length < 3 || context_length > 4096)
    errors.push_back(lf::str("model.context_length = ", context_length, " (must be 3..4096, or 0 for no text)"));
  if (vocab_size < 1 || pad_token < 0 || pad_token >= vocab_size)
    errors.push_back(lf::str("text vocabulary of ", vocab_size, " tokens with padding token ", pad_token));
  if (embedding_dim < 0 || embedding_dim > 65536)
    errors.push_back(lf::str("text embedding size ", embedding_dim, " (must be 1..65536, or 0 for the joint encoder)"));
  if (external()) {
    if (width < 1) errors.push_back(lf::str("model.text_width = ", width, " (must be >= 1)"));
    return;
  }
  if (depth < 1) errors.push_back(lf::str("model.text_depth = ", depth, " (must be >= 1)"));
  if (heads < 1 || width < 1 || width % heads != 0)
    errors.push_back(lf::str("model.text_width = ", width, " is not a positive multiple of model.text_heads = ", heads));
}

namespace {
// The last column + 1 of a [N, L] boolean that is true in any row (0 when none).
int64_t used_columns(const at::Tensor& present) {
  if (present.numel() == 0) return 0;
  const at::Tensor cols = present.any(0).nonzero();
  return cols.numel() == 0 ? 0 : cols.max().item<int64_t>() + 1;
}
}  // namespace

int64_t used_length(const at::Tensor& tokens, int64_t pad_token) { return used_columns(tokens.ne(pad_token)); }

TextInput TextInput::rows(const at::Tensor& r) const {
  TextInput out = *this;
  if (tokens.defined()) out.tokens = tokens.index_select(0, r.to(tokens.device()));
  if (embeddings.defined()) out.embeddings = embeddings.index_select(0, r.to(embeddings.device()));
  if (mask.defined()) out.mask = mask.index_select(0, r.to(mask.device()));
  return out;
}

int64_t TextInput::used(int64_t pad_token) const {
  if (tokens.defined()) return used_length(tokens, pad_token);
  return mask.defined() ? used_columns(mask.ne(0)) : 0;
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& key_mask) {
  const int64_t n = q.size(0), lk = k.size(2);
#if TORCH_VERSION_MAJOR >= 2
  if (!key_mask.defined()) return at::scaled_dot_product_attention(q, k, v);
  return at::scaled_dot_product_attention(q, k, v, key_mask.view({n, 1, 1, lk}));
#else
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (key_mask.defined())
    scores = scores.masked_fill(key_mask.logical_not().view({n, 1, 1, lk}), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

// ---- CrossAttention ------------------------------------------------------------------------

CrossAttentionImpl::CrossAttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim)
    : heads_(heads), head_dim_(head_dim) {
  using namespace torch::nn;
  const int64_t inner = heads * head_dim;
  to_q = register_module("to_q", Linear(LinearOptions(query_dim, inner).bias(false)));
  to_k = register_module("to_k", Linear(LinearOptions(context_dim, inner).bias(false)));
  to_v = register_module("to_v", Linear(LinearOptions(context_dim, inner).bias(false)));
  auto to_out = register_module("to_out", ModuleList());
  out = Linear(inner, query_dim);
  to_out->push_back(out);
}

at::Tensor CrossAttentionImpl::forward(const at::Tensor& x, const at::Tensor& context, const at::Tensor& key_mask) {
  const at::Tensor& c = context.defined() ? context : x;
  at::Tensor o = masked_attention(split_heads(linear(x, to_q), heads_), split_heads(linear(c, to_k), heads_),
                                  split_heads(linear(c, to_v), heads_), key_mask);
  return linear(o.transpose(1, 2).reshape({x.size(0), x.size(1), heads_ * head_dim_}), out);
}

// ---- TransformerBlock ----------------------------------------------------------------------

TransformerBlockImpl::TransformerBlockImpl(int64_t dim, int64_t heads, int64_t context_dim) {
  using namespace torch::nn;
  norm1 = register_module("norm1", LayerNorm(LayerNormOptions({dim})));
  attn1 = register_module("attn1", CrossAttention(dim, dim, heads, dim / heads));
  norm2 = register_module("norm2", LayerNorm(LayerNormOptions({dim})));
  attn2 = register_module("attn2", CrossAttention(dim, context_dim, heads, dim / heads));
  norm3 = register_module("norm3", LayerNorm(LayerNormOptions({dim})));
  // diffusers FeedForward: net.0 = GEGLU (its Linear is "proj"), net.1 = Dropout, net.2 = Linear.
  auto net = named_group(*this, "ff")->register_module("net", ModuleList());
  auto geglu = std::make_shared<torch::nn::Module>();
  ff_in = geglu->register_module("proj", Linear(dim, 2 * 4 * dim));
  ff_out = Linear(4 * dim, dim);
  net->push_back(geglu);
  net->push_back(torch::nn::Identity());
  net->push_back(ff_out);
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const TextContext& context) {
  at::Tensor h = x + attn1->forward(norm1(x));
  h = h + attn2->forward(norm2(h), context.embeddings.to(h.scalar_type()), context.mask);
  auto ag = ff_in(norm3(h)).chunk(2, -1);  // GEGLU: value, gate
  return h + ff_out(ag[0] * at::gelu(ag[1]));
}

// ---- SpatialTransformer --------------------------------------------------------------------

SpatialTransformerImpl::SpatialTransformerImpl(int64_t channels, int64_t heads, int64_t groups, int64_t context_dim) {
  using namespace torch::nn;
  norm = register_module("norm", GroupNorm(GroupNormOptions(groups, channels).eps(1e-6)));
  proj_in = register_module("proj_in", Linear(channels, channels));
  auto blocks = register_module("transformer_blocks", ModuleList());
  block = TransformerBlock(channels, heads, context_dim);
  blocks->push_back(block);
  proj_out = register_module("proj_out", Linear(channels, channels));
  zero_parameters(*proj_out);
}

at::Tensor SpatialTransformerImpl::forward(const at::Tensor& x, const TextContext& context) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor seq = norm(x).flatten(2).transpose(1, 2);  // [N, H*W, C]
  seq = proj_out(block(proj_in(seq), context));
  return x + seq.transpose(1, 2).reshape({n, c, h, w});
}

// ---- TextEncoder ---------------------------------------------------------------------------

TextEncoderImpl::TextEncoderImpl(TextOptions options) : options_(options) {
  std::vector<std::string> errors;
  options_.validate(errors);
  if (!options_.enabled()) errors.push_back("model.context_length = 0: no text encoder to build");
  if (!errors.empty()) throw std::invalid_argument("invalid text encoder options: " + lf::join(errors, "; "));
  using namespace torch::nn;
  const int64_t d = options_.width;
  if (options_.external()) {
    auto proj = named_group(*this, "caption_projection");
    linear_1 = proj->register_module("linear_1", Linear(options_.embedding_dim, d));
    linear_2 = proj->register_module("linear_2", Linear(d, d));
    return;
  }
  token_embedding = register_module("token_embedding", Embedding(options_.vocab_size, d));
  position_embedding = register_parameter("position_embedding", at::empty({options_.context_length, d}));
  null_embedding = register_parameter("null_embedding", at::empty({1, d}));
  {
    torch::NoGradGuard no_grad;  // CLIP's initialisation scales
    token_embedding->weight.normal_(0.0, 0.02);
    position_embedding.normal_(0.0, 0.01);
    null_embedding.normal_(0.0, 0.02);
  }
  layers = register_module("layers", ModuleList());
  for (int64_t i = 0; i < options_.depth; ++i) layers->push_back(EncoderLayer(d, options_.heads));
  final_layer_norm = register_module("final_layer_norm", LayerNorm(LayerNormOptions({d})));
}

TextContext TextEncoderImpl::forward(const TextInput& text, int64_t n, const at::Tensor& like) {
  if (options_.external()) return forward_external(text, n, like);
  const int64_t len = options_.context_length, d = options_.width;
  const auto dtype = like.scalar_type();
  const at::Device device = like.device();
  if (text.embeddings.defined())
    throw std::invalid_argument("text encoder: caption embeddings given to the joint encoder (it reads tokens)");
  // The null condition: the learned embedding as the only attended token.
  TextContext null;
  null.embeddings = at::cat({null_embedding.to(dtype).view({1, 1, d}).expand({n, 1, d}),
                             at::zeros({n, len - 1, d}, like.options())},
                            1);
  null.mask = at::zeros({n, len}, at::TensorOptions().dtype(at::kBool).device(device));
  null.mask.select(1, 0).fill_(true);
  if (!text.tokens.defined()) return {null.embeddings.narrow(1, 0, 1), null.mask.narrow(1, 0, 1)};
  const at::Tensor& tok = text.tokens;
  if (tok.dim() != 2 || tok.size(0) != n || tok.size(1) != len || at::isFloatingType(tok.scalar_type()))
    throw std::invalid_argument(lf::str("text encoder: tokens have shape ", tok.sizes(), " and dtype ",
                                        tok.scalar_type(), ", expected integers [", n, ", ", len,
                                        "] (model.context_length = ", len, ")"));
  // Checked where the tokens are (the host, from the loader or the prompts): no device sync.
  if (n > 0 && (tok.min().item<int64_t>() < 0 || tok.max().item<int64_t>() >= options_.vocab_size))
    throw std::invalid_argument(lf::str("text encoder: token ids outside [0, ", options_.vocab_size, ")"));
  // Only the columns up to the batch's longest caption are computed: the padding after it is
  // masked as a key everywhere, so dropping it changes no output (only the order of sums over
  // attended keys may differ in the last bits), and most of a context is padding.
  at::Tensor keep = tok.ne(options_.pad_token);
  const int64_t used = std::max(std::clamp<int64_t>(text.length, 1, len), used_length(tok, options_.pad_token));
  at::Tensor ids = tok.narrow(1, 0, used).to(device, at::kLong);
  TextContext out;
  out.mask = keep.narrow(1, 0, used).to(device);
  at::Tensor h = token_embedding(ids).to(dtype) + position_embedding.narrow(0, 0, used).to(dtype).unsqueeze(0);
  for (const auto& layer : *layers) h = layer->as<EncoderLayer>()->forward(h, out.mask);
  out.embeddings = final_layer_norm(h);
  if (text.drop.defined()) {
    if (text.drop.dim() != 1 || text.drop.size(0) != n)
      throw std::invalid_argument(lf::str("text encoder: drop has shape ", text.drop.sizes(), ", expected [", n, "]"));
    at::Tensor drop = text.drop.to(device, at::kBool);
    out.embeddings = at::where(drop.view({n, 1, 1}),
                               null.embeddings.narrow(1, 0, used).to(out.embeddings.scalar_type()), out.embeddings);
    out.mask = at::where(drop.view({n, 1}), null.mask.narrow(1, 0, used), out.mask);
  }
  return out;
}

TextContext TextEncoderImpl::forward_external(const TextInput& text, int64_t n, const at::Tensor& like) {
  const int64_t len = options_.context_length, dim = options_.embedding_dim;
  const auto dtype = like.scalar_type();
  const at::Device device = like.device();
  auto project = [&](const at::Tensor& e) { return linear_2(at::gelu(linear_1(e), "tanh")); };
  const at::Tensor null_mask = at::ones({n, 1}, at::TensorOptions().dtype(at::kBool).device(device));
  if (text.tokens.defined())
    throw std::invalid_argument("text encoder: tokens given to a model of external caption embeddings");
  if (!text.embeddings.defined())
    return {project(at::zeros({n, 1, dim}, like.options())), null_mask};
  const at::Tensor& e = text.embeddings;
  if (e.dim() != 3 || e.size(0) != n || e.size(1) != len || e.size(2) != dim || !at::isFloatingType(e.scalar_type()))
    throw std::invalid_argument(lf::str("text encoder: caption embeddings have shape ", e.sizes(), " and dtype ",
                                        e.scalar_type(), ", expected floats [", n, ", ", len, ", ", dim, "]"));
  if (!text.mask.defined() || text.mask.dim() != 2 || text.mask.size(0) != n || text.mask.size(1) != len)
    throw std::invalid_argument(lf::str("text encoder: caption embeddings need a mask [", n, ", ", len, "]"));
  at::Tensor present = text.mask.ne(0);
  // Every kept row must attend to something (a dropped row attends to the null token).
  at::Tensor empty = present.any(1).logical_not();
  if (text.drop.defined()) empty = empty.logical_and(text.drop.to(empty.device(), at::kBool).logical_not());
  if (n > 0 && empty.any().item<bool>())
    throw std::invalid_argument("text encoder: a caption's embedding mask has no token set");
  const int64_t used = std::max(std::clamp<int64_t>(text.length, 1, len), text.used(0));
  TextContext out;
  out.mask = present.narrow(1, 0, used).to(device);
  out.embeddings = project(e.narrow(1, 0, used).to(device, dtype));
  if (text.drop.defined()) {
    if (text.drop.dim() != 1 || text.drop.size(0) != n)
      throw std::invalid_argument(lf::str("text encoder: drop has shape ", text.drop.sizes(), ", expected [", n, "]"));
    at::Tensor drop = text.drop.to(device, at::kBool);
    // The null: the projection of one zero embedding in the first position, the rest masked.
    at::Tensor first = at::zeros({n, used}, null_mask.options());
    first.select(1, 0).fill_(true);
    at::Tensor null = project(at::zeros({1, 1, dim}, like.options())).expand({n, used, options_.width});
    out.embeddings = at::where(drop.view({n, 1, 1}), null.to(out.embeddings.scalar_type()), out.embeddings);
    out.mask = at::where(drop.view({n, 1}), first, out.mask);
  }
  return out;
}

}  // namespace lf::core
