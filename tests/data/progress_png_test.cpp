// Tests of core/util/progress (line format, rate and ETA, in-place vs periodic output) and
// core/util/png (grid layout, PNG bytes decoded back by stb_image).
#include <gtest/gtest.h>

#include <stb_image.h>

#include <thread>

#include "core/util/png.h"
#include "core/util/progress.h"
#include "data_test_util.h"

namespace lf {
namespace {

TEST(Progress, LineHasCountsPercentRateAndEta) {
  std::vector<std::pair<std::string, bool>> lines;
  auto sink = [&](const std::string& l, bool in_place) { lines.emplace_back(l, in_place); };
  {
    Progress p("encode", 60000, "images", 3600.0, sink, /*terminal=*/false);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    p.update(3000);
    // Not a terminal and the interval has not passed: nothing printed yet.
    EXPECT_TRUE(lines.empty());
    std::string l = p.line();
    EXPECT_EQ(l.rfind("encode 3,000/60,000 images (5.0%) ", 0), 0u) << l;
    EXPECT_NE(l.find(" images/s ETA "), std::string::npos) << l;
    // rate = 3000 / elapsed; ETA = 57000 / rate = 19 x elapsed (at least 19 x 20 ms).
    EXPECT_GT(p.rate(), 0);
    EXPECT_LT(p.rate(), 3000 / 0.02 + 1);
    p.finish();
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_FALSE(lines[0].second);
    EXPECT_NE(lines[0].first.find(" in "), std::string::npos) << lines[0].first;
  }
  EXPECT_EQ(lines.size(), 1u) << "finish() must print once, not again in the destructor";
}

TEST(Progress, TerminalRedrawsInPlaceAndEndsTheLine) {
  std::vector<std::pair<std::string, bool>> lines;
  auto sink = [&](const std::string& l, bool in_place) { lines.emplace_back(l, in_place); };
  Progress p("train", 0, "steps", 10.0, sink, /*terminal=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  p.add(5);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(lines[0].second);
  EXPECT_EQ(lines[0].first.rfind("train 5 steps ", 0), 0u) << lines[0].first;
  EXPECT_EQ(lines[0].first.find("ETA"), std::string::npos) << "no ETA without a total";
  p.add(1);  // within 0.1 s of the last draw: skipped
  EXPECT_EQ(lines.size(), 1u);
  p.finish();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], std::make_pair(std::string(), false));
}

TEST(Png, GridLayoutAndRoundTripThroughStb) {
  // 3 images 1x2x2 in a row of 2: grid [1, 2*(2+1)+1, 2*(2+1)+1] = [1, 7, 7].
  at::Tensor im = at::tensor({-1.0f, 1.0f, 0.0f, 0.5f}).view({1, 1, 2, 2}).repeat({3, 1, 1, 1});
  im[2].fill_(1.0f);
  at::Tensor g = make_grid(im, 2, 1, 9);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{1, 7, 7}));
  EXPECT_EQ(g[0][0][0].item<uint8_t>(), 9);              // padding
  EXPECT_EQ(g[0][1][1].item<uint8_t>(), 0);              // -1
  EXPECT_EQ(g[0][1][2].item<uint8_t>(), 255);            // +1
  EXPECT_EQ(g[0][2][1].item<uint8_t>(), 128);            // 0 -> 127.5 rounds to 128
  EXPECT_EQ(g[0][2][2].item<uint8_t>(), 191);            // 0.5 -> 191.25
  EXPECT_EQ(g[0][4][1].item<uint8_t>(), 255);            // third image, second row
  EXPECT_EQ(g[0][4][4].item<uint8_t>(), 9);              // empty slot keeps the padding

  at::Tensor rgb = lf::data::testing::pattern_image(3, 5, 7, 1);
  std::string png = encode_png(rgb);
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(png.data()),
                                            static_cast<int>(png.size()), &w, &h, &c, 0);
  ASSERT_NE(px, nullptr);
  EXPECT_EQ(w, 7);
  EXPECT_EQ(h, 5);
  EXPECT_EQ(c, 3);
  at::Tensor back = at::from_blob(px, {5, 7, 3}, at::kByte).permute({2, 0, 1}).clone();
  stbi_image_free(px);
  EXPECT_TRUE(back.equal(rgb));

  const std::string path = lf::data::testing::scratch_dir() + "/grid.png";
  write_png_grid(path, im, 2);
  EXPECT_EQ(lf::data::testing::slurp(path), encode_png(make_grid(im, 2)));
  EXPECT_THROW(encode_png(at::zeros({2, 4, 4}, at::kByte)), std::invalid_argument);
  EXPECT_THROW(make_grid(at::zeros({4, 4})), std::invalid_argument);
}

}  // namespace
}  // namespace lf
