// Forward and forward+backward time of the denoiser UNet (default options unless overridden)
// on latents [B, 4, 8, 8]; the baseline in the same run is the same network without
// self-attention outside the middle block, which shows what attention costs.
// Usage: bench_unet_step [batch=128] [iterations=5] [threads=0 (LibTorch's default)]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/state_dict.h"
#include "core/unet.h"

namespace {

struct Timing {
  double forward_ms, step_ms;
};

Timing measure(lf::core::UNet& net, int64_t batch, int iterations) {
  at::Tensor x = torch::randn({batch, net->options().in_channels, 8, 8});
  at::Tensor t = torch::randint(0, 1000, {batch}, torch::kLong);
  at::Tensor y = net->options().num_classes ? torch::randint(0, net->options().num_classes, {batch}, torch::kLong)
                                            : at::Tensor();
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  {  // warm-up
    net->forward(x, t, y).pow(2).mean().backward();
  }
  double fwd = 0, step = 0;
  for (int i = 0; i < iterations; ++i) {
    auto a = clock::now();
    {
      torch::NoGradGuard no_grad;
      net->forward(x, t, y);
    }
    auto b = clock::now();
    for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
    net->forward(x, t, y).pow(2).mean().backward();
    auto c = clock::now();
    fwd += ms(a, b);
    step += ms(b, c);
  }
  return {fwd / iterations, step / iterations};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 128;
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 5;
  if (argc > 3 && std::atoi(argv[3]) > 0) torch::set_num_threads(std::atoi(argv[3]));
  torch::manual_seed(0);
  lf::core::UNetOptions o;
  o.num_classes = 10;
  lf::core::UNet net(o);
  lf::core::UNetOptions base_o = o;
  base_o.attention_ds = {};
  lf::core::UNet base(base_o);
  std::printf("UNet default (num_classes 10): %lld parameters; batch %lld x 4x8x8, %d threads\n",
              static_cast<long long>(lf::core::count_parameters(*net)), static_cast<long long>(batch),
              torch::get_num_threads());
  const Timing a = measure(net, batch, iterations);
  const Timing b = measure(base, batch, iterations);
  std::printf("%-32s forward %8.1f ms   forward+backward %8.1f ms\n", "default", a.forward_ms, a.step_ms);
  std::printf("%-32s forward %8.1f ms   forward+backward %8.1f ms\n", "baseline: attention_ds = {}",
              b.forward_ms, b.step_ms);
  return 0;
}
