// Shared by the VAE tests: the deterministic weights and input of tools/vae_golden.py and the
// golden outputs it printed for diffusers' AutoencoderKL (in 3, out 3, latent 4,
// block_out_channels [16, 32], layers_per_block 1, 8 groups), computed in float64.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "core/vae.h"

namespace lf::core::test {

inline VAEOptions golden_vae_options() {
  VAEOptions o;
  o.in_channels = 3;
  o.out_channels = 3;
  o.latent_channels = 4;
  o.block_out_channels = {16, 32};
  o.layers_per_block = 1;
  o.norm_num_groups = 8;
  o.sample_size = 8;
  return o;
}

// tools/vae_golden.py fill(): tensor k in name order, element j.
inline void golden_fill(TensorMap& tensors) {
  int64_t k = 0;
  for (auto& [name, t] : tensors) {
    at::Tensor j = at::arange(t.numel(), at::TensorOptions().dtype(at::kDouble));
    at::Tensor s = at::sin(0.7 * j + 1.3 * static_cast<double>(k));
    at::Tensor v;
    const bool norm_weight = name.find("norm") != std::string::npos &&
                             name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (norm_weight)
      v = 1 + 0.1 * s;
    else if (t.dim() >= 2)
      v = s / std::sqrt(static_cast<double>(t.numel() / t.size(0)));
    else
      v = 0.1 * s;
    t = v.view(t.sizes()).to(t.scalar_type());
    ++k;
  }
}

inline at::Tensor golden_input() {
  return at::sin(0.31 * at::arange(2 * 3 * 8 * 8, at::TensorOptions().dtype(at::kDouble)))
      .view({2, 3, 8, 8});
}

struct GoldenTensor {
  double sum, abs_sum;
  std::vector<std::pair<int64_t, double>> at;
};

// Printed by /usr/bin/python3 tools/vae_golden.py (124 keys, 167959 parameters).
inline const GoldenTensor kGoldenMean{13.8545858055, 94.5783999893,
                                      {{0, 0.723293408054}, {1, 0.784521588291}, {42, 1.48814614024},
                                       {64, -0.0366700525895}, {127, 0.115019116941}}};
inline const GoldenTensor kGoldenLogvar{-18.4033350483, 91.1606733722,
                                        {{0, -1.3360416}, {1, -1.41530089639}, {42, -0.931670405307},
                                         {64, -0.702692647205}, {127, -0.324022616837}}};
inline const GoldenTensor kGoldenRec{2.94864163114, 306.118901993,
                                     {{0, -0.311739961429}, {1, -0.424430421116}, {128, -0.110316200865},
                                      {192, -0.554381857075}, {383, 0.552209474249}}};
constexpr int64_t kGoldenKeys = 124, kGoldenParams = 167959;

inline void expect_golden(const at::Tensor& t, const GoldenTensor& g, const char* what) {
  at::Tensor f = t.detach().to(at::kDouble).flatten();
  EXPECT_NEAR(f.sum().item<double>(), g.sum, 1e-8) << what;
  EXPECT_NEAR(f.abs().sum().item<double>(), g.abs_sum, 1e-8) << what;
  for (const auto& [i, v] : g.at) EXPECT_NEAR(f[i].item<double>(), v, 1e-9) << what << "[" << i << "]";
}

}  // namespace lf::core::test
