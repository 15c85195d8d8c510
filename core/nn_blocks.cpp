// Shared building blocks (see nn_blocks.h).
#include "core/nn_blocks.h"

#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/version.h>

#include <cmath>

namespace lf::core {

namespace F = torch::nn::functional;

at::Tensor dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // Scaling q (L*d values) is cheaper than scaling the L*L scores.
  at::Tensor scores = at::matmul(q * scale, k.transpose(-2, -1));
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

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
  return conv(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
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
  at::Tensor seq = group_norm(x).view({n, c, len}).transpose(1, 2);  // [N, L, C]
  auto split = [&](torch::nn::Linear& proj) {
    return proj(seq).view({n, len, heads_, d}).transpose(1, 2);  // [N, heads, L, d]
  };
  at::Tensor out = dot_product_attention(split(to_q), split(to_k), split(to_v));
  out = out.transpose(1, 2).reshape({n, len, c});
  out = to_out[0]->as<torch::nn::Linear>()->forward(out);
  return x + out.transpose(1, 2).reshape({n, c, h, w});
}

void zero_parameters(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.zero_();
}

}  // namespace lf::core
