// Tests of core/safetensors: round trips of every dtype and of metadata, the exact byte layout
// of a tiny file, files laid out as the Python package writes them, every rejection (with the
// file, tensor and numbers in the message), and the content hash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "core/util/fs.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

namespace fs = std::filesystem;
using test::ExpectThrowContains;

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TensorMap every_dtype() {
  TensorMap m;
  m["f64"] = torch::randn({3, 2}, torch::kDouble);
  m["f32"] = torch::randn({2, 3, 4});
  m["f16"] = torch::randn({5}).to(torch::kHalf);
  m["bf16"] = torch::randn({2, 2}).to(torch::kBFloat16);
  m["i64"] = torch::tensor({int64_t{1} << 40, int64_t{-7}, int64_t{0}});
  m["i32"] = torch::arange(-3, 3, torch::kInt);
  m["i16"] = torch::arange(-3, 3, torch::kShort);
  m["i8"] = torch::arange(-3, 3, torch::kChar);
  m["u8"] = torch::arange(0, 255, 17, torch::kByte);
  m["bool"] = torch::tensor({true, false, true});
  m["scalar"] = torch::tensor(3.5);                  // shape []
  m["empty"] = torch::zeros({0, 4});                 // no bytes
  m["strided"] = torch::arange(12.0).view({3, 4}).t();  // non-contiguous input
  return m;
}

void expect_same(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const at::Tensor& u = b.at(name);
    EXPECT_EQ(u.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(u.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(u, t)) << name << ": " << t << " vs " << u;
  }
}

TEST(Safetensors, RoundTripsEveryDtypeThroughFileAndBytes) {
  test::TempDir dir("st_roundtrip");
  const TensorMap m = every_dtype();
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, m);
  expect_same(m, load_safetensors(path).tensors);
  expect_same(m, parse_safetensors(serialize_safetensors(m), "<bytes>").tensors);
  // Writes are atomic: no temporary sibling is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, MetadataRoundTrips) {
  test::TempDir dir("st_meta");
  const TensorMetadata meta = {{"format", "pt"},
                               {"config", "{\"a\": [1, 2], \"q\": \"x\\\"y\"}"},
                               {"unicode", "\xc3\xa9t\xc3\xa9\n\ttab"}};
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"w", torch::ones({2})}}, meta);
  EXPECT_EQ(load_safetensors(path).metadata, meta);
  EXPECT_EQ(read_safetensors_header(path).metadata, meta);
}

// The exact bytes of a tiny file, written out by hand from the format description.
TEST(Safetensors, WritesTheDocumentedByteLayout) {
  const std::string header =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}    ";  // 132 + 4 pad
  const std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + header +
                               std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8) +  // 1, -2.5
                               std::string("\x01\x02\x03", 3);
  const std::string got = serialize_safetensors(
      {{"b", torch::tensor({1, 2, 3}, torch::kByte)}, {"a", torch::tensor({1.0f, -2.5f})}},
      {{"k", "v"}});
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(static_cast<int>(static_cast<unsigned char>(got[i])),
              static_cast<int>(static_cast<unsigned char>(expected[i])))
        << "first differing byte at offset " << i;
}

// A file as the Python package lays it out: metadata last, tensors stored in another order
// than their names, header padded with spaces; as well as unpadded headers.
TEST(Safetensors, ReadsFilesWrittenInAnotherOrder) {
  const std::string header =
      "{\"z\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]},"
      "\"a\":{\"shape\":[1,1],\"dtype\":\"F64\",\"data_offsets\":[4,12]},"
      "\"__metadata__\":{\"format\":\"pt\"}}";
  std::string data = std::string("\x05\x00\xff\xff", 4) + std::string("\0\0\0\0\0\0\xf0\x3f", 8);
  const SafetensorsContent c = parse_safetensors(u64le(header.size()) + header + data, "py.st");
  ASSERT_EQ(c.tensors.size(), 2u);
  EXPECT_TRUE(torch::equal(c.tensors.at("z"), torch::tensor({5, -1}, torch::kShort)));
  EXPECT_TRUE(torch::equal(c.tensors.at("a"), torch::ones({1, 1}, torch::kDouble)));
  EXPECT_EQ(c.metadata.at("format"), "pt");
}

TEST(Safetensors, RejectsTruncatedFilesNamingFileAndNumbers) {
  test::TempDir dir("st_trunc");
  const std::string good = serialize_safetensors({{"weight", torch::ones({4, 4})}});
  const std::string path = dir.file("cut.safetensors");
  write_bytes(path, good.substr(0, good.size() - 10));
  ExpectThrowContains<std::invalid_argument>(
      [&] { load_safetensors(path); },
      {path, "tensor 'weight'", "data_offsets [0, 64]", "data section, which holds 54 bytes"});
  write_bytes(path, good.substr(0, 5));
  ExpectThrowContains<std::invalid_argument>([&] { load_safetensors(path); },
                                             {path, "holds 5 bytes", "8-byte header length"});
}

TEST(Safetensors, RejectsHeaderLongerThanFile) {
  test::TempDir dir("st_header");
  const std::string path = dir.file("x.safetensors");
  write_bytes(path, u64le(4096) + std::string(92, ' '));
  ExpectThrowContains<std::invalid_argument>(
      [&] { read_safetensors_header(path); },
      {path, "header claims 4096 bytes but the file holds 92"});
  // A sparse 150 MB file whose header claims 120 MB: within the file, above the limit.
  const std::string big = dir.file("big.safetensors");
  write_bytes(big, u64le(120'000'000));
  ASSERT_EQ(::truncate(big.c_str(), 150'000'000), 0);
  ExpectThrowContains<std::invalid_argument>(
      [&] { read_safetensors_header(big); }, {big, "120000000", "above the limit of 100000000"});
}

TEST(Safetensors, RejectsMalformedHeadersWithPreciseMessages) {
  auto file = [](const std::string& header, size_t data_bytes) {
    return u64le(header.size()) + header + std::string(data_bytes, '\0');
  };
  struct Case {
    std::string header;
    size_t data;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"{not json", 0, {"m.st: header: not valid JSON"}},
      {"[1,2]", 0, {"m.st", "header must be a JSON object"}},
      {R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       {"m.st: tensor 'w'", "shape [3] of F32 needs 12 bytes", "hold 8"}},
      {R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8,
       {"tensor 'w'", "dtype \"C64\" is not supported"}},
      {R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[4,2]}})", 8,
       {"tensor 'w'", "[4, 2] end before begin"}},
      {R"({"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", 8,
       {"tensor 'w' shape entry must be a non-negative integer, found -2"}},
      {R"({"w":{"dtype":"U8","shape":[2]}})", 8, {"tensor 'w'", "no \"data_offsets\""}},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
       8, {"tensors 'a' [0, 4) and 'b' [2, 6) overlap"}},
      {R"({"__metadata__":{"n":3}})", 0, {"__metadata__ value of 'n' must be a string"}},
      {R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
       {"tensor 'w'", "needs more than 2^64 bytes"}},
  };
  for (const auto& c : cases)
    ExpectThrowContains<std::invalid_argument>([&] { parse_safetensors(file(c.header, c.data), "m.st"); },
                                               c.parts);
  // BOOL data must be 0 or 1.
  std::string bad_bool = file(R"({"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 0) + "\x01\x07";
  ExpectThrowContains<std::invalid_argument>([&] { parse_safetensors(bad_bool, "m.st"); },
                                             {"tensor 'b' is BOOL but holds bytes other than 0 and 1"});
}

TEST(Safetensors, RejectsUnsupportedDtypesAndNamesOnWrite) {
  ExpectThrowContains<std::invalid_argument>(
      [] { serialize_safetensors({{"c", torch::zeros({2}, torch::kComplexFloat)}}); },
      {"tensor 'c'", "cannot be stored in safetensors"});
  ExpectThrowContains<std::invalid_argument>(
      [] { serialize_safetensors({{"__metadata__", torch::zeros({2})}}); }, {"reserved"});
}

TEST(Safetensors, MissingFileIsAnEnvironmentError) {
  ExpectThrowContains<std::runtime_error>([] { load_safetensors("/nonexistent/w.safetensors"); },
                                          {"/nonexistent/w.safetensors", "cannot open"});
}

TEST(Safetensors, ContentHashIgnoresMetadataAndFollowsContent) {
  test::TempDir dir("st_hash");
  const TensorMap m = every_dtype();
  const std::string p1 = dir.file("a.safetensors"), p2 = dir.file("b.safetensors");
  save_safetensors(p1, m, {{"note", "first"}});
  save_safetensors(p2, load_safetensors(p1).tensors, {{"note", "re-saved"}});
  const std::string h = hash_tensors(m);
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(hash_safetensors_file(p1), h);
  EXPECT_EQ(hash_safetensors_file(p2), h);

  TensorMap changed = m;
  changed["f32"] = m.at("f32").clone();
  changed["f32"].view(-1)[5] += 1e-3f;
  EXPECT_NE(hash_tensors(changed), h);
  TensorMap renamed = m;
  renamed["f32b"] = renamed["f32"];
  renamed.erase("f32");
  EXPECT_NE(hash_tensors(renamed), h);
  TensorMap retyped = m;
  retyped["i32"] = m.at("i32").to(torch::kFloat);  // same bytes count, other dtype
  EXPECT_NE(hash_tensors(retyped), h);
  TensorMap reshaped = m;
  reshaped["f32"] = m.at("f32").reshape({4, 3, 2});
  EXPECT_NE(hash_tensors(reshaped), h);
}

TEST(Safetensors, DescribeListsNamesDtypesShapesAndSizes) {
  test::TempDir dir("st_describe");
  const std::string path = dir.file("d.safetensors");
  save_safetensors(path, {{"enc.w", torch::zeros({3, 5})}, {"n", torch::zeros({2}, torch::kLong)}},
                   {{"format", "pt"}});
  const SafetensorsHeader h = read_safetensors_header(path);
  ASSERT_EQ(h.entries.size(), 2u);
  EXPECT_EQ(h.entries[0].name, "enc.w");
  EXPECT_EQ(h.entries[0].nbytes(), 60u);
  EXPECT_EQ(h.file_bytes, fs::file_size(path));
  const std::string text = describe_safetensors(h);
  for (const char* part : {"enc.w", "F32", "[3, 5]", "60", "n ", "I64", "[2]", "16",
                           "2 tensors, 17 elements", "metadata format = pt"})
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in:\n" << text;
}

}  // namespace
}  // namespace lf::core
