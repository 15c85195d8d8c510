// AutoencoderKL in diffusers' layout, its posterior and loss (see vae.h).
#include "core/vae.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr double kEps = 1e-6;  // diffusers' VAE uses resnet_eps=1e-6 everywhere

}  // namespace

void VAEOptions::validate() const {
  std::vector<std::string> errors;
  auto positive = [&](const char* name, int64_t v) {
    if (v < 1) errors.push_back(lf::str("vae.", name, " = ", v, " (must be >= 1)"));
  };
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("latent_channels", latent_channels);
  positive("layers_per_block", layers_per_block);
  positive("norm_groups", norm_num_groups);
  const size_t levels = block_out_channels.size();
  if (levels < 1 || levels > 6) {
    errors.push_back(lf::str("vae.channels has ", levels,
                         " entries (must have 1 to 6: downsampling factor 2^(entries-1))"));
  } else {
    for (size_t i = 0; i < levels; ++i) {
      const int64_t c = block_out_channels[i];
      if (c < 1)
        errors.push_back(lf::str("vae.channels[", i, "] = ", c, " (must be >= 1)"));
      else if (norm_num_groups >= 1 && c % norm_num_groups != 0)
        errors.push_back(lf::str("vae.channels[", i, "] = ", c,
                             " is not divisible by vae.norm_groups = ", norm_num_groups,
                             " (GroupNorm needs whole groups)"));
    }
  }
  if (!(scaling_factor > 0.0) || !std::isfinite(scaling_factor))
    errors.push_back(lf::str("scaling_factor = ", scaling_factor, " (must be finite and > 0)"));
  if (sample_size < 1)
    errors.push_back(lf::str("sample_size = ", sample_size, " (must be >= 1)"));
  else if (levels >= 1 && levels <= 6 && sample_size % downsample_factor() != 0)
    errors.push_back(lf::str("sample_size = ", sample_size,
                         " is not a multiple of the downsampling factor ", downsample_factor()));
  if (!errors.empty())
    throw std::invalid_argument("invalid VAE options: " + join(errors, "; "));
}

// ---- posterior ---------------------------------------------------------------------------

DiagonalGaussian::DiagonalGaussian(const at::Tensor& moments) {
  TORCH_CHECK(moments.dim() >= 2 && moments.size(1) % 2 == 0,
              "DiagonalGaussian: moments need an even channel count (mean, logvar), found shape ",
              moments.sizes());
  auto parts = moments.chunk(2, 1);
  *this = DiagonalGaussian(parts[0], parts[1]);
}

DiagonalGaussian::DiagonalGaussian(at::Tensor mean, at::Tensor logvar)
    : mean_(std::move(mean)), logvar_(at::clamp(logvar, -30.0, 20.0)) {
  TORCH_CHECK(mean_.sizes() == logvar_.sizes(), "DiagonalGaussian: mean ", mean_.sizes(),
              " and logvar ", logvar_.sizes(), " differ in shape");
  std_ = at::exp(0.5 * logvar_);
  var_ = at::exp(logvar_);
}

at::Tensor DiagonalGaussian::sample(const at::Tensor& eps) const {
  TORCH_CHECK(eps.sizes() == mean_.sizes(), "DiagonalGaussian::sample: eps has shape ",
              eps.sizes(), ", the posterior ", mean_.sizes());
  return mean_ + std_ * eps.to(mean_.options());
}

at::Tensor DiagonalGaussian::kl() const {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < mean_.dim(); ++d) dims.push_back(d);
  return 0.5 * at::sum(mean_.pow(2) + var_ - 1.0 - logvar_, dims);
}

// ---- blocks ------------------------------------------------------------------------------

MidBlock2DImpl::MidBlock2DImpl(int64_t channels, int64_t groups, bool add_attention) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets->push_back(ResnetBlock2D(channels, channels, groups, kEps));
  // diffusers: heads = in_channels // attention_head_dim with attention_head_dim = channels.
  if (add_attention) attentions->push_back(SpatialSelfAttention(channels, 1, groups, kEps));
  resnets->push_back(ResnetBlock2D(channels, channels, groups, kEps));
}

at::Tensor MidBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets[0]->as<ResnetBlock2D>()->forward(x);
  if (!attentions->is_empty()) h = attentions[0]->as<SpatialSelfAttention>()->forward(h);
  return resnets[1]->as<ResnetBlock2D>()->forward(h);
}

ResampleBlock2DImpl::ResampleBlock2DImpl(int64_t in_channels, int64_t out_channels,
                                         int64_t layers, int64_t groups, Kind resample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t j = 0; j < layers; ++j)
    resnets->push_back(ResnetBlock2D(j == 0 ? in_channels : out_channels, out_channels, groups, kEps));
  if (resample == Kind::kDown)
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(Downsample2D(out_channels)));
  if (resample == Kind::kUp)
    upsamplers = register_module("upsamplers",
                                 torch::nn::ModuleList(Upsample2D(out_channels, out_channels)));
}

at::Tensor ResampleBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (const auto& r : *resnets) h = r->as<ResnetBlock2D>()->forward(h);
  if (downsamplers) h = downsamplers[0]->as<Downsample2D>()->forward(h);
  if (upsamplers) h = upsamplers[0]->as<Upsample2D>()->forward(h);
  return h;
}

// ---- encoder / decoder -------------------------------------------------------------------

VAEEncoderImpl::VAEEncoderImpl(const VAEOptions& o) {
  const auto& ch = o.block_out_channels;
  const int64_t g = o.norm_num_groups;
  conv_in = register_module(
      "conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, ch[0], 3).padding(1)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t prev = ch[0];
  for (size_t i = 0; i < ch.size(); ++i) {
    const bool last = i + 1 == ch.size();
    down_blocks->push_back(ResampleBlock2D(prev, ch[i], o.layers_per_block, g,
                                           last ? ResampleBlock2DImpl::Kind::kNone
                                                : ResampleBlock2DImpl::Kind::kDown));
    prev = ch[i];
  }
  mid_block = register_module("mid_block", MidBlock2D(ch.back(), g, o.mid_block_add_attention));
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(g, ch.back()).eps(kEps)));
  conv_out = register_module(
      "conv_out",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(ch.back(), 2 * o.latent_channels, 3).padding(1)));
}

at::Tensor VAEEncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_in(x);
  for (const auto& b : *down_blocks) h = b->as<ResampleBlock2D>()->forward(h);
  h = mid_block(h);
  return conv_out(at::silu(conv_norm_out(h)));
}

VAEDecoderImpl::VAEDecoderImpl(const VAEOptions& o) {
  const auto& ch = o.block_out_channels;
  const int64_t g = o.norm_num_groups;
  conv_in = register_module(
      "conv_in",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(o.latent_channels, ch.back(), 3).padding(1)));
  mid_block = register_module("mid_block", MidBlock2D(ch.back(), g, o.mid_block_add_attention));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  int64_t prev = ch.back();
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t out = ch[ch.size() - 1 - i];
    const bool last = i + 1 == ch.size();
    up_blocks->push_back(ResampleBlock2D(prev, out, o.layers_per_block + 1, g,
                                         last ? ResampleBlock2DImpl::Kind::kNone
                                              : ResampleBlock2DImpl::Kind::kUp));
    prev = out;
  }
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(g, ch[0]).eps(kEps)));
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch[0], o.out_channels, 3).padding(1)));
}

at::Tensor VAEDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = mid_block(conv_in(z));
  for (const auto& b : *up_blocks) h = b->as<ResampleBlock2D>()->forward(h);
  return conv_out(at::silu(conv_norm_out(h)));
}

// ---- AutoencoderKL -----------------------------------------------------------------------

VAEImpl::VAEImpl(VAEOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t two_z = 2 * options_.latent_channels;
  encoder = register_module("encoder", VAEEncoder(options_));
  decoder = register_module("decoder", VAEDecoder(options_));
  quant_conv = register_module("quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(two_z, two_z, 1)));
  post_quant_conv = register_module(
      "post_quant_conv",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(options_.latent_channels, options_.latent_channels, 1)));
}

void VAEImpl::check_input(const at::Tensor& x, int64_t channels, int64_t multiple, const char* what) const {
  if (x.dim() == 4 && x.size(1) == channels && x.size(2) > 0 && x.size(3) > 0 &&
      x.size(2) % multiple == 0 && x.size(3) % multiple == 0)
    return;
  throw std::invalid_argument(lf::str("VAE::", what, ": input has shape ", x.sizes(), ", expected [N, ",
                                      channels, ", H, W] with H and W positive",
                                      multiple > 1 ? lf::str(" multiples of the downsampling factor ", multiple,
                                                             " (pad the images)")
                                                   : ""));
}

DiagonalGaussian VAEImpl::encode(const at::Tensor& x) {
  check_input(x, options_.in_channels, options_.downsample_factor(), "encode");
  return DiagonalGaussian(quant_conv(encoder(x)));
}

at::Tensor VAEImpl::decode(const at::Tensor& z) {
  check_input(z, options_.latent_channels, 1, "decode");
  return decoder(post_quant_conv(z));
}

at::Tensor VAEImpl::forward(const at::Tensor& x, const at::Tensor& eps) {
  DiagonalGaussian posterior = encode(x);
  return decode(eps.defined() ? posterior.sample(eps) : posterior.mode());
}

// ---- legacy keys and loss ----------------------------------------------------------------

TensorMap map_legacy_vae_keys(const TensorMap& tensors) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  TensorMap out;
  std::map<std::string, std::string> origin;  // new key -> the key it came from
  for (const auto& [name, t] : tensors) {
    std::string key = name;
    at::Tensor value = t;
    for (const auto& [from, to] : kRenames) {
      const auto pos = key.find(from);
      if (pos == std::string::npos || key.find(".attentions.") == std::string::npos) continue;
      key = key.substr(0, pos) + to + key.substr(pos + std::strlen(from));
      // Conv-shaped 1x1 projections [C, C, 1(, 1)] become Linear weights [C, C].
      if (value.dim() > 2) value = value.reshape({value.size(0), value.size(1)});
      break;
    }
    auto [it, fresh] = origin.emplace(key, name);
    if (!fresh)
      throw std::invalid_argument(lf::str("VAE weights hold both '", it->second, "' and '", name,
                                          "', which both mean '", key, "'; keep one of them"));
    out.emplace(key, value);
  }
  return out;
}

const EnumTable<ReconLoss>& recon_losses() {
  static const EnumTable<ReconLoss> table = {{"l1", ReconLoss::kL1}, {"l2", ReconLoss::kL2}};
  return table;
}

VAELoss vae_loss(const at::Tensor& x, const at::Tensor& x_rec, const DiagonalGaussian& posterior,
                 ReconLoss kind, double kl_weight) {
  TORCH_CHECK(x.sizes() == x_rec.sizes(), "vae_loss: images ", x.sizes(), " and reconstructions ",
              x_rec.sizes(), " differ in shape");
  VAELoss out;
  const at::Tensor diff = x_rec - x;
  out.recon = kind == ReconLoss::kL1 ? diff.abs().mean() : diff.pow(2).mean();
  out.kl = posterior.kl().mean();
  out.total = out.recon + kl_weight * out.kl;
  return out;
}

}  // namespace lf::core
