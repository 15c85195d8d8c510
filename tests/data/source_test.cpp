// Tests of the image sources: IDX (gzipped and plain, padding, label names, bad files), image
// folders (class subfolders, unlabelled, resize + crop, bad files, skip_bad), and the real
// Fashion-MNIST files when installed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <stb_image_write.h>

#include "data/encode.h"
#include "data/idx_source.h"
#include "data/image_folder_source.h"
#include "data/image_transform.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

class IdxSource : public ::testing::TestWithParam<bool> {};

TEST_P(IdxSource, ReadsPadsAndScales) {
  const bool gz = GetParam();
  std::string dir = scratch_dir(gz ? "-gz" : "-plain");
  write_idx_set(dir, "train", 5, gz);
  write_idx_set(dir, "t10k", 3, gz);
  SourceOptions o;
  o.path = dir;
  auto src = open_source(o);
  ASSERT_EQ(src->size(), 5);
  EXPECT_EQ(src->channels(), 1);
  EXPECT_EQ(src->height(), 32);
  EXPECT_EQ(src->width(), 32);
  EXPECT_EQ(src->description()["kind"], "idx");
  // Unknown directory name: generic label names 0..max label.
  EXPECT_EQ(src->label_names(), (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  SourceBatch b = src->get(1, 4);
  ASSERT_EQ(b.images.sizes(), (std::vector<int64_t>{3, 1, 32, 32}));
  EXPECT_EQ(b.labels[0].item<int64_t>(), 1);
  // Padding: the 2-pixel border is background (0 -> -1), the interior is the image.
  EXPECT_EQ(b.images[0][0][0][0].item<float>(), -1.0f);
  EXPECT_EQ(b.images[0][0][31][31].item<float>(), -1.0f);
  EXPECT_EQ(b.images[0][0][1][5].item<float>(), -1.0f);
  for (int64_t y : {0, 13, 27})
    for (int64_t x : {0, 5, 27})
      EXPECT_FLOAT_EQ(b.images[2][0][y + 2][x + 2].item<float>(),
                      idx_pixel(3, y, x) / 127.5f - 1.0f)
          << "y " << y << " x " << x;
  EXPECT_GE(b.images.min().item<float>(), -1.0f);
  EXPECT_LE(b.images.max().item<float>(), 1.0f);

  o.split = "test";
  EXPECT_EQ(open_source(o)->size(), 3);
  o.channels = 3;
  auto rgb = open_source(o);
  SourceBatch c = rgb->get(0, 1);
  ASSERT_EQ(c.images.size(1), 3);
  EXPECT_TRUE(c.images[0][0].equal(c.images[0][2]));
}
INSTANTIATE_TEST_SUITE_P(GzAndPlain, IdxSource, ::testing::Values(true, false));

TEST(IdxSourceNames, DatasetHintAndPathDetection) {
  EXPECT_EQ(idx_label_names("auto", "/x/fashion-mnist", 9)[0], "T-shirt/top");
  EXPECT_EQ(idx_label_names("auto", "/x/fashion-mnist", 9)[9], "Ankle boot");
  EXPECT_EQ(idx_label_names("auto", "/x/MNIST", 9)[9], "9");
  EXPECT_EQ(idx_label_names("fashion-mnist", "/x/data", 3).size(), 10u);
  EXPECT_EQ(idx_label_names("generic", "/x/fashion", 2).size(), 3u);
  EXPECT_NE(error_of([] { idx_label_names("mnist", "/x", 12); }).find("label set is chosen from the path"),
            std::string::npos);
}

TEST(IdxSourceErrors, TruncatedAndEmptyFilesAreNamed) {
  std::string dir = scratch_dir();
  write_idx_set(dir, "train", 4, false);
  const std::string images = dir + "/train-images-idx3-ubyte";
  std::string bytes = slurp(images);
  // Cut the last image in half.
  write_bytes(images, bytes.substr(0, bytes.size() - 28 * 14), false);
  SourceOptions o;
  o.path = dir;
  std::string err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find(images), std::string::npos) << err;
  EXPECT_NE(err.find("truncated IDX file"), std::string::npos) << err;
  // skip_bad keeps the complete images and lists the file.
  o.skip_bad = true;
  auto src = open_source(o);
  EXPECT_EQ(src->size(), 3);
  ASSERT_EQ(src->skipped().size(), 1u);
  EXPECT_EQ(src->skipped()[0].path, images);
  EXPECT_NE(src->skipped()[0].reason.find("3 complete records"), std::string::npos);
  // An empty file is an error even with skip_bad (nothing could be used).
  write_bytes(images, "", false);
  err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find(images + ": empty file"), std::string::npos) << err;
  // A wrong magic number.
  write_bytes(images, "GIF89a....", false);
  err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find("not an IDX file"), std::string::npos) << err;
  // A lying header cannot make us allocate: 2^30 images of 28x28 is refused as corrupt.
  write_bytes(images, idx_bytes({1000000000, 28, 28}, {}), false);
  err = error_of([&] { read_idx(images); });
  EXPECT_NE(err.find("header is corrupt"), std::string::npos) << err;
}

TEST(ImageFolder, ClassSubfoldersLabelsAndResizeCrop) {
  std::string dir = scratch_dir();
  // Class names sort as "cat" < "dog" < "zebra" regardless of creation order.
  write_png_file(dir + "/zebra/b.png", pattern_image(3, 40, 40, 1));
  write_png_file(dir + "/cat/x.png", pattern_image(3, 16, 16, 2));
  write_png_file(dir + "/cat/a.png", pattern_image(1, 16, 16, 3));  // grey, converted to RGB
  write_png_file(dir + "/dog/sub/c.png", pattern_image(3, 16, 16, 4));
  std::ofstream(dir + "/cat/notes.txt") << "not an image";
  SourceOptions o;
  o.path = dir;
  o.kind = "folder";
  o.resolution = 8;
  auto src = open_source(o);
  ASSERT_EQ(src->size(), 4);
  EXPECT_EQ(src->label_names(), (std::vector<std::string>{"cat", "dog", "zebra"}));
  EXPECT_EQ(src->channels(), 3);
  auto* folder = dynamic_cast<ImageFolderSource*>(src.get());
  ASSERT_NE(folder, nullptr);
  EXPECT_EQ(fs::path(folder->files()[0]).filename(), "a.png");
  EXPECT_EQ(fs::path(folder->files()[1]).filename(), "x.png");
  SourceBatch b = src->get(0, 4);
  EXPECT_EQ(b.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(b.labels[2].item<int64_t>(), 1);
  EXPECT_EQ(b.labels[3].item<int64_t>(), 2);
  ASSERT_EQ(b.images.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  // 16x16 -> 8x8 with the box filter: each output pixel is the mean of a 2x2 block.
  at::Tensor x = pattern_image(3, 16, 16, 2).to(at::kDouble);
  at::Tensor want = at::avg_pool2d(x.unsqueeze(0), {2, 2})[0] / 127.5 - 1.0;
  EXPECT_LE(max_abs_diff(b.images[1], want), 1.0 / 127.5 + 1e-6);
  // Grey PNG read as RGB: three equal channels.
  EXPECT_TRUE(b.images[0][0].equal(b.images[0][1]));
}

TEST(ImageFolder, CentreCropOfAWideImage) {
  // 12x4 image (w x h), left third 0, middle 128, right third 255; resolution 4 keeps the
  // short side (no resize) and crops columns 4..7: all 128.
  Image8 in;
  in.width = 12;
  in.height = 4;
  in.channels = 1;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 12; ++x) in.pixels.push_back(x < 4 ? 0 : x < 8 ? 128 : 255);
  Image8 out = resize_center_crop(in, 4);
  ASSERT_EQ(out.width, 4);
  ASSERT_EQ(out.height, 4);
  for (uint8_t p : out.pixels) EXPECT_EQ(p, 128);
  // Upscaling a constant image stays constant (triangle filter, clamped edges).
  Image8 flat{3, 2, 1, std::vector<uint8_t>(6, 77)};
  Image8 up = resize_center_crop(flat, 6);
  EXPECT_EQ(up.width, 6);
  for (uint8_t p : up.pixels) EXPECT_EQ(p, 77);
}

TEST(ImageFolder, UnlabelledFolderAndJpeg) {
  std::string dir = scratch_dir();
  write_png_file(dir + "/1.png", pattern_image(3, 10, 10, 5));
  at::Tensor hwc = pattern_image(3, 10, 10, 6).permute({1, 2, 0}).contiguous();
  std::string jpg;
  stbi_write_jpg_to_func(
      [](void* ctx, void* data, int size) {
        static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size);
      },
      &jpg, 10, 10, 3, hwc.data_ptr<uint8_t>(), 95);
  write_bytes(dir + "/2.jpg", jpg, false);
  SourceOptions o;
  o.path = dir;
  o.resolution = 10;
  o.channels = 1;
  auto src = open_source(o);
  EXPECT_EQ(src->size(), 2);
  EXPECT_EQ(src->num_classes(), 0);
  SourceBatch b = src->get(0, 2);
  EXPECT_EQ(b.labels.sum().item<int64_t>(), 0);
  EXPECT_EQ(b.images.size(1), 1);
}

TEST(ImageFolder, BadFilesAreNamedOrSkipped) {
  std::string dir = scratch_dir();
  write_png_file(dir + "/a/good.png", pattern_image(3, 8, 8, 1));
  std::string png = lf::encode_png(pattern_image(3, 8, 8, 2));
  write_bytes(dir + "/a/truncated.png", png.substr(0, png.size() / 2), false);
  write_bytes(dir + "/b/empty.png", "", false);
  write_bytes(dir + "/b/garbage.jpg", "this is not a jpeg at all", false);
  write_png_file(dir + "/b/good2.png", pattern_image(3, 8, 8, 3));
  SourceOptions o;
  o.path = dir;
  o.resolution = 8;
  std::string err = error_of([&] { open_source(o); });
  // Its IDAT chunk reaches past the end of the file: refused from the chunk walk, before stb.
  EXPECT_NE(err.find(dir + "/a/truncated.png: truncated or corrupt PNG: chunk IDAT"), std::string::npos) << err;
  EXPECT_NE(err.find("skip_bad"), std::string::npos) << err;
  o.skip_bad = true;
  auto src = open_source(o);
  EXPECT_EQ(src->size(), 2);
  ASSERT_EQ(src->skipped().size(), 3u);
  EXPECT_EQ(src->skipped()[0].path, dir + "/a/truncated.png");
  EXPECT_EQ(src->skipped()[1].path, dir + "/b/empty.png");
  EXPECT_EQ(src->skipped()[1].reason, "empty file");
  EXPECT_EQ(src->skipped()[2].path, dir + "/b/garbage.jpg");
  SourceBatch b = src->get(0, 2);
  EXPECT_EQ(b.labels[1].item<int64_t>(), 1);
  // Without validation only headers (and a PNG's chunk layout) are checked: a PNG whose chunks
  // fit but whose compressed data is garbage is found, and fails later, at get(), naming it.
  std::string lazy_dir = scratch_dir("-lazy");
  write_png_file(lazy_dir + "/a/good.png", pattern_image(3, 8, 8, 1));
  std::string bad = png;
  const size_t idat_len = (static_cast<unsigned char>(bad[33]) << 24) | (static_cast<unsigned char>(bad[34]) << 16) |
                          (static_cast<unsigned char>(bad[35]) << 8) | static_cast<unsigned char>(bad[36]);
  ASSERT_EQ(bad.substr(37, 4), "IDAT");  // the chunk after the 8-byte signature and IHDR's 25
  for (size_t i = 41; i < 41 + idat_len; ++i) bad[i] = '\xff';  // not a zlib stream
  write_bytes(lazy_dir + "/a/corrupt.png", bad, false);
  o.path = lazy_dir;
  o.skip_bad = false;
  o.validate = false;
  auto lazy = open_source(o);
  EXPECT_EQ(lazy->size(), 2);
  err = error_of([&] { lazy->get(0, 2); });
  EXPECT_NE(err.find("corrupt.png"), std::string::npos) << err;
}

TEST(ImageFolder, MixedLayoutIsRefused) {
  std::string dir = scratch_dir();
  write_png_file(dir + "/a/x.png", pattern_image(1, 4, 4, 1));
  write_png_file(dir + "/loose.png", pattern_image(1, 4, 4, 1));
  SourceOptions o;
  o.path = dir;
  std::string err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find("both class subfolders"), std::string::npos) << err;
}

TEST(ImageFolder, CaptionedFolderReadsMetadataJsonlInLineOrder) {
  // Hugging Face's imagefolder layout: metadata.jsonl with file_name, text and label.
  std::string dir = scratch_dir();
  write_png_file(dir + "/b.png", pattern_image(3, 8, 8, 1));
  write_png_file(dir + "/sub/a.png", pattern_image(3, 8, 8, 2));
  write_png_file(dir + "/c.png", pattern_image(3, 8, 8, 3));
  write_bytes(dir + "/metadata.jsonl",
              "{\"file_name\": \"b.png\", \"text\": \"a red fox\", \"label\": \"Animals\"}\n"
              "\n"
              "{\"file_name\": \"sub/a.png\", \"text\": \"caf\u00e9 au lait\", \"label\": \"Food\"}\n"
              "{\"file_name\": \"c.png\", \"text\": \"a dog\", \"label\": \"Animals\"}\n",
              false);
  SourceOptions o;
  o.path = dir;
  o.resolution = 8;
  auto src = open_source(o);
  EXPECT_TRUE(src->captioned());
  ASSERT_EQ(src->size(), 3);
  EXPECT_EQ(src->label_names(), (std::vector<std::string>{"Animals", "Food"}));
  SourceBatch b = src->get(0, 3);
  EXPECT_EQ(b.captions, (std::vector<std::string>{"a red fox", "caf\xC3\xA9 au lait", "a dog"}));
  EXPECT_EQ(b.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(b.labels[1].item<int64_t>(), 1);
  EXPECT_EQ(b.labels[2].item<int64_t>(), 0);
  EXPECT_EQ(src->description()["captions"], "metadata.jsonl");
  // A mirrored image would contradict "pointing left": encode refuses cache.flip, naming it.
  EncodeOptions eo;
  eo.cache_dir = scratch_dir("-cache");
  eo.flip = true;
  eo.vae_hash = "identity-c3";
  const std::string flip_err = error_of([&] {
    encode_shards(*src, [](const at::Tensor&, const at::Tensor&, bool) -> EncodedBatch {
      throw std::logic_error("never called");
    }, eo, 0, 1);
  });
  EXPECT_NE(flip_err.find("cache.flip = true with a captioned data set"), std::string::npos) << flip_err;
  // The class-subfolder layout has no captions.
  std::string plain = scratch_dir("-plain");
  write_png_file(plain + "/x/1.png", pattern_image(3, 8, 8, 1));
  o.path = plain;
  EXPECT_FALSE(open_source(o)->captioned());
  EXPECT_TRUE(open_source(o)->get(0, 1).captions.empty());
}

TEST(ImageFolder, BadMetadataLinesAreNamedByLineOrSkipped) {
  std::string dir = scratch_dir();
  write_png_file(dir + "/ok.png", pattern_image(3, 8, 8, 1));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json", "metadata.jsonl:1: "},
      {"[1, 2]", "metadata.jsonl:1: not a JSON object"},
      {"{\"text\": \"x\"}", "metadata.jsonl:1: no \"file_name\" string"},
      {"{\"file_name\": \"ok.png\"}", "metadata.jsonl:1: no \"text\" string"},
      {"{\"file_name\": \"ok.png\", \"text\": \"  \"}", "metadata.jsonl:1: an empty caption"},
      {"{\"file_name\": \"gone.png\", \"text\": \"x\"}", "metadata.jsonl:1: file_name 'gone.png': no such file"},
      {"{\"file_name\": \"../ok.png\", \"text\": \"x\"}", "file_name '../ok.png' is not a path inside the folder"},
      {"{\"file_name\": \"/etc/hostname\", \"text\": \"x\"}", "is not a path inside the folder"},
  };
  SourceOptions o;
  o.path = dir;
  o.resolution = 8;
  for (const auto& [line, want] : bad) {
    write_bytes(dir + "/metadata.jsonl", line + "\n{\"file_name\": \"ok.png\", \"text\": \"fine\"}\n", false);
    o.skip_bad = false;
    const std::string err = error_of([&] { open_source(o); });
    EXPECT_NE(err.find(want), std::string::npos) << line << " -> " << err;
    o.skip_bad = true;
    auto src = open_source(o);
    EXPECT_EQ(src->size(), 1) << line;
    ASSERT_EQ(src->skipped().size(), 1u) << line;
    EXPECT_EQ(src->skipped()[0].path, dir + "/metadata.jsonl:1") << line;
  }
  // Labels on some lines only.
  write_bytes(dir + "/metadata.jsonl",
              "{\"file_name\": \"ok.png\", \"text\": \"a\", \"label\": \"x\"}\n{\"file_name\": \"ok.png\", \"text\": \"b\"}\n",
              false);
  o.skip_bad = false;
  const std::string err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find("1 of 2 lines have a \"label\""), std::string::npos) << err;
}

TEST(ImageFolder, TransparencyIsCompositedOnTheBackground) {
  // A fully transparent pixel that stores red, and an opaque green one: on white the first is
  // white (not the red under it), on black it is black; the opaque one is green either way.
  std::string dir = scratch_dir();
  at::Tensor rgba = at::zeros({4, 1, 2}, at::kByte);
  rgba[0][0][0] = 255;                     // pixel 0: red, alpha 0
  rgba[1][0][1] = 255, rgba[3][0][1] = 255;  // pixel 1: green, alpha 255
  write_png_file(dir + "/p.png", rgba);
  for (const auto& [bg, want0] : std::vector<std::pair<std::string, int>>{{"white", 255}, {"black", 0}, {"10,20,30", 10}}) {
    const uint8_t* rgb = nullptr;
    SourceOptions o;
    o.background = bg;
    const auto color = o.background_rgb();
    rgb = color.data();
    Image8 im = decode_image(dir + "/p.png", 3, {}, rgb);
    EXPECT_EQ(im.pixels[0], want0) << bg;
    EXPECT_EQ(im.pixels[3], 0) << bg;
    EXPECT_EQ(im.pixels[4], 255) << bg;
  }
  Image8 dropped = decode_image(dir + "/p.png", 3);  // without a background: stb drops alpha
  EXPECT_EQ(dropped.pixels[0], 255);
  SourceOptions o;
  o.background = "300,0,0";
  const std::string err = error_of([&] { o.background_rgb(); });
  EXPECT_NE(err.find("data.background = '300,0,0'"), std::string::npos) << err;
}

TEST(RealFashionMnist, TrainAndTestSplits) {
  if (!fs::exists(std::string(kDefaultIdxDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << kDefaultIdxDir << " is absent (Debian package dataset-fashion-mnist)";
  SourceOptions o;  // the embedded default path
  auto train = open_source(o);
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(train->label_names().size(), 10u);
  EXPECT_EQ(train->label_names()[9], "Ankle boot");
  o.split = "test";
  auto test = open_source(o);
  EXPECT_EQ(test->size(), 10000);
  SourceBatch b = test->get(0, 10000);
  EXPECT_EQ(b.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(b.labels.max().item<int64_t>(), 9);
  EXPECT_EQ(b.images.sizes(), (std::vector<int64_t>{10000, 1, 32, 32}));
  // Balanced classes: 1000 test images each.
  EXPECT_TRUE(at::bincount(b.labels).eq(1000).all().item<bool>());
}

}  // namespace
}  // namespace lf::data
