// Helpers shared by the data/ tests: scratch directories, tiny IDX and PNG writers, a
// deterministic synthetic source and fake encoders.
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "core/util/png.h"
#include "data/encode.h"
#include "data/source.h"

namespace lf::data::testing {

namespace fs = std::filesystem;

// A fresh directory under $LF_TEST_TMP (or /tmp) named after the running test. Outside a test
// body (a suite's SetUpTestSuite) it is named after the suite and this process: ctest runs each
// test of a suite as its own process, in parallel, and each runs SetUpTestSuite.
inline std::string scratch_dir(const std::string& tag = "") {
  const char* base = std::getenv("LF_TEST_TMP");
  const auto* unit = ::testing::UnitTest::GetInstance();
  const auto* info = unit->current_test_info();
  const auto* suite = unit->current_test_suite();
  std::string name = std::string("data-");
  if (info)
    name += std::string(info->test_suite_name()) + "-" + info->name();
  else
    name += std::string(suite ? suite->name() : "nosuite") + "-setup-" + std::to_string(::getpid());
  name += tag;
  for (char& c : name)
    if (c == '/') c = '_';
  fs::path p = fs::path(base && *base ? base : "/tmp") / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

inline void write_bytes(const std::string& path, const std::string& bytes, bool gz) {
  fs::create_directories(fs::path(path).parent_path());
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_TRUE(f != nullptr) << path;
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

// IDX bytes: magic (0, 0, 8, ndim), big-endian dims, data.
inline std::string idx_bytes(const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (int64_t d : dims)
    for (int sh = 24; sh >= 0; sh -= 8) s += static_cast<char>((d >> sh) & 0xFF);
  s.append(reinterpret_cast<const char*>(data.data()), data.size());
  return s;
}

// Image i of a synthetic 28x28 IDX set: pixel (y, x) = (i * 7 + y * 3 + x) % 256.
inline uint8_t idx_pixel(int64_t i, int64_t y, int64_t x) {
  return static_cast<uint8_t>((i * 7 + y * 3 + x) % 256);
}

// Writes <prefix>-images-idx3-ubyte[.gz] and labels (label i = i % 10) with n images.
inline void write_idx_set(const std::string& dir, const std::string& prefix, int64_t n, bool gz) {
  std::vector<uint8_t> px, lb;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) px.push_back(idx_pixel(i, y, x));
    lb.push_back(static_cast<uint8_t>(i % 10));
  }
  const std::string ext = gz ? ".gz" : "";
  write_bytes(dir + "/" + prefix + "-images-idx3-ubyte" + ext, idx_bytes({n, 28, 28}, px), gz);
  write_bytes(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, idx_bytes({n}, lb), gz);
}

// A uint8 [C,H,W] image with a deterministic pattern, written as PNG.
inline at::Tensor pattern_image(int64_t c, int64_t h, int64_t w, int64_t seed) {
  at::Tensor t = at::arange(c * h * w, at::kLong).reshape({c, h, w});
  return ((t * 37 + seed * 101) % 251).to(at::kByte);
}
inline void write_png_file(const std::string& path, const at::Tensor& chw) {
  fs::create_directories(fs::path(path).parent_path());
  lf::write_png(path, chw);
}

// n synthetic images [n, C, 32, 32] in [-1, 1] with labels i % 3.
inline std::unique_ptr<InMemorySource> synthetic_source(int64_t n, int64_t c = 1) {
  at::Tensor i = at::arange(n, at::kDouble).view({n, 1, 1, 1});
  at::Tensor ch = at::arange(c, at::kDouble).view({1, c, 1, 1});
  at::Tensor y = at::arange(32, at::kDouble).view({1, 1, 32, 1});
  at::Tensor x = at::arange(32, at::kDouble).view({1, 1, 1, 32});
  at::Tensor img = at::sin(i * 0.37 + ch * 1.3 + y * 0.21 - x * 0.13 + y * x * 0.01)
                       .to(at::kFloat);
  at::Tensor labels = at::arange(n, at::kLong) % 3;
  return std::make_unique<InMemorySource>(img, labels, std::vector<std::string>{"a", "b", "c"},
                                          nlohmann::json{{"kind", "synthetic"}, {"n", n}});
}

// A deterministic fake VAE encoder: 4x4 average pooling, then a fixed linear map from C image
// channels to 4 latent channels; logvar = 0.5 * tanh(mean) - 1. Flipped inputs are encoded
// the same way (they are different images).
inline EncodedBatch fake_moments(const at::Tensor& images) {
  at::Tensor pooled = at::avg_pool2d(images, {4, 4});
  const int64_t c = images.size(1);
  at::Tensor w = (at::arange(4 * c, at::kFloat).reshape({4, c}) * 0.3 - 0.5).sin();
  at::Tensor mean = at::einsum("oc,nchw->nohw", {w, pooled}) * 2.5;
  return {mean, at::tanh(mean) * 0.5 - 1.0, {}};
}
inline EncodeFn fake_encoder() {
  return [](const at::Tensor& im, const at::Tensor&, bool) { return fake_moments(im); };
}
// A "sample" encoder that returns the image itself (identity).
inline EncodeFn identity_sample_encoder() {
  return [](const at::Tensor& im, const at::Tensor&, bool) {
    return EncodedBatch{{}, {}, im.clone()};
  };
}

inline EncodeOptions small_options(const std::string& dir) {
  EncodeOptions o;
  o.cache_dir = dir;
  o.shard_size = 16;
  o.batch_size = 7;  // not a divisor of the shard size, on purpose
  o.vae_hash = std::string(64, 'a');
  o.vae_config = {{"latent_channels", 4}, {"f", 4}};
  o.progress = false;
  return o;
}

// Reads a whole file as bytes.
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Max |a - b| for float tensors.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

using lf::testing::error_of;

}  // namespace lf::data::testing
