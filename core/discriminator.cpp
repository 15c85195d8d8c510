// PatchGAN discriminator, hinge losses and adaptive weight (see discriminator.h).
#include "core/discriminator.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <algorithm>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr int64_t kKernel = 4, kPad = 1;  // taming: kw = 4, padw = 1

int64_t channel_mult(int64_t layer) { return std::min<int64_t>(int64_t{1} << layer, 8); }

}  // namespace

const EnumTable<DiscriminatorNorm>& discriminator_norms() {
  static const EnumTable<DiscriminatorNorm> table = {{"group", DiscriminatorNorm::kGroup}, {"none", DiscriminatorNorm::kNone}};
  return table;
}

int64_t DiscriminatorOptions::output_size(int64_t s) const {
  // Conv output: floor((s + 2 * pad - kernel) / stride) + 1; negative means the input is too small.
  auto conv = [](int64_t v, int64_t stride) { return v + 2 * kPad - kKernel < 0 ? 0 : (v + 2 * kPad - kKernel) / stride + 1; };
  s = conv(s, 2);
  for (int64_t layer = 1; layer <= n_layers; ++layer) s = conv(s, layer < n_layers ? 2 : 1);
  return conv(s, 1);
}

int64_t DiscriminatorOptions::min_input_size() const {
  int64_t s = 1;
  while (output_size(s) < 1) ++s;
  return s;
}

void DiscriminatorOptions::validate() const {
  std::vector<std::string> errors;
  if (in_channels < 1) errors.push_back(lf::str("discriminator.in_channels = ", in_channels, " (must be >= 1)"));
  if (base_channels < 1)
    errors.push_back(lf::str("discriminator.base_channels = ", base_channels, " (must be >= 1)"));
  if (n_layers < 1 || n_layers > 8)
    errors.push_back(lf::str("discriminator.n_layers = ", n_layers, " (must be in [1, 8])"));
  if (norm == DiscriminatorNorm::kGroup) {
    if (norm_groups < 1) {
      errors.push_back(lf::str("discriminator.norm_groups = ", norm_groups, " (must be >= 1)"));
    } else if (base_channels >= 1) {
      for (int64_t layer = 1; layer <= std::clamp<int64_t>(n_layers, 1, 8); ++layer) {
        const int64_t c = base_channels * channel_mult(layer);
        if (c % norm_groups != 0) {
          errors.push_back(lf::str("discriminator layer ", layer, " has ", c, " channels (base_channels ",
                                   base_channels, " x ", channel_mult(layer), "), not divisible by ",
                                   "discriminator.norm_groups = ", norm_groups));
          break;
        }
      }
    }
  }
  if (!errors.empty()) throw std::invalid_argument("invalid discriminator options: " + join(errors, "; "));
}

PatchDiscriminatorImpl::PatchDiscriminatorImpl(DiscriminatorOptions options) : options_(std::move(options)) {
  options_.validate();
  using namespace torch::nn;
  const DiscriminatorOptions& o = options_;
  const bool normed = o.norm == DiscriminatorNorm::kGroup;
  auto lrelu = [] { return LeakyReLU(LeakyReLUOptions().negative_slope(0.2)); };
  auto conv = [&](int64_t in, int64_t out, int64_t stride, bool bias) {
    return Conv2d(Conv2dOptions(in, out, kKernel).stride(stride).padding(kPad).bias(bias));
  };
  main = register_module("main", Sequential());
  main->push_back(conv(o.in_channels, o.base_channels, 2, true));
  main->push_back(lrelu());
  for (int64_t layer = 1; layer <= o.n_layers; ++layer) {
    // The last of these keeps the resolution (stride 1), as in taming.
    const int64_t stride = layer < o.n_layers ? 2 : 1;
    const int64_t in = o.base_channels * channel_mult(layer - 1), out = o.base_channels * channel_mult(layer);
    main->push_back(conv(in, out, stride, /*bias=*/!normed));  // the norm's shift is the bias
    if (normed) main->push_back(GroupNorm(GroupNormOptions(o.norm_groups, out)));
    main->push_back(lrelu());
  }
  main->push_back(conv(o.base_channels * channel_mult(o.n_layers), 1, 1, true));

  // taming's weights_init.
  torch::NoGradGuard no_grad;
  for (auto& m : main->modules(/*include_self=*/false)) {
    if (auto* c = m->as<Conv2d>()) {
      init::normal_(c->weight, 0.0, 0.02);
    } else if (auto* g = m->as<GroupNorm>()) {
      init::normal_(g->weight, 1.0, 0.02);
      init::zeros_(g->bias);
    }
  }
}

at::Tensor PatchDiscriminatorImpl::forward(const at::Tensor& x) {
  const int64_t m = options_.min_input_size();
  if (x.dim() != 4 || x.size(1) != options_.in_channels || options_.output_size(x.size(2)) < 1 ||
      options_.output_size(x.size(3)) < 1)
    throw std::invalid_argument(lf::str("PatchDiscriminator: input has shape ", x.sizes(), ", expected [N, ",
                                        options_.in_channels, ", H, W] with H, W >= ", m, " for ",
                                        options_.n_layers, " layers (use fewer layers for small images)"));
  return main->forward(x);
}

at::Tensor hinge_d_loss(const at::Tensor& logits_real, const at::Tensor& logits_fake) {
  return at::relu(1.0 - logits_real).mean() + at::relu(1.0 + logits_fake).mean();
}

at::Tensor hinge_g_loss(const at::Tensor& logits_fake) { return -logits_fake.mean(); }

double adaptive_disc_weight(double nll_grad_norm, double g_grad_norm, double disc_weight) {
  return std::clamp(nll_grad_norm / (g_grad_norm + 1e-4), 0.0, 1e4) * disc_weight;
}

double disc_factor_at(int64_t step, int64_t start, double factor) { return step < start ? 0.0 : factor; }

}  // namespace lf::core
