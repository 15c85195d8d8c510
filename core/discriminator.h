// The PatchGAN discriminator of taming-transformers (NLayerDiscriminator, after pix2pix) as LDM's
// autoencoder loss uses it, the hinge losses, and LDM's adaptive generator weight.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>

#include "core/util/enum_table.h"

namespace lf::core {

// Normalisation after each inner conv. taming uses BatchNorm (or ActNorm); BatchNorm is not
// offered: its batch statistics make a sample's logits depend on the other samples of the
// local batch, and its running statistics are a per-rank stream, so 2 ranks x B/2 would differ
// from 1 rank x B. GroupNorm normalises each sample on its own.
enum class DiscriminatorNorm { kGroup, kNone };
// "group" | "none" (BatchNorm is not offered: its statistics depend on the local batch and rank).
const EnumTable<DiscriminatorNorm>& discriminator_norms();
inline const std::string& to_string(DiscriminatorNorm n) { return discriminator_norms().name(n); }

struct DiscriminatorOptions {
  int64_t in_channels = 1;     // image channels
  int64_t base_channels = 64;  // taming's ndf: channels of the first conv (x2 per layer, max x8)
  int64_t n_layers = 3;        // stride-2 convs after the first; the receptive field grows with it
  DiscriminatorNorm norm = DiscriminatorNorm::kGroup;
  int64_t norm_groups = 32;    // GroupNorm groups; divides every inner channel count

  // Side of the logit map for an input side s (0 when s is too small), and the smallest s with
  // at least one logit (24 for 3 layers).
  int64_t output_size(int64_t s) const;
  int64_t min_input_size() const;
  // Throws std::invalid_argument naming every bad field, its value and the allowed range.
  void validate() const;
};

// conv 4x4 s2 + LeakyReLU(0.2); n_layers-1 x [conv 4x4 s2, norm, LeakyReLU]; conv 4x4 s1, norm,
// LeakyReLU; conv 4x4 s1 -> one logit per patch [N, 1, h, w]. Convs are initialised N(0, 0.02)
// and norm weights N(1, 0.02) as taming's weights_init, from torch's global generator: seed it
// identically on every rank (or broadcast the parameters) before construction.
class PatchDiscriminatorImpl : public torch::nn::Module {
 public:
  explicit PatchDiscriminatorImpl(DiscriminatorOptions options = {});  // validates options
  // x [N, in_channels, H, W] with H, W >= min_input_size(); throws std::invalid_argument else.
  at::Tensor forward(const at::Tensor& x);
  const DiscriminatorOptions& options() const { return options_; }

  torch::nn::Sequential main{nullptr};

 private:
  DiscriminatorOptions options_;
};
TORCH_MODULE(PatchDiscriminator);

// Hinge loss of the discriminator: mean(relu(1 - real)) + mean(relu(1 + fake)) (Lim & Ye 2017;
// taming's hinge_d_loss halves this sum, which Adam's scale invariance makes immaterial).
at::Tensor hinge_d_loss(const at::Tensor& logits_real, const at::Tensor& logits_fake);
// Generator loss: -mean(fake logits) (taming's VQLPIPSWithDiscriminator / LDM's
// LPIPSWithDiscriminator, g_loss).
at::Tensor hinge_g_loss(const at::Tensor& logits_fake);

// LDM's calculate_adaptive_weight (ldm/modules/losses/contperceptual.py) from the norms of the
// gradients of the reconstruction loss and of g_loss w.r.t. the decoder's last layer, taken
// by the caller (and all-reduced first when data-parallel):
// clamp(nll_grad_norm / (g_grad_norm + 1e-4), 0, 1e4) * disc_weight.
double adaptive_disc_weight(double nll_grad_norm, double g_grad_norm, double disc_weight);

// LDM's adopt_weight: `factor` from step `start` on, 0 before (the discriminator starts late).
double disc_factor_at(int64_t step, int64_t start, double factor);

}  // namespace lf::core
