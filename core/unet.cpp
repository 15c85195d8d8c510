// ADM/LDM denoising UNet (see unet.h). Structure follows guided-diffusion's UNetModel.__init__:
// input_blocks record every output for the skips; output_blocks consume them in reverse.
#include "core/unet.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr double kNormEps = 1e-5;  // ADM's GroupNorm32 uses PyTorch's default eps

bool contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

void UNetOptions::validate() const {
  std::vector<std::string> errors;
  auto positive = [&](const char* name, int64_t v) {
    if (v < 1) errors.push_back(lf::str("model.", name, " = ", v, " (must be >= 1)"));
  };
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("channels", model_channels);
  positive("num_res_blocks", num_res_blocks);
  positive("head_channels", head_channels);
  positive("norm_groups", norm_groups);
  if (num_classes < 0)
    errors.push_back(lf::str("model.num_classes = ", num_classes,
                             " (must be >= 0; 0 means unconditional)"));
  text.validate(errors);
  if (text.enabled() && num_classes > 0)
    errors.push_back(lf::str("model.num_classes = ", num_classes, " with model.context_length = ", text.context_length,
                             " (a text model is conditioned on captions alone; set model.num_classes = 0)"));
  if (!(dropout >= 0.0 && dropout < 1.0))
    errors.push_back(lf::str("model.dropout = ", dropout, " (must be in [0, 1))"));
  const int64_t n_levels = levels();
  if (n_levels < 1 || n_levels > 8) {
    errors.push_back(lf::str("model.channel_mult has ", n_levels, " entries (must have 1 to 8)"));
  } else {
    for (int64_t i = 0; i < n_levels; ++i) {
      const int64_t c = channel_mult[i] * model_channels;
      if (channel_mult[i] < 1) {
        errors.push_back(lf::str("model.channel_mult[", i, "] = ", channel_mult[i], " (must be >= 1)"));
        continue;
      }
      if (norm_groups >= 1 && c % norm_groups != 0)
        errors.push_back(lf::str("model level ", i, " has ", c, " channels (model.channels ",
                                 model_channels, " x channel_mult ", channel_mult[i],
                                 "), not divisible by model.norm_groups = ", norm_groups));
      const bool attends = contains(attention_ds, int64_t{1} << i) || i == n_levels - 1;
      if (attends && head_channels >= 1 && c % head_channels != 0)
        errors.push_back(lf::str("model level ", i, " has ", c, " channels, not divisible by ",
                                 "model.head_channels = ", head_channels,
                                 i == n_levels - 1 ? " (the middle block always attends)" : ""));
    }
    for (int64_t ds : attention_ds) {
      const bool ok = ds >= 1 && (ds & (ds - 1)) == 0 && ds <= (int64_t{1} << (n_levels - 1));
      if (!ok)
        errors.push_back(lf::str("model.attention_ds contains ", ds, " (allowed: powers of two from 1 to ",
                                 int64_t{1} << (n_levels - 1), " for ", n_levels, " levels)"));
    }
  }
  if (!errors.empty()) throw std::invalid_argument("invalid UNet options: " + join(errors, "; "));
}

// ---- ResBlock ----------------------------------------------------------------------------

UNetResBlockImpl::UNetResBlockImpl(int64_t in_channels, int64_t out_channels,
                                   int64_t emb_channels, int64_t groups, double dropout,
                                   int64_t layer_id, std::shared_ptr<DropoutMasks> masks)
    : dropout_(dropout), layer_id_(layer_id), masks_(std::move(masks)) {
  using namespace torch::nn;
  in_norm = register_module("in_norm", GroupNorm(GroupNormOptions(groups, in_channels).eps(kNormEps)));
  in_conv = register_module("in_conv", Conv2d(Conv2dOptions(in_channels, out_channels, 3).padding(1)));
  emb_proj = register_module("emb_proj", Linear(emb_channels, 2 * out_channels));
  out_norm = register_module("out_norm", GroupNorm(GroupNormOptions(groups, out_channels).eps(kNormEps)));
  out_conv = register_module("out_conv", Conv2d(Conv2dOptions(out_channels, out_channels, 3).padding(1)));
  zero_parameters(*out_conv);  // ADM zero_module: each block starts as its skip
  if (in_channels != out_channels)
    skip = register_module("skip", Conv2d(Conv2dOptions(in_channels, out_channels, 1)));
}

at::Tensor UNetResBlockImpl::forward(const at::Tensor& x, const at::Tensor& emb_act) {
  at::Tensor h = in_conv(at::silu(in_norm(x)));
  auto ss = emb_proj(emb_act).unsqueeze(-1).unsqueeze(-1).chunk(2, 1);  // scale, shift
  // ADM ResBlock._forward with use_scale_shift_norm: out_norm(h) * (1 + scale) + shift.
  h = at::silu(at::addcmul(ss[1], out_norm(h), ss[0] + 1.0));
  if (is_training() && dropout_ > 0.0) {
    if (!*masks_)
      throw std::invalid_argument(lf::str("UNet dropout is ", dropout_, " in training but no mask source ",
                                     "is set; call UNet::set_dropout_masks (masks come from the ",
                                     "keyed generator, never a per-rank stream)"));
    at::Tensor mask = (*masks_)(layer_id_, h.sizes());
    if (!mask.defined() || mask.sizes() != h.sizes())
      throw std::invalid_argument(lf::str("UNet dropout mask for layer ", layer_id_, " has shape ",
                                          mask.defined() ? lf::str(mask.sizes()) : "undefined",
                                          ", expected ", h.sizes()));
    if (mask.scalar_type() == at::kBool)
      h = h * mask.to(h.options()) * (1.0 / (1.0 - dropout_));
    else
      h = h * mask.to(h.options());
  }
  h = out_conv(h);
  return (skip ? skip(x) : x) + h;
}

at::Tensor UNetStageImpl::forward(const at::Tensor& x, const at::Tensor& emb_act, const TextContext* context) {
  at::Tensor h = res ? res(x, emb_act) : x;
  if (attn) h = attn(h);
  if (xattn) h = xattn(h, *context);
  if (down) h = down(h);
  if (up) h = up(h);
  return h;
}

// ---- UNet --------------------------------------------------------------------------------

UNetImpl::UNetImpl(UNetOptions options) : options_(std::move(options)) {
  options_.validate();
  using namespace torch::nn;
  const UNetOptions& o = options_;
  const int64_t mc = o.model_channels, emb = 4 * mc, g = o.norm_groups;
  time_embed_1 = register_module("time_embed_1", Linear(mc, emb));
  time_embed_2 = register_module("time_embed_2", Linear(emb, emb));
  if (o.num_classes > 0)
    label_emb = register_module("label_emb", Embedding(o.num_classes + 1, emb));
  if (o.text.enabled()) text_encoder = register_module("text_encoder", TextEncoder(o.text));

  auto res_block = [&](int64_t in, int64_t out) {
    return UNetResBlock(in, out, emb, g, o.dropout, num_res_blocks_++, masks_);
  };
  // Self-attention, or in a text model LDM's spatial transformer (self- and cross-attention).
  auto add_attention = [&](UNetStage& stage, int64_t ch) {
    if (o.text.enabled())
      stage->xattn = stage->register_module(
          "xattn", SpatialTransformer(ch, ch / o.head_channels, g, o.text.width));
    else
      stage->attn = stage->register_module(
          "attn", SpatialSelfAttention(ch, ch / o.head_channels, g, kNormEps, /*zero_init_out=*/true));
  };

  int64_t ch = o.channel_mult[0] * mc;
  conv_in = register_module("conv_in", Conv2d(Conv2dOptions(o.in_channels, ch, 3).padding(1)));
  input_blocks = register_module("input_blocks", ModuleList());
  std::vector<int64_t> skip_channels = {ch};
  for (int64_t level = 0; level < o.levels(); ++level) {
    const int64_t out = o.channel_mult[level] * mc;
    for (int64_t i = 0; i < o.num_res_blocks; ++i) {
      UNetStage stage;
      stage->res = stage->register_module("res", res_block(ch, out));
      ch = out;
      if (contains(o.attention_ds, int64_t{1} << level)) add_attention(stage, ch);
      input_blocks->push_back(stage);
      skip_channels.push_back(ch);
    }
    if (level + 1 < o.levels()) {
      UNetStage stage;
      stage->down = stage->register_module("down", Conv2d(Conv2dOptions(ch, ch, 3).stride(2).padding(1)));
      input_blocks->push_back(stage);
      skip_channels.push_back(ch);
    }
  }

  middle_block = register_module("middle_block", ModuleList());
  UNetStage mid_a, mid_b;
  mid_a->res = mid_a->register_module("res", res_block(ch, ch));
  add_attention(mid_a, ch);
  mid_b->res = mid_b->register_module("res", res_block(ch, ch));
  middle_block->push_back(mid_a);
  middle_block->push_back(mid_b);

  output_blocks = register_module("output_blocks", ModuleList());
  for (int64_t level = o.levels() - 1; level >= 0; --level) {
    const int64_t out = o.channel_mult[level] * mc;
    for (int64_t i = 0; i <= o.num_res_blocks; ++i) {
      const int64_t skip_ch = skip_channels.back();
      skip_channels.pop_back();
      UNetStage stage;
      stage->res = stage->register_module("res", res_block(ch + skip_ch, out));
      ch = out;
      if (contains(o.attention_ds, int64_t{1} << level)) add_attention(stage, ch);
      if (level > 0 && i == o.num_res_blocks)
        stage->up = stage->register_module("up", Upsample2D(ch, ch));
      output_blocks->push_back(stage);
    }
  }
  norm_out = register_module("norm_out", GroupNorm(GroupNormOptions(g, ch).eps(kNormEps)));
  conv_out = register_module("conv_out", Conv2d(Conv2dOptions(ch, o.out_channels, 3).padding(1)));
  zero_parameters(*conv_out);
}

void UNetImpl::set_dropout_masks(DropoutMasks masks) { *masks_ = std::move(masks); }

void UNetImpl::check_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const {
  const int64_t m = options_.size_multiple();
  if (x.dim() != 4 || x.size(1) != options_.in_channels || x.size(2) % m || x.size(3) % m ||
      x.size(2) == 0 || x.size(3) == 0)
    throw std::invalid_argument(lf::str("UNet: input has shape ", x.sizes(), ", expected [N, ",
                                        options_.in_channels, ", H, W] with H and W positive multiples of ",
                                        m, " (2^(", options_.levels(), " levels - 1))"));
  check_time_and_labels("UNet", x, t, y, options_.num_classes);
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, const TextInput& text) {
  check_inputs(x, t, y);
  if (!text_encoder && (text.defined() || text.drop.defined()))
    throw std::invalid_argument("UNet: text input given to a model without text conditioning (model.context_length = 0)");
  TextContext context;
  if (text_encoder) context = text_encoder->forward(text, x.size(0), x);
  const TextContext* ctx = text_encoder ? &context : nullptr;
  at::Tensor emb = time_embed_2(at::silu(time_embed_1(
      timestep_embedding(batch_times(t, x), options_.model_channels).to(x.scalar_type()))));
  if (label_emb) emb = emb + label_emb(labels_or_null(y, x, options_.num_classes));
  const at::Tensor emb_act = at::silu(emb);  // the SiLU that opens every ADM emb_layers

  std::vector<at::Tensor> skips;
  skips.reserve(input_blocks->size() + 1);
  at::Tensor h = conv_in(x);
  skips.push_back(h);
  for (const auto& b : *input_blocks) {
    h = b->as<UNetStage>()->forward(h, emb_act, ctx);
    skips.push_back(h);
  }
  for (const auto& b : *middle_block) h = b->as<UNetStage>()->forward(h, emb_act, ctx);
  for (const auto& b : *output_blocks) {
    h = b->as<UNetStage>()->forward(at::cat({h, skips.back()}, 1), emb_act, ctx);
    skips.pop_back();
  }
  return conv_out(at::silu(norm_out(h)));
}

}  // namespace lf::core
