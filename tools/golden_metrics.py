#!/usr/bin/python3
"""Golden values for tests/core/image_metrics_test.cpp: the Fréchet distance with scipy's
sqrtm (pytorch-fid's calculate_frechet_distance) on small fixed matrices, and SSIM/PSNR of
fixed images computed with an independent numpy/scipy implementation of Wang et al. 2004
(Gaussian window 11, sigma 1.5, valid region, K1=0.01, K2=0.03, data range 1).
Run: /usr/bin/python3 tools/golden_metrics.py"""
import numpy as np
from scipy import linalg
from scipy.ndimage import correlate1d


def fd(mu1, s1, mu2, s2):
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def ssim(a, b):
    x = np.arange(11) - 5.0
    g = np.exp(-x * x / (2 * 1.5 ** 2))
    g /= g.sum()

    def filt(t):
        t = correlate1d(t, g, axis=1, mode="constant")
        t = correlate1d(t, g, axis=0, mode="constant")
        return t[5:-5, 5:-5]  # valid region

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(m.mean())


# Fixed inputs the C++ test rebuilds exactly: A[i][j] = ((i*7 + j*3) % 11) / 10 etc.
d = 4
A = np.array([[((i * 7 + j * 3) % 11) / 10.0 for j in range(d)] for i in range(d)])
B = np.array([[((i * 5 + j * 2 + 1) % 13) / 12.0 for j in range(d)] for i in range(d)])
S1 = A @ A.T + 0.1 * np.eye(d)
S2 = B @ B.T + 0.2 * np.eye(d)
mu1 = np.array([0.1, -0.2, 0.3, 0.0])
mu2 = np.array([0.0, 0.1, -0.1, 0.5])
print("fd", repr(fd(mu1, S1, mu2, S2)))

h = w = 16
img_a = np.array([[((i * 3 + j * 5) % 17) / 16.0 for j in range(w)] for i in range(h)])
img_b = np.clip(img_a + np.array([[((i + 2 * j) % 5 - 2) / 40.0 for j in range(w)] for i in range(h)]), 0, 1)
print("ssim", repr(ssim(img_a, img_b)))
mse = ((img_a - img_b) ** 2).mean()
print("psnr", repr(float(10 * np.log10(1 / mse))))
