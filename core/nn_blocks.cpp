// Shared building blocks (see nn_blocks.h).
#include "core/nn_blocks.h"

#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/version.h>

#include <cmath>

namespace lf::core {

namespace F = torch::nn::functional;

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, double max_period) {
  TORCH_CHECK(t.dim() == 1, "timestep_embedding: timesteps must have shape [N], found ", t.sizes());
  TORCH_CHECK(dim > 0, "timestep_embedding: dim must be positive, found ", dim);
  const int64_t half = dim / 2;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(t.device());
  at::Tensor freqs =
      at::exp(at::arange(half, opts) * (-std::log(max_period) / static_cast<double>(half)));
  at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  at::Tensor emb = at::cat({at::cos(args), at::sin(args)}, 1);
  if (dim % 2) emb = at::cat({emb, at::zeros({t.size(0), 1}, opts)}, 1);
  return emb;
}

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t groups,
                                     double eps) {
  norm1 = register_module(
      "norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, in_channels).eps(eps)));
  conv1 = register_module(
      "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 3).padding(1)));
  norm2 = register_module(
      "norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, out_channels).eps(eps)));
  conv2 = register_module(
      "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(out_channels, out_channels, 3).padding(1)));
  if (in_channels != out_channels)
    conv_shortcut = register_module(
        "conv_shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1)));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1(at::silu(norm1(x)));
  h = conv2(at::silu(norm2(h)));
  return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels) {
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2)));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  // Asymmetric padding as diffusers' Downsample2D with padding=0 (and LDM's Downsample).
  return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));
}

Upsample2DImpl::Upsample2DImpl(int64_t in_channels, int64_t out_channels) {
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 3).padding(1)));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x) {
  return conv(F::interpolate(
      x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
}

SpatialSelfAttentionImpl::SpatialSelfAttentionImpl(int64_t channels, int64_t heads,
                                                   int64_t groups, double eps, bool zero_init_out)
    : heads_(heads) {
  TORCH_CHECK(heads > 0 && channels % heads == 0, "SpatialSelfAttention: ", heads,
              " heads do not divide ", channels, " channels");
  group_norm = register_module(
      "group_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps)));
  to_q = register_module("to_q", torch::nn::Linear(channels, channels));
  to_k = register_module("to_k", torch::nn::Linear(channels, channels));
  to_v = register_module("to_v", torch::nn::Linear(channels, channels));
  to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(channels, channels)));
  if (zero_init_out) zero_parameters(*to_out);
}

at::Tensor SpatialSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), len = h * w;
  const int64_t d = c / heads_;
  // The Linear projections run as one fused 1x1 convolution on NCHW (the same arithmetic as
  // diffusers' to_q/to_k/to_v on [N, L, C]): oneDNN's convolution is several times faster on
  // CPU than a GEMM on the transposed sequence, and no transposes are needed.
  auto as_conv = [](const at::Tensor& weight) { return weight.view({weight.size(0), weight.size(1), 1, 1}); };
  const at::Tensor qkv_w = at::cat({as_conv(to_q->weight), as_conv(to_k->weight), as_conv(to_v->weight)});
  const at::Tensor qkv_b = at::cat({to_q->bias, to_k->bias, to_v->bias});
  // [3, N, heads, d, L]: channel c of q is head c / d, feature c % d, as diffusers' head split.
  const at::Tensor qkv = at::conv2d(group_norm(x), qkv_w, qkv_b)
                             .view({n, 3, heads_, d, len})
                             .permute({1, 0, 2, 3, 4})
                             .contiguous();
  at::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  auto seq = [&](int64_t i) { return qkv[i].transpose(-2, -1); };  // [N, heads, L, d]
  out = at::scaled_dot_product_attention(seq(0), seq(1), seq(2)).transpose(-2, -1);
  out = out.reshape({n, c, h, w});
#else
  // ADM's QKVAttentionLegacy layout [N*heads, d, L]: two bmm calls and no copies of k or v.
  const at::Tensor q = qkv[0].view({n * heads_, d, len}) * (1.0 / std::sqrt(static_cast<double>(d)));
  const at::Tensor weights = at::softmax(at::bmm(q.transpose(1, 2), qkv[1].view({n * heads_, d, len})), -1);
  out = at::bmm(qkv[2].view({n * heads_, d, len}), weights.transpose(1, 2)).view({n, c, h, w});
#endif
  auto& proj = *to_out[0]->as<torch::nn::Linear>();
  return x + at::conv2d(out, as_conv(proj.weight), proj.bias);
}

std::shared_ptr<torch::nn::Module> named_group(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

void zero_parameters(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.zero_();
}

}  // namespace lf::core
