// The Diffusion Transformer (see dit.h). Structure and initialisation follow
// facebookresearch/DiT models.py (DiT, DiTBlock, FinalLayer, TimestepEmbedder, LabelEmbedder,
// initialize_weights); attention is timm's Attention.
#include "core/dit.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/version.h>

#include <cmath>
#include <stdexcept>

#include "core/nn_blocks.h"
#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr double kNormEps = 1e-6;  // DiT's LayerNorm(elementwise_affine=False, eps=1e-6)

// at::linear, not the C++ frontend's Linear::forward: ATen's runs a contiguous [N, L, D] input
// as one addmm on its [N L, D] view (bias fused), where the frontend's takes matmul + add.
at::Tensor linear(const at::Tensor& x, const torch::nn::Linear& l) { return at::linear(x, l->weight, l->bias); }

at::Tensor layer_norm(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}, {}, {}, kNormEps); }

// modulate(h, shift, scale) = h (1 + scale) + shift with shift, scale [N, 1, D].
at::Tensor modulate(const at::Tensor& h, const at::Tensor& shift, const at::Tensor& scale) {
  return at::addcmul(shift, h, scale + 1.0);
}

// GELU with the tanh approximation (Hendrycks & Gimpel 2016), as DiT's Mlp uses it (timm
// GELU(approximate="tanh")): 0.5 x (1 + tanh(z)) with z = sqrt(2/pi) (x + 0.044715 x^3), computed
// as the identical x sigmoid(2 z) in four in-place passes, because ATen 1.13's CPU tanh (inside
// at::gelu) is not vectorised: 2.5x faster on [2048, 1024]. The backward is ATen's exact one.
struct GeluTanh : public torch::autograd::Function<GeluTanh> {
  static constexpr double kA = 1.5957691216057308;  // 2 sqrt(2 / pi)
  static constexpr double kB = kA * 0.044715;
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    at::Tensor y = x * x;
    y.mul_(kB).add_(kA).mul_(x).sigmoid_();  // sigmoid(x (2 sqrt(2/pi)) (1 + 0.044715 x^2))
    return y.mul_(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    return {at::gelu_backward(grad[0], ctx->get_saved_variables()[0], "tanh")};
  }
};

// Xavier-uniform weight and zero bias: DiT's _basic_init for every nn.Linear.
void basic_init(torch::nn::Linear& l) {
  torch::nn::init::xavier_uniform_(l->weight);
  torch::nn::init::zeros_(l->bias);
}

}  // namespace

// ---- options -----------------------------------------------------------------------------

int64_t DiTOptions::num_parameters() const {
  const int64_t d = width, hid = mlp_hidden(), p2 = patch_size * patch_size;
  const int64_t block = (3 * d * d + 3 * d) + (d * d + d) + (hid * d + hid) + (d * hid + d) + (6 * d * d + 6 * d);
  // A text model: each block's cross-attention (q, out on D; k, v from the text width) and the encoder.
  const int64_t tw = text.width;
  const int64_t cross = text.enabled() ? 2 * d * d + 2 * tw * d + d : 0;
  const int64_t encoder = !text.enabled()   ? 0
                          : text.external() ? text.embedding_dim * tw + tw + tw * tw + tw  // the projection
                                            : text.vocab_size * tw + text.context_length * tw + tw +
                                                  text.depth * (4 * tw + 4 * tw * tw + tw + 8 * tw * tw + 5 * tw) + 2 * tw;
  return (d * in_channels * p2 + d) + (DiTImpl::kFrequencyDim * d + d) + (d * d + d) +
         (num_classes > 0 ? (num_classes + 1) * d : 0) + depth * (block + cross) +
         (p2 * out_channels * d + p2 * out_channels) + (2 * d * d + 2 * d) + encoder;
}

void DiTOptions::validate() const {
  std::vector<std::string> errors;
  auto positive = [&](const char* name, int64_t v) {
    if (v < 1) errors.push_back(lf::str(model_key(name), " = ", v, " (must be >= 1)"));
  };
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("patch_size", patch_size);
  positive("depth", depth);
  positive("heads", heads);
  if (width < 4 || width % 4 != 0)
    errors.push_back(lf::str(model_key("width"), " = ", width, " (must be a positive multiple of 4: the 2-D sin-cos ",
                             "position embedding gives a quarter of it to each of sin/cos of row/column)"));
  else if (heads >= 1 && width % heads != 0)
    errors.push_back(lf::str(model_key("width"), " = ", width, " is not divisible by ", model_key("heads"), " = ", heads));
  if (!(mlp_ratio > 0) || !std::isfinite(mlp_ratio) || (width >= 1 && mlp_hidden() < 1))
    errors.push_back(lf::str(model_key("mlp_ratio"), " = ", mlp_ratio,
                             " (must be > 0 with width x mlp_ratio >= 1; DiT uses 4)"));
  if (num_classes < 0)
    errors.push_back(lf::str("model.num_classes = ", num_classes, " (must be >= 0; 0 means unconditional)"));
  text.validate(errors);
  if (text.enabled() && num_classes > 0)
    errors.push_back(lf::str("model.num_classes = ", num_classes, " with model.context_length = ", text.context_length,
                             " (a text model is conditioned on captions alone; set model.num_classes = 0)"));
  if (!errors.empty()) throw std::invalid_argument("invalid DiT options: " + join(errors, "; "));
}

const std::vector<std::string>& dit_preset_names() {
  static const std::vector<std::string> names = {"dit-s", "dit-b", "dit-l", "dit-xl"};
  return names;
}

DiTSize dit_preset(const std::string& name) {
  if (name == "dit-s") return {12, 384, 6};
  if (name == "dit-b") return {12, 768, 12};
  if (name == "dit-l") return {24, 1024, 16};
  if (name == "dit-xl") return {28, 1152, 16};
  throw std::invalid_argument(
      lf::str(bad_choice_message(model_key("preset"), name, dit_preset_names()), " (Peebles & Xie 2023, Table 1)"));
}

// ---- patches and position embeddings -------------------------------------------------------

at::Tensor sincos_pos_embed_2d(int64_t dim, int64_t rows, int64_t cols) {
  TORCH_CHECK(dim > 0 && dim % 4 == 0, "sincos_pos_embed_2d: dim must be a positive multiple of 4, found ", dim);
  TORCH_CHECK(rows > 0 && cols > 0, "sincos_pos_embed_2d: the grid is ", rows, "x", cols);
  const int64_t quarter = dim / 4;
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  // get_1d_sincos_pos_embed_from_grid: omega = 1 / 10000^(k / (D/2)) for the D/2 = dim/2 dims of
  // one coordinate, i.e. k / quarter here; the first half of the embedding is the column
  // (MAE's meshgrid(grid_w, grid_h) puts w first), the second the row.
  const at::Tensor omega = at::pow(10000.0, -at::arange(quarter, f64) / static_cast<double>(quarter));
  auto one_d = [&](const at::Tensor& pos) {  // [L] -> [L, dim/2] = [sin | cos]
    at::Tensor out = pos.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({at::sin(out), at::cos(out)}, 1);
  };
  const at::Tensor row = at::arange(rows, f64).repeat_interleave(cols);  // token k = i cols + j
  const at::Tensor col = at::arange(cols, f64).repeat({rows});
  return at::cat({one_d(col), one_d(row)}, 1);
}

at::Tensor patchify(const at::Tensor& x, int64_t p) {
  TORCH_CHECK(x.dim() == 4 && p > 0 && x.size(2) % p == 0 && x.size(3) % p == 0, "patchify: input of shape ",
              x.sizes(), " does not split into ", p, "x", p, " patches");
  const int64_t n = x.size(0), c = x.size(1), rows = x.size(2) / p, cols = x.size(3) / p;
  return x.reshape({n, c, rows, p, cols, p}).permute({0, 2, 4, 3, 5, 1}).reshape({n, rows * cols, p * p * c});
}

at::Tensor unpatchify(const at::Tensor& tokens, int64_t p, int64_t rows, int64_t cols, int64_t channels) {
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(1) == rows * cols && tokens.size(2) == p * p * channels,
              "unpatchify: tokens of shape ", tokens.sizes(), " are not [N, ", rows * cols, ", ", p * p * channels, "]");
  const int64_t n = tokens.size(0);
  return tokens.reshape({n, rows, cols, p, p, channels})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({n, channels, rows * p, cols * p});
}

// ---- attention and blocks ------------------------------------------------------------------

DiTAttentionImpl::DiTAttentionImpl(int64_t width, int64_t heads) : heads_(heads) {
  TORCH_CHECK(heads > 0 && width % heads == 0, "DiTAttention: ", heads, " heads do not divide width ", width);
  qkv = register_module("qkv", torch::nn::Linear(width, 3 * width));
  proj = register_module("proj", torch::nn::Linear(width, width));
}

at::Tensor DiTAttentionImpl::forward(const at::Tensor& x) {
  const int64_t n = x.size(0), len = x.size(1), width = x.size(2), d = width / heads_;
  // [N, L, 3, heads, d] -> [3, N, heads, L, d]: timm's reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).
  const at::Tensor qkv5 = linear(x, qkv).view({n, len, 3, heads_, d}).permute({2, 0, 3, 1, 4});
  at::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  out = at::scaled_dot_product_attention(qkv5[0], qkv5[1], qkv5[2]);  // [N, heads, L, d]
#else
  // One copy into head-major order, then softmax(q k^T / sqrt(d)) v as two batched GEMMs; the
  // scale goes on the [N*heads, L, L] scores in place (bmm's backward needs only q and k).
  const at::Tensor qkv_c = qkv5.contiguous();
  auto part = [&](int64_t i) { return qkv_c[i].view({n * heads_, len, d}); };
  at::Tensor scores = at::bmm(part(0), part(1).transpose(1, 2));
  scores.mul_(1.0 / std::sqrt(static_cast<double>(d)));
  out = at::bmm(at::softmax(scores, -1), part(2)).view({n, heads_, len, d});
#endif
  return linear(out.transpose(1, 2).reshape({n, len, width}), proj);
}

DiTBlockImpl::DiTBlockImpl(int64_t width, int64_t heads, int64_t mlp_hidden, int64_t context_dim) {
  attn = register_module("attn", DiTAttention(width, heads));
  if (context_dim > 0) {
    cross_attn = register_module("cross_attn", CrossAttention(width, context_dim, heads, width / heads));
    zero_parameters(*cross_attn->out);  // PixArt: the block starts as the class-free DiT block
  }
  auto mlp = named_group(*this, "mlp");  // timm Mlp: fc1, GELU(tanh), fc2
  fc1 = mlp->register_module("fc1", torch::nn::Linear(width, mlp_hidden));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(mlp_hidden, width));
  ada_ln = torch::nn::Linear(width, 6 * width);
  register_module("adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), ada_ln));
}

at::Tensor DiTBlockImpl::forward(const at::Tensor& x, const at::Tensor& c_act, const TextContext* context) {
  // shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, each [N, 1, D].
  const auto m = linear(c_act, ada_ln).unsqueeze(1).chunk(6, -1);
  at::Tensor h = at::addcmul(x, m[2], attn(modulate(layer_norm(x), m[0], m[1])));
  if (cross_attn) h = h + cross_attn->forward(h, context->embeddings.to(h.scalar_type()), context->mask);
  return at::addcmul(h, m[5], linear(GeluTanh::apply(linear(modulate(layer_norm(h), m[3], m[4]), fc1)), fc2));
}

// ---- DiT -----------------------------------------------------------------------------------

DiTImpl::DiTImpl(DiTOptions options) : options_(std::move(options)) {
  options_.validate();
  using namespace torch::nn;
  const DiTOptions& o = options_;
  const int64_t d = o.width, p = o.patch_size;
  patch_embed = named_group(*this, "x_embedder")
                    ->register_module("proj", Conv2d(Conv2dOptions(o.in_channels, d, p).stride(p)));
  t_mlp_1 = Linear(kFrequencyDim, d);
  t_mlp_2 = Linear(d, d);
  named_group(*this, "t_embedder")->register_module("mlp", Sequential(t_mlp_1, SiLU(), t_mlp_2));
  if (o.num_classes > 0)
    label_embed = named_group(*this, "y_embedder")
                      ->register_module("embedding_table", Embedding(o.num_classes + 1, d));
  if (o.text.enabled()) text_encoder = register_module("text_encoder", TextEncoder(o.text));
  blocks = register_module("blocks", ModuleList());
  for (int64_t i = 0; i < o.depth; ++i)
    blocks->push_back(DiTBlock(d, o.heads, o.mlp_hidden(), o.text.enabled() ? o.text.width : 0));
  auto final_layer = named_group(*this, "final_layer");
  final_linear = final_layer->register_module("linear", Linear(d, p * p * o.out_channels));
  final_ada_ln = Linear(d, 2 * d);
  final_layer->register_module("adaLN_modulation", Sequential(SiLU(), final_ada_ln));

  // initialize_weights: Xavier-uniform Linears with zero bias; the patch embedding like a
  // Linear on its [D, C p p] view; N(0, 0.02) label table and timestep MLP weights; adaLN
  // modulations and the final linear zero (adaLN-Zero: the model starts as output 0).
  torch::NoGradGuard no_grad;
  for (auto& b : *blocks) {
    auto& blk = *b->as<DiTBlock>();
    for (auto* l : {&blk.attn->qkv, &blk.attn->proj, &blk.fc1, &blk.fc2}) basic_init(*l);
    zero_parameters(*blk.ada_ln);
    if (blk.cross_attn) {  // PixArt: Xavier q, k, v; the output projection stays zero
      for (auto* l : {&blk.cross_attn->to_q, &blk.cross_attn->to_k, &blk.cross_attn->to_v})
        init::xavier_uniform_((*l)->weight);
    }
  }
  for (auto* l : {&t_mlp_1, &t_mlp_2}) {
    init::normal_((*l)->weight, 0.0, 0.02);
    init::zeros_((*l)->bias);
  }
  init::xavier_uniform_(patch_embed->weight.view({d, -1}));
  init::zeros_(patch_embed->bias);
  if (label_embed) init::normal_(label_embed->weight, 0.0, 0.02);
  zero_parameters(*final_ada_ln);
  zero_parameters(*final_linear);
}

void DiTImpl::check_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const {
  const int64_t p = options_.patch_size;
  if (x.dim() != 4 || x.size(1) != options_.in_channels || x.size(2) % p || x.size(3) % p || x.size(2) == 0 ||
      x.size(3) == 0)
    throw std::invalid_argument(lf::str("DiT: input has shape ", x.sizes(), ", expected [N, ", options_.in_channels,
                                        ", H, W] with H and W positive multiples of ", model_key("patch_size"), " = ", p));
  check_time_and_labels("DiT", x, t, y, options_.num_classes);
}

const at::Tensor& DiTImpl::pos_embed(int64_t rows, int64_t cols, const at::Tensor& like) {
  if (rows != pos_rows_ || cols != pos_cols_ || pos_cache_.scalar_type() != like.scalar_type() ||
      pos_cache_.device() != like.device()) {
    pos_cache_ = sincos_pos_embed_2d(options_.width, rows, cols).to(like.options().requires_grad(false));
    pos_rows_ = rows;
    pos_cols_ = cols;
  }
  return pos_cache_;
}

at::Tensor DiTImpl::conditioning(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  at::Tensor c = linear(at::silu(linear(timestep_embedding(batch_times(t, x), kFrequencyDim).to(x.scalar_type()), t_mlp_1)),
                        t_mlp_2);
  if (label_embed) c = c + label_embed(labels_or_null(y, x, options_.num_classes));
  return at::silu(c);
}

at::Tensor DiTImpl::embed(const at::Tensor& x) {
  const int64_t n = x.size(0), p = options_.patch_size, rows = x.size(2) / p, cols = x.size(3) / p;
  // The stride-p convolution as a Linear on (channel, row, column)-ordered patches: the same
  // sums, and one GEMM whose output is already [N, L, D].
  const at::Tensor patches = x.reshape({n, x.size(1), rows, p, cols, p})
                                 .permute({0, 2, 4, 1, 3, 5})
                                 .reshape({n, rows * cols, x.size(1) * p * p});
  at::Tensor h = at::linear(patches, patch_embed->weight.view({options_.width, -1}), patch_embed->bias);
  return h + pos_embed(rows, cols, h);
}

at::Tensor DiTImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, const TextInput& text) {
  check_inputs(x, t, y);
  if (!text_encoder && (text.defined() || text.drop.defined()))
    throw std::invalid_argument("DiT: text input given to a model without text conditioning (model.context_length = 0)");
  const int64_t p = options_.patch_size, rows = x.size(2) / p, cols = x.size(3) / p;
  const at::Tensor c_act = conditioning(x, t, y);
  TextContext context;
  if (text_encoder) context = text_encoder->forward(text, x.size(0), x);
  at::Tensor h = embed(x);
  for (const auto& b : *blocks) h = b->as<DiTBlock>()->forward(h, c_act, text_encoder ? &context : nullptr);
  const auto m = linear(c_act, final_ada_ln).unsqueeze(1).chunk(2, -1);  // shift, scale
  return unpatchify(linear(modulate(layer_norm(h), m[0], m[1]), final_linear), p, rows, cols, options_.out_channels);
}

}  // namespace lf::core
