// Helpers for the core model tests: per-test temporary directories, exception-message checks,
// and tensor comparisons that print the first differing entries.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/nn/functional/upsampling.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace lf::core::test {

// A fresh directory under $LF_TEST_TMP (or /tmp), removed at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    const char* root = std::getenv("LF_TEST_TMP");
    path_ = std::filesystem::path(root && *root ? root : "/tmp") /
            (name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

using lf::testing::ExpectThrowContains;

// Max |a - b| and the first index where |a - b| > tol, for failure messages.
inline std::string describe_difference(const at::Tensor& a, const at::Tensor& b, double tol) {
  at::Tensor fa = a.detach().to(at::kDouble).flatten(), fb = b.detach().to(at::kDouble).flatten();
  if (fa.numel() != fb.numel()) return "sizes differ";
  at::Tensor d = (fa - fb).abs();
  std::string out = "max abs error " + std::to_string(d.numel() ? d.max().item<double>() : 0.0);
  at::Tensor bad = (d > tol).nonzero();
  for (int64_t i = 0; i < std::min<int64_t>(bad.size(0), 5); ++i) {
    const int64_t k = bad[i][0].item<int64_t>();
    out += "; [" + std::to_string(k) + "] " + std::to_string(fa[k].item<double>()) + " vs " +
           std::to_string(fb[k].item<double>());
  }
  return out;
}

// Bilinear upsampling to size x size: smooth, learnable test images from a few random values.
inline at::Tensor smooth_upsample(const at::Tensor& x, int64_t size) {
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size, size})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

// |a - b| <= tol everywhere (and equal shapes); each argument is evaluated once.
inline ::testing::AssertionResult all_close(const at::Tensor& a, const at::Tensor& b, double tol) {
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shapes differ: " << a.sizes() << " vs " << b.sizes();
  const double err =
      a.numel() ? (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>() : 0.0;
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << describe_difference(a, b, tol);
}

#define LF_EXPECT_CLOSE(a, b, tol) EXPECT_TRUE(::lf::core::test::all_close((a), (b), (tol)))

}  // namespace lf::core::test
