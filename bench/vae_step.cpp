// Training-step time of the autoencoder on 1x32x32 images (the Fashion-MNIST quickstart):
// the default options against block_out_channels {32, 64, 64} as the baseline in the same run.
// Usage: bench_vae_step [batch=64] [iterations=5] [threads=0 (LibTorch's default)]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/state_dict.h"
#include "core/vae.h"

namespace {

double step_ms(lf::core::VAE& vae, int64_t batch, int iterations) {
  at::Tensor x = torch::rand({batch, 1, 32, 32}) * 2 - 1;
  auto step = [&] {
    lf::core::DiagonalGaussian post = vae->encode(x);
    at::Tensor rec = vae->decode(post.sample(torch::randn_like(post.mean())));
    for (auto& p : vae->parameters()) p.mutable_grad() = at::Tensor();
    lf::core::vae_loss(x, rec, post, lf::core::ReconLoss::kL1, 1e-6).total.backward();
  };
  step();  // warm-up
  auto a = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) step();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 64;
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 5;
  if (argc > 3 && std::atoi(argv[3]) > 0) torch::set_num_threads(std::atoi(argv[3]));
  torch::manual_seed(0);
  lf::core::VAE vae;
  lf::core::VAEOptions wide;
  wide.block_out_channels = {32, 64, 64};
  lf::core::VAE base(wide);
  std::printf("VAE step (encode, sample, decode, L1 + KL, backward), batch %lld x 1x32x32, %d threads\n",
              static_cast<long long>(batch), torch::get_num_threads());
  std::printf("%-34s %9lld parameters %8.1f ms/step\n", "default {32, 32, 32}",
              static_cast<long long>(lf::core::count_parameters(*vae)), step_ms(vae, batch, iterations));
  std::printf("%-34s %9lld parameters %8.1f ms/step\n", "baseline {32, 64, 64}",
              static_cast<long long>(lf::core::count_parameters(*base)), step_ms(base, batch, iterations));
  return 0;
}
