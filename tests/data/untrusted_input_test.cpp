// Readers of untrusted bytes in data/: IDX headers (overflow, gzip bombs, sizes checked before
// reading), images (format by signature, pixel and aspect bounds from the header, skip_bad),
// the cache manifest (typed fields, deep JSON), shard attributes, stray shard files, and the
// shard file checked against the manifest before HDF5 opens it (docs/fuzzing.md).
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/util/json.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "data/hdf5_util.h"
#include "data/idx_source.h"
#include "data/image_folder_source.h"
#include "data/latent_cache.h"
#include "data/samples_file.h"
#include "data/shard_file.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

std::string deep_json(size_t levels) { return std::string(levels, '[') + "1" + std::string(levels, ']'); }

// PNG bytes of a grey w x h image of zeros (PNG spec: signature, IHDR, one IDAT, IEND): a
// small, valid file that declares as many pixels as it likes.
std::string zero_png(uint32_t w, uint32_t h) {
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    std::string td = type + data;
    return be32(static_cast<uint32_t>(data.size())) + td +
           be32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(td.data()), td.size())));
  };
  std::string raw(static_cast<size_t>(h) * (w + 1), '\0');  // filter byte 0 + w zeros per row
  uLongf zlen = compressBound(raw.size());
  std::string z(zlen, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
            raw.size(), 9);
  z.resize(zlen);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", be32(w) + be32(h) + std::string("\x08\0\0\0\0", 5)) +
         chunk("IDAT", z) + chunk("IEND", "");
}

TEST(IdxUntrusted, DimensionsWhoseProductWrapsAreRefused) {
  // 2^29 x 2^29 x 2^29 wraps int64 to 0; the old check then divided by it (SIGFPE).
  const std::string dir = scratch_dir();
  const std::string path = dir + "/x-idx4-ubyte";
  write_bytes(path, idx_bytes({1, 1 << 29, 1 << 29, 1 << 29}, {}), false);
  std::string err = error_of([&] { read_idx(path); });
  EXPECT_NE(err.find(path + ": IDX dimensions imply more than"), std::string::npos) << err;
  EXPECT_NE(err.find("the header is corrupt"), std::string::npos) << err;
}

TEST(IdxUntrusted, GzipBombsAreBoundedByTheHeader) {
  const std::string dir = scratch_dir();
  // A few hundred bytes of gzip that declare 784 MB: refused before anything is inflated.
  write_bytes(dir + "/train-images-idx3-ubyte.gz", idx_bytes({1000000, 28, 28}, std::vector<uint8_t>(100, 0)), true);
  std::string err = error_of([&] { read_idx(dir + "/train-images-idx3-ubyte.gz"); });
  EXPECT_NE(err.find("train-images-idx3-ubyte.gz: truncated IDX file: the header promises 784000000 bytes of "
                     "data, but a gzip file of "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("inflates to at most"), std::string::npos) << err;
  // 64 MB of zeros after 10 honest records (~64 KB of gzip): exactly the 10 records are
  // inflated, never the rest.
  std::vector<uint8_t> data(10 * 28 * 28, 7);
  data.resize(data.size() + (64 << 20), 0);
  write_bytes(dir + "/bomb.gz", idx_bytes({10, 28, 28}, data), true);
  EXPECT_LT(fs::file_size(dir + "/bomb.gz"), 1u << 20);
  IdxArray a = read_idx(dir + "/bomb.gz");
  EXPECT_EQ(a.records, 10);
  EXPECT_EQ(a.data.size(), 7840u);
  // Images larger than data.image_size are refused from the header, before their data.
  write_idx_set(dir, "train", 3, true);
  write_bytes(dir + "/train-images-idx3-ubyte.gz", idx_bytes({3, 4000, 4000}, {}), true);
  SourceOptions o;
  o.path = dir;
  err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find("train-images-idx3-ubyte.gz: IDX images are 4000x4000, larger than 32 per side"),
            std::string::npos)
      << err;
  // A count that disagrees with the labels file, also from the header.
  write_bytes(dir + "/train-images-idx3-ubyte.gz", idx_bytes({5, 28, 28}, {}), true);
  err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find("train-images-idx3-ubyte.gz holds 5 images but "), std::string::npos) << err;
  EXPECT_NE(err.find("train-labels-idx1-ubyte.gz holds 3"), std::string::npos) << err;
}

TEST(ImageUntrusted, ImageBombIsRefusedFromItsHeaderOrSkipped) {
  const std::string dir = fs::absolute(scratch_dir()).string();  // folder sources name absolute paths
  write_png_file(dir + "/good.png", pattern_image(3, 16, 16, 1));
  // 1 x 16,777,216 pixels in a ~17 KB file: resized to 32 on the short side it would be a
  // 536,870,912 x 32 RGB image (~51 GB), which ended in std::bad_alloc naming no file.
  const std::string bomb = dir + "/bomb.png";
  write_bytes(bomb, zero_png(16777216, 1), false);
  EXPECT_LT(fs::file_size(bomb), 100000u);
  SourceOptions o;
  o.path = dir;
  o.kind = "folder";
  for (bool validate : {true, false}) {
    o.validate = validate;
    o.skip_bad = false;
    std::string err = error_of([&] { open_source(o); });
    EXPECT_NE(err.find(bomb + ": the header declares 16777216x1, an aspect ratio of 1.67772e+07, more "
                              "than data.max_aspect = 32"),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("set data.skip_bad = true"), std::string::npos) << err;
    o.skip_bad = true;
    auto src = open_source(o);
    ASSERT_EQ(src->size(), 1);
    ASSERT_EQ(src->skipped().size(), 1u);
    EXPECT_EQ(src->skipped()[0].path, bomb);
    EXPECT_NE(src->skipped()[0].reason.find("data.max_aspect"), std::string::npos);
    EXPECT_EQ(src->get(0, 1).images.sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  }
  // data.max_pixels: an image within the aspect bound but above the pixel bound.
  fs::remove(bomb);
  o.skip_bad = false;
  o.max_pixels = 255;
  std::string err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find(dir + "/good.png: the header declares 16x16 = 256 pixels, more than data.max_pixels = 255"),
            std::string::npos)
      << err;
  o.max_pixels = 0;
  EXPECT_NE(error_of([&] { open_source(o); }).find("data.max_pixels is 0, expected >= 1"), std::string::npos);
  // decode_image checks the same bounds itself.
  err = error_of([&] { decode_image(dir + "/good.png", 3, {100, 32.0}); });
  EXPECT_NE(err.find("good.png: the header declares 16x16 = 256 pixels, more than data.max_pixels = 100"),
            std::string::npos)
      << err;
}

TEST(ImageUntrusted, OnlyPngJpegBmpAndPnmAreDecoded) {
  const std::string dir = fs::absolute(scratch_dir()).string();
  write_png_file(dir + "/a/good.png", pattern_image(3, 8, 8, 1));
  // A GIF (stb could decode it; LatentForge no longer compiles that decoder in), a GIF renamed
  // .png (told by its signature, not its name), and a TGA (no signature at all).
  const std::string gif = std::string("GIF89a\x01\0\x01\0\x80\0\0", 13) + std::string(20, '\0');
  write_bytes(dir + "/a/x.gif", gif, false);
  write_bytes(dir + "/a/renamed.png", gif, false);
  write_bytes(dir + "/a/y.tga", std::string("\0\0\x02\0\0\0\0\0\0\0\0\0\x01\0\x01\0\x18\0\xff\xff\xff", 21), false);
  SourceOptions o;
  o.path = dir;
  o.kind = "folder";
  o.skip_bad = true;
  auto src = open_source(o);
  EXPECT_EQ(src->size(), 1);
  std::map<std::string, std::string> why;
  for (const auto& s : src->skipped()) why[fs::path(s.path).filename().string()] = s.reason;
  ASSERT_EQ(why.size(), 3u);
  EXPECT_EQ(why["x.gif"], "GIF images are not read (only PNG, JPEG, BMP and PNM); convert it");
  EXPECT_EQ(why["renamed.png"], why["x.gif"]);
  EXPECT_EQ(why["y.tga"], "not a PNG, JPEG, BMP or PNM (P5/P6) file (it starts with bytes 0 0 2 0 0 0 0 0)");
  o.skip_bad = false;
  std::string err = error_of([&] { open_source(o); });
  EXPECT_NE(err.find(dir + "/a/renamed.png: GIF images are not read"), std::string::npos) << err;
  EXPECT_EQ(image_format(reinterpret_cast<const unsigned char*>("8BPS"), 4), "PSD");
  EXPECT_EQ(image_format(reinterpret_cast<const unsigned char*>("#?RADIANCE\n"), 11), "HDR");
  EXPECT_EQ(image_format(reinterpret_cast<const unsigned char*>("BM"), 2), "BMP");
  EXPECT_EQ(image_format(reinterpret_cast<const unsigned char*>("P6\n"), 3), "PNM");
}

TEST(ImageUntrusted, FileNamesThatAreNotUtf8EndUpInTheManifestReplaced) {
  // Paths are bytes; JSON holds UTF-8 only (nlohmann threw type_error 316 writing the shard
  // settings). Invalid sequences become U+FFFD, the same in every shard and the manifest.
  const std::string dir = fs::absolute(scratch_dir()).string();
  write_png_file(dir + "/cl\xe9s/a.png", pattern_image(1, 32, 32, 1));
  write_bytes(dir + "/cl\xe9s/b\xff.png", "not a png", false);
  SourceOptions so;
  so.path = dir;
  so.kind = "folder";
  so.skip_bad = true;
  so.channels = 1;
  auto src = open_source(so);
  EncodeOptions o = small_options(dir + "/cache");
  encode_shards(*src, fake_encoder(), o, 0, 1);
  Manifest m = finalize_cache(o.cache_dir, o);
  EXPECT_EQ(m.settings.label_names, (std::vector<std::string>{"cl\xef\xbf\xbds"}));
  ASSERT_EQ(m.settings.skipped.size(), 1u);
  EXPECT_EQ(m.settings.skipped[0]["path"], dir + "/cl\xef\xbf\xbds/b\xef\xbf\xbd.png");
  EXPECT_NO_THROW(LatentCache::open(o.cache_dir, true));
  // A re-run finds its shards unchanged (the settings compare equal) and skips them.
  EXPECT_EQ(encode_shards(*src, fake_encoder(), o, 0, 1).shards_skipped, 1);
}

TEST(ImageUntrusted, SixteenBitPnmNeverReachesStb) {
  // stb_image 2.27 reads past its buffer converting 16-bit PNM to 8 bits (found by fuzz_image):
  // such files are refused from their header; 8-bit PNM still decodes.
  const std::string dir = fs::absolute(scratch_dir()).string();
  write_bytes(dir + "/p16.pgm", std::string("P5\n# comment\n4 3\n65535\n") + std::string(24, '\x80'), false);
  std::string err = error_of([&] { decode_image(dir + "/p16.pgm", 1); });
  EXPECT_NE(err.find(dir + "/p16.pgm: 16-bit PNM (maxval 65535) images are not read (only 8-bit)"),
            std::string::npos)
      << err;
  write_bytes(dir + "/p8.pgm", std::string("P5 4 3 255\n") + std::string(12, '\x80'), false);
  Image8 im = decode_image(dir + "/p8.pgm", 1);
  EXPECT_EQ(im.width, 4);
  EXPECT_EQ(im.height, 3);
  EXPECT_EQ(im.pixels, std::vector<uint8_t>(12, 0x80));
}

TEST(ImageUntrusted, APngChunkLongerThanTheFileNeverReachesStb) {
  // stb_image grows its IDAT buffer to the declared chunk length before reading: a 130-byte
  // PNG declaring a 1 GB IDAT made it allocate 2 GB (found by fuzz_image). Chunks are walked
  // first; one that does not fit in the file is refused by name.
  const std::string dir = fs::absolute(scratch_dir()).string();
  std::string png = zero_png(4, 3);
  const size_t idat = png.find("IDAT") - 4;
  png.replace(idat, 4, std::string("\x40\0\0\0", 4));  // 2^30 bytes
  write_bytes(dir + "/big-idat.png", png, false);
  std::string why;
  EXPECT_FALSE(probe_image(dir + "/big-idat.png", &why));
  EXPECT_EQ(why, lf::str("truncated or corrupt PNG: chunk IDAT at byte ", idat, " declares 1073741824 bytes, the file "
                         "holds ", png.size() - idat - 12, " after its header"));
  std::string err = error_of([&] { decode_image(dir + "/big-idat.png", 1); });
  EXPECT_NE(err.find(dir + "/big-idat.png: truncated or corrupt PNG"), std::string::npos) << err;
  // A valid PNG walks to its IEND and decodes.
  write_bytes(dir + "/ok.png", zero_png(4, 3), false);
  EXPECT_EQ(decode_image(dir + "/ok.png", 1).pixels, std::vector<uint8_t>(12, 0));
}

// A finished 50-sample cache (4 shards) and its manifest as JSON.
struct SmallCache {
  std::unique_ptr<InMemorySource> src = synthetic_source(50);
  EncodeOptions o;
  Manifest m;
  std::string manifest_path, original;
  explicit SmallCache(const std::string& dir) : o(small_options(dir)) {
    encode_shards(*src, fake_encoder(), o, 0, 1);
    m = finalize_cache(o.cache_dir, o);
    manifest_path = o.cache_dir + "/manifest.json";
    original = slurp(manifest_path);
  }
  nlohmann::json json() const { return nlohmann::json::parse(original); }
  std::string open_error(const std::string& text) const {
    std::ofstream(manifest_path, std::ios::trunc) << text;
    return error_of([&] { LatentCache::open(o.cache_dir, false); });
  }
};

TEST(ManifestUntrusted, WrongTypedFieldsNameTheFileTheFieldAndTheType) {
  SmallCache c(scratch_dir());
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j["num_samples"] = "50"; }, "field 'num_samples' is a string (\"50\"), expected an integer"},
      {[](auto& j) { j["vae"]["sha256"] = 5; }, "field 'vae.sha256' is an integer (5), expected a string"},
      {[](auto& j) { j["shards"][1]["count"] = "16"; }, "field 'shards[1].count' is a string (\"16\"), expected an integer"},
      {[](auto& j) { j["latent_stats"]["mean"] = nullptr; }, "field 'latent_stats.mean' is null (null), expected a number"},
      {[](auto& j) { j["skipped"] = {1}; }, "field 'skipped[0]' is an integer (1), expected an object"},
      {[](auto& j) { j["flip"] = 0; }, "field 'flip' is an integer (0), expected true or false"},
      {[](auto& j) { j["label_names"] = {"a", 2}; }, "field 'label_names' has entry 1 = 2, expected a string"},
      {[](auto& j) { j["store"] = "both"; }, "field 'store' is \"both\", expected one of moments, sample"},
      {[](auto& j) { j["latent_shape"] = {4, 8}; }, "field 'latent_shape' is [4,8], expected [C, H, W]"},
      {[](auto& j) { j.erase("latent_stats"); }, "field 'latent_stats' is missing"},
      {[](auto& j) { j = nlohmann::json::array(); }, "the document is an array ([]), expected an object"},
  };
  for (const auto& k : cases) {
    nlohmann::json j = c.json();
    k.edit(j);
    const std::string err = c.open_error(j.dump());
    EXPECT_NE(err.find(c.manifest_path + ": " + k.want), std::string::npos) << err;
  }
}

TEST(ManifestUntrusted, DeepJsonAndDuplicateKeysAreRefusedByName) {
  SmallCache c(scratch_dir());
  nlohmann::json j = c.json();
  j["source"] = "PLACEHOLDER";
  std::string text = j.dump();
  text.replace(text.find("\"PLACEHOLDER\""), 13, deep_json(100000));
  std::string err = c.open_error(text);
  EXPECT_NE(err.find(c.manifest_path + ": JSON nested deeper than 64 levels"), std::string::npos) << err;
  text = j.dump();
  text.replace(text.find("\"PLACEHOLDER\""), 13, "1,\"num_samples\":3");
  err = c.open_error(text);
  EXPECT_NE(err.find(c.manifest_path + ": JSON object names the key \"num_samples\" twice"), std::string::npos)
      << err;
}

// Replaces a string attribute of an HDF5 file (as a crafted or damaged shard would hold it).
void set_attr(const std::string& path, const std::string& name, const std::string& value) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  H5Adelete(file, name.c_str());
  h5_write_attr(file, name, value, path);
}
void set_attr(const std::string& path, const std::string& name, int64_t value) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  H5Adelete(file, name.c_str());
  h5_write_attr(file, name, value, path);
}

TEST(ShardUntrusted, AttributesAreBoundedAndNamed) {
  SmallCache c(scratch_dir());
  const std::string s1 = c.o.cache_dir + "/" + shard_file_name(1);
  set_attr(s1, "settings", deep_json(100000));
  std::string err = error_of([&] { ShardReader r(s1); });
  EXPECT_NE(err.find(s1 + " attribute 'settings': JSON nested deeper than 64 levels"), std::string::npos) << err;
  const std::string s2 = c.o.cache_dir + "/" + shard_file_name(2);
  // shard_index * shard_size overflowed int64 before it was range-checked.
  set_attr(s2, "shard_index", INT64_MAX);
  err = error_of([&] { ShardReader r(s2); });
  EXPECT_NE(err.find(s2 + ": attribute 'shard_index' is 9223372036854775807, expected 0..3"), std::string::npos)
      << err;
}

TEST(SamplesUntrusted, DeepLabelNamesAttributeIsRefusedByName) {
  const std::string path = scratch_dir() + "/samples.h5";
  write_samples_file(path, at::zeros({2, 1, 4, 4}, at::kByte), at::zeros({2}, at::kLong), {"a", "b"});
  EXPECT_EQ(read_samples_file(path).label_names, (std::vector<std::string>{"a", "b"}));
  set_attr(path, "label_names", deep_json(100000));
  const std::string err = error_of([&] { read_samples_file(path); });
  EXPECT_NE(err.find(path + " attribute label_names: JSON nested deeper than 64 levels"), std::string::npos) << err;
  set_attr(path, "label_names", "[\"a\", 3]");
  EXPECT_NE(error_of([&] { read_samples_file(path); }).find("label_names: is not a JSON list of strings"),
            std::string::npos);
}

TEST(ShardUntrusted, ShardFilesAreCheckedAgainstTheManifestBeforeHDF5OpensThem) {
  SmallCache c(scratch_dir());
  ASSERT_EQ(c.m.shards[0].file_sha256, sha256_file(c.o.cache_dir + "/" + shard_file_name(0)));
  ASSERT_EQ(c.m.shards[0].bytes, static_cast<int64_t>(fs::file_size(c.o.cache_dir + "/" + shard_file_name(0))));
  // A shard replaced by other bytes of the same size: HDF5 would parse them; the hash stops it.
  const std::string s3 = c.o.cache_dir + "/" + shard_file_name(3);
  const auto size = fs::file_size(s3);
  write_bytes(s3, std::string(size, 'x'), false);
  std::string err = error_of([&] { LatentCache::open(c.o.cache_dir, /*verify=*/true); });
  EXPECT_NE(err.find(s3 + ": checksum mismatch: the manifest expects " + c.m.shards[3].file_sha256 + " for the file"),
            std::string::npos)
      << err;
  // Without verification, a file of another size is refused before HDF5 opens it.
  write_bytes(s3, "truncated", false);
  auto cache = LatentCache::open(c.o.cache_dir, /*verify=*/false);
  err = error_of([&] { cache->read({49}); });
  EXPECT_NE(err.find(s3 + ": 9 bytes, the manifest lists " + std::to_string(size)), std::string::npos) << err;
  InspectResult res = inspect_cache(c.o.cache_dir);
  EXPECT_FALSE(res.ok);
  EXPECT_NE(res.text.find("shard-00003.h5 FAILED: " + s3 + ": 9 bytes"), std::string::npos) << res.text;
}

TEST(FinalizeUntrusted, AShardNumberBeyondInt64IsNamed) {
  auto src = synthetic_source(20);
  EncodeOptions o = small_options(scratch_dir());
  encode_shards(*src, fake_encoder(), o, 0, 1);
  const std::string stray = o.cache_dir + "/shard-99999999999999999999.h5";
  std::ofstream(stray) << "x";
  const std::string err = error_of([&] { finalize_cache(o.cache_dir, o); });
  EXPECT_NE(err.find(stray + ": shard number 99999999999999999999 is beyond the largest a cache has (999999)"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace lf::data
