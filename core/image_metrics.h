// Image-quality and distribution metrics used by evaluation: PSNR, SSIM (Wang et al. 2004,
// 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, as skimage/pytorch-msssim), and the
// Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017, the FID
// formula; pytorch-fid's calculate_frechet_distance).
#pragma once
#include <ATen/ATen.h>

namespace lf::core {

// Per-image PSNR in dB of images scaled to [0, 1] (peak 1): 10 log10(1 / MSE). [N] float64.
// An exact match gives +inf; callers averaging should cap it (mean_psnr does, at 100 dB).
at::Tensor psnr(const at::Tensor& a, const at::Tensor& b);
double mean_psnr(const at::Tensor& a, const at::Tensor& b);

// Per-image SSIM of images in [0, 1] ([N,C,H,W]; channels averaged), valid-mode Gaussian
// filtering (no padding), as skimage.metrics.structural_similarity(gaussian_weights=True,
// sigma=1.5, use_sample_covariance=False, data_range=1). [N] float64. H, W >= 11.
at::Tensor ssim(const at::Tensor& a, const at::Tensor& b);

// Mean [D] and covariance [D, D] (unbiased, as numpy.cov) of features [N, D], in float64.
std::pair<at::Tensor, at::Tensor> feature_statistics(const at::Tensor& features);

// ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)); the trace of the square root is
// computed as the sum of sqrt(eigenvalues) of S1^(1/2) S2 S1^(1/2), which is symmetric PSD
// (negative round-off eigenvalues are clamped to 0). float64 throughout.
double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1, const at::Tensor& mu2,
                        const at::Tensor& sigma2);

// The principal square root of a symmetric PSD matrix (eigendecomposition).
at::Tensor sqrtm_psd(const at::Tensor& m);

}  // namespace lf::core
