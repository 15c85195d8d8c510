// Benchmark of the keyed generator (core/keyed_rng) against ATen's own CPU generator, the
// baseline, in the same run: normals for a batch of samples on one thread.
// Usage: bench_keyed_rng [batch=256] [numbers=256] [repeats=200]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <vector>

#include "core/keyed_rng.h"

namespace {

struct Timing {
  double median_ms, min_ms;
};

// Wall time of `fn` over `repeats` runs after 5 warm-up runs. The minimum estimates the time on
// an idle machine; the median what a shared one gives.
Timing time_ms(int repeats, const std::function<void()>& fn) {
  for (int i = 0; i < 5; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 256;
  const int64_t numbers = argc > 2 ? std::atoll(argv[2]) : 256;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 200;
  at::set_num_threads(1);
  auto idx = at::arange(batch, at::kLong);
  using lf::core::Stream;
  using lf::core::stream_id;

  Timing bits = time_ms(repeats, [&] {
    lf::core::keyed_bits(1, stream_id(Stream::kNoise), 0, idx, numbers);
  });
  Timing normal = time_ms(repeats, [&] {
    lf::core::keyed_normal(1, stream_id(Stream::kNoise), 0, idx, {numbers}, at::kFloat);
  });
  Timing baseline = time_ms(repeats, [&] { at::randn({batch, numbers}); });
  std::printf("keyed_rng, %lld samples x %lld numbers, 1 thread, %d runs: median (min) ms\n",
              static_cast<long long>(batch), static_cast<long long>(numbers), repeats);
  std::printf("  keyed_bits            %8.3f (%.3f)\n", bits.median_ms, bits.min_ms);
  std::printf("  keyed_normal (f32)    %8.3f (%.3f)\n", normal.median_ms, normal.min_ms);
  std::printf("  at::randn (baseline)  %8.3f (%.3f)   keyed_normal/baseline %.1fx\n",
              baseline.median_ms, baseline.min_ms, normal.median_ms / baseline.median_ms);
  return 0;
}
