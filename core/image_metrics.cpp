// PSNR, SSIM and the Fréchet distance (see image_metrics.h).
#include "core/image_metrics.h"

#include <cmath>

namespace lf::core {

at::Tensor psnr(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "psnr: shapes differ: ", a.sizes(), " vs ", b.sizes());
  at::Tensor mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).flatten(1).mean(1);
  return 10.0 * at::log10(1.0 / mse);
}

double mean_psnr(const at::Tensor& a, const at::Tensor& b) {
  return psnr(a, b).clamp_max(100.0).mean().item<double>();
}

at::Tensor ssim(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 4 && a.sizes() == b.sizes(), "ssim: expected equal [N,C,H,W] shapes, got ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.size(2) >= 11 && a.size(3) >= 11, "ssim: images must be at least 11x11, got ", a.sizes());
  const int64_t win = 11;
  const double sigma = 1.5;
  at::Tensor x = at::arange(win, at::kDouble) - (win - 1) / 2.0;
  at::Tensor g = at::exp(-(x * x) / (2 * sigma * sigma));
  g = g / g.sum();
  const int64_t c = a.size(1);
  at::Tensor kh = g.view({1, 1, 1, win}).repeat({c, 1, 1, 1});
  at::Tensor kv = g.view({1, 1, win, 1}).repeat({c, 1, 1, 1});
  auto filt = [&](const at::Tensor& t) {
    return at::conv2d(at::conv2d(t, kh, at::Tensor(), at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, c), kv, at::Tensor(), at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, c);
  };
  at::Tensor A = a.to(at::kDouble), B = b.to(at::kDouble);
  at::Tensor mu_a = filt(A), mu_b = filt(B);
  at::Tensor saa = filt(A * A) - mu_a * mu_a;
  at::Tensor sbb = filt(B * B) - mu_b * mu_b;
  at::Tensor sab = filt(A * B) - mu_a * mu_b;
  const double c1 = std::pow(0.01, 2), c2 = std::pow(0.03, 2);
  at::Tensor map = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2));
  return map.flatten(1).mean(1);
}

std::pair<at::Tensor, at::Tensor> feature_statistics(const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 2 && features.size(0) >= 2, "feature_statistics: expected [N >= 2, D], got ",
              features.sizes());
  at::Tensor f = features.to(at::kDouble);
  at::Tensor mu = f.mean(0);
  at::Tensor centered = f - mu;
  at::Tensor cov = centered.t().matmul(centered) / static_cast<double>(f.size(0) - 1);
  return {mu, cov};
}

at::Tensor sqrtm_psd(const at::Tensor& m) {
  at::Tensor sym = (m.to(at::kDouble) + m.to(at::kDouble).t()) / 2;
  auto [evals, evecs] = at::linalg_eigh(sym);
  return evecs.matmul(at::diag(evals.clamp_min(0).sqrt())).matmul(evecs.t());
}

double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1, const at::Tensor& mu2,
                        const at::Tensor& sigma2) {
  TORCH_CHECK(mu1.sizes() == mu2.sizes() && sigma1.sizes() == sigma2.sizes(),
              "frechet_distance: statistics of different dimensions");
  at::Tensor s1 = sigma1.to(at::kDouble), s2 = sigma2.to(at::kDouble);
  at::Tensor r1 = sqrtm_psd(s1);
  at::Tensor inner = r1.matmul(s2).matmul(r1);
  inner = (inner + inner.t()) / 2;
  double tr_sqrt = at::linalg_eigvalsh(inner).clamp_min(0).sqrt().sum().item<double>();
  double diff = (mu1.to(at::kDouble) - mu2.to(at::kDouble)).pow(2).sum().item<double>();
  return diff + s1.trace().item<double>() + s2.trace().item<double>() - 2 * tr_sqrt;
}

}  // namespace lf::core
