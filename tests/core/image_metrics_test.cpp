// PSNR, SSIM and the Fréchet distance against closed forms and golden values from
// tools/golden_metrics.py (scipy's sqrtm and an independent numpy SSIM).
#include <gtest/gtest.h>

#include <cmath>

#include "core/image_metrics.h"
#include "core/keyed_rng.h"

namespace lf::core {
namespace {

TEST(FrechetDistance, ClosedFormForDiagonalGaussians) {
  // For commuting (diagonal) covariances: ||mu1-mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  at::Tensor a = at::tensor({1.0, 4.0, 9.0}, at::kDouble), b = at::tensor({4.0, 1.0, 0.25}, at::kDouble);
  at::Tensor m1 = at::tensor({0.0, 1.0, 2.0}, at::kDouble), m2 = at::tensor({1.0, 1.0, 0.0}, at::kDouble);
  double want = 1 + 0 + 4 + std::pow(1 - 2, 2) + std::pow(2 - 1, 2) + std::pow(3 - 0.5, 2);
  EXPECT_NEAR(frechet_distance(m1, at::diag(a), m2, at::diag(b)), want, 1e-10);
  // Rotating both by the same orthogonal matrix leaves it unchanged.
  at::Tensor q = std::get<0>(at::linalg_qr(at::randn({3, 3}, at::kDouble)));
  EXPECT_NEAR(frechet_distance(q.matmul(m1), q.matmul(at::diag(a)).matmul(q.t()), q.matmul(m2),
                               q.matmul(at::diag(b)).matmul(q.t())),
              want, 1e-9);
  // Identical distributions: zero.
  EXPECT_NEAR(frechet_distance(m1, at::diag(a), m1, at::diag(a)), 0.0, 1e-10);
}

TEST(FrechetDistance, MatchesScipyGolden) {
  const int d = 4;
  at::Tensor A = at::empty({d, d}, at::kDouble), B = at::empty({d, d}, at::kDouble);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      A[i][j] = ((i * 7 + j * 3) % 11) / 10.0;
      B[i][j] = ((i * 5 + j * 2 + 1) % 13) / 12.0;
    }
  at::Tensor s1 = A.matmul(A.t()) + 0.1 * at::eye(d, at::kDouble);
  at::Tensor s2 = B.matmul(B.t()) + 0.2 * at::eye(d, at::kDouble);
  at::Tensor mu1 = at::tensor({0.1, -0.2, 0.3, 0.0}, at::kDouble), mu2 = at::tensor({0.0, 0.1, -0.1, 0.5}, at::kDouble);
  EXPECT_NEAR(frechet_distance(mu1, s1, mu2, s2), 0.9546514152324796, 1e-9);
}

TEST(FrechetDistance, StatisticsOfSamplesApproachTheTruth) {
  // Keyed draws: the same numbers whatever the thread count (torch's parallel randn is not).
  at::Tensor f = keyed_normal(7, 0, 0, at::arange(20000, at::kLong), {3}, at::TensorOptions().dtype(at::kDouble)) *
                 at::tensor({1.0, 2.0, 0.5}, at::kDouble);
  auto [mu, cov] = feature_statistics(f);
  EXPECT_LT((mu).abs().max().item<double>(), 0.05);
  EXPECT_NEAR(cov[1][1].item<double>(), 4.0, 0.15);
  EXPECT_NEAR(cov[0][2].item<double>(), 0.0, 0.05);
}

TEST(ImageMetrics, SsimAndPsnrMatchGolden) {
  const int h = 16, w = 16;
  at::Tensor a = at::empty({1, 1, h, w}, at::kDouble), b = at::empty({1, 1, h, w}, at::kDouble);
  for (int i = 0; i < h; ++i)
    for (int j = 0; j < w; ++j) {
      double va = ((i * 3 + j * 5) % 17) / 16.0;
      a[0][0][i][j] = va;
      b[0][0][i][j] = std::min(1.0, std::max(0.0, va + (((i + 2 * j) % 5) - 2) / 40.0));
    }
  EXPECT_NEAR(ssim(a, b)[0].item<double>(), 0.9938651938299442, 1e-10);
  EXPECT_NEAR(psnr(a, b)[0].item<double>(), 29.248309867531397, 1e-9);
  EXPECT_NEAR(ssim(a, a)[0].item<double>(), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(mean_psnr(a, a), 100.0);
}

}  // namespace
}  // namespace lf::core
