// Readers of untrusted bytes in core/: the bounded JSON parse every JSON reader uses (depth,
// size, duplicate keys), typed field access, checked arithmetic and integer parsing, message
// excerpts, and the safetensors and VAE config readers built on them (docs/fuzzing.md).
#include <gtest/gtest.h>

#include <fstream>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/util/checked.h"
#include "core/util/json.h"
#include "core/util/strings.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

std::string deep_json(size_t levels, const std::string& open = "[", const std::string& close = "]") {
  std::string s;
  for (size_t i = 0; i < levels; ++i) s += open;
  s += "1";
  for (size_t i = 0; i < levels; ++i) s += close;
  return s;
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

TEST(BoundedJson, DeepNestingIsRefusedByNameNotByStackOverflow) {
  // 100,000 levels: nlohmann builds it, but copying, comparing or dumping it recurses once per
  // level and overflows the stack (the crash of the issue).
  for (const std::string& text : {deep_json(100000), deep_json(100000, "{\"a\":", "}")})
    ExpectThrowContains<std::invalid_argument>([&] { parse_json(text, "deep.json"); },
                                               {"deep.json: JSON nested deeper than 64 levels"});
  JsonLimits limits;
  limits.max_depth = 3;
  limits.error = ErrorKind::kEnvironment;
  EXPECT_NO_THROW(parse_json(deep_json(3), "ok.json", limits));
  ExpectThrowContains<std::runtime_error>([&] { parse_json(deep_json(4), "d4.json", limits); },
                                          {"d4.json: JSON nested deeper than 3 levels"});
}

TEST(BoundedJson, DuplicateKeysSizeAndSyntaxErrorsNameTheSource) {
  ExpectThrowContains<std::invalid_argument>(
      [] { parse_json(R"({"a":1,"b":{"a":2},"a":3})", "dup.json"); },
      {"dup.json: JSON object names the key \"a\" twice"});
  // The same key in two different objects is fine.
  EXPECT_EQ(parse_json(R"({"a":{"a":1},"b":{"a":2}})", "x")["b"]["a"], 2);
  JsonLimits small;
  small.max_bytes = 10;
  ExpectThrowContains<std::invalid_argument>([&] { parse_json("[1,2,3,4,5,6]", "big.json", small); },
                                             {"big.json: 13 bytes of JSON, more than the limit of 10"});
  // A syntax error deep inside a huge string: the message quotes a bounded excerpt.
  const std::string huge = "[\"" + std::string(1 << 20, 'x') + "\x01\"]";
  try {
    parse_json(huge, "huge.json");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("huge.json: not valid JSON"), std::string::npos) << e.what();
    EXPECT_LT(std::string(e.what()).size(), 400u);
  }
}

TEST(JsonFields, NameTheFileTheFieldAndTheExpectedType) {
  const nlohmann::json j = parse_json(
      R"({"n":"12","big":18446744073709551615,"s":[1],"o":{"x":true},"a":[1,"two"],"f":1.5})", "m.json");
  const JsonFields f(j, "m.json", "", ErrorKind::kEnvironment);
  ExpectThrowContains<std::runtime_error>([&] { f.integer("n"); },
                                          {"m.json: field 'n' is a string (\"12\"), expected an integer"});
  ExpectThrowContains<std::runtime_error>([&] { f.integer("big"); },
                                          {"field 'big' is an integer (18446744073709551615), expected an integer in"});
  ExpectThrowContains<std::runtime_error>([&] { f.integer("f", 0, 9); }, {"field 'f' is a number (1.5)"});
  ExpectThrowContains<std::runtime_error>([&] { f.string("s"); }, {"field 's' is an array ([1]), expected a string"});
  ExpectThrowContains<std::runtime_error>([&] { f.object("o").string("x"); },
                                          {"field 'o.x' is a boolean (true), expected a string"});
  ExpectThrowContains<std::runtime_error>([&] { f.integers("a", 8, 0, 9); },
                                          {"field 'a' has entry 1 = \"two\", expected an integer in [0, 9]"});
  ExpectThrowContains<std::runtime_error>([&] { f.integers("a", 1, 0, 9); },
                                          {"field 'a' has 2 entries, expected at most 1"});
  ExpectThrowContains<std::runtime_error>([&] { f.boolean("missing"); }, {"m.json: field 'missing' is missing"});
  ExpectThrowContains<std::invalid_argument>([&] { JsonFields(j["s"], "m.json", "s"); },
                                             {"m.json: field 's' is an array ([1]), expected an object"});
  EXPECT_EQ(f.object("o").boolean("x"), true);
}

TEST(Checked, ProductsAndIntegerParsingNeverOverflow) {
  int64_t n = 0;
  // 2^29 cubed wraps int64 to exactly 0: the IDX header that once ended in SIGFPE.
  EXPECT_FALSE(bounded_product(std::vector<int64_t>{1 << 29, 1 << 29, 1 << 29}, INT64_MAX, &n));
  EXPECT_TRUE(bounded_product(std::vector<int64_t>{60000, 28, 28}, int64_t{1} << 36, &n));
  EXPECT_EQ(n, 47040000);
  EXPECT_FALSE(bounded_product(std::vector<int64_t>{3, -1}, 100, &n));
  EXPECT_FALSE(bounded_product(std::vector<int64_t>{11, 10}, 100, &n));
  uint64_t u = 0;
  EXPECT_FALSE(bounded_product(std::vector<uint64_t>{uint64_t{1} << 32, uint64_t{1} << 32}, UINT64_MAX, &u));
  EXPECT_TRUE(parse_int64("00042", 0, 99999, &n));
  EXPECT_EQ(n, 42);
  EXPECT_TRUE(parse_int64("-9223372036854775808", INT64_MIN, INT64_MAX, &n));
  EXPECT_EQ(n, INT64_MIN);
  for (const char* bad : {"99999999999999999999", "9223372036854775808", "", "-", "+1", " 1", "1x", "0x10"})
    EXPECT_FALSE(parse_int64(bad, INT64_MIN, INT64_MAX, &n)) << bad;
  EXPECT_FALSE(parse_int64("100000", 0, 99999, &n));
}

TEST(Excerpt, ShortensEscapesAndKeepsUtf8Whole) {
  EXPECT_EQ(excerpt("abc"), "abc");
  EXPECT_EQ(excerpt("a\nb\x01"), "a\\x0Ab\\x01");
  EXPECT_EQ(excerpt(std::string(100, 'x'), 10), std::string(10, 'x') + "... (100 bytes)");
  // "é" is two bytes; a cut between them would leave invalid UTF-8 in the message.
  EXPECT_EQ(excerpt("abcé", 4), "abc... (5 bytes)");
}

TEST(SafetensorsUntrusted, DeepHeaderAndDuplicateTensorNamesAreRefused) {
  // A ~100 KB header nested 50,000 levels deep (in a tensor's shape).
  const std::string deep = "{\"w\":{\"dtype\":\"U8\",\"shape\":" + deep_json(50000) + ",\"data_offsets\":[0,0]}}";
  ExpectThrowContains<std::invalid_argument>([&] { parse_safetensors(u64le(deep.size()) + deep, "deep.st"); },
                                             {"deep.st: header: JSON nested deeper than"});
  // A tensor named twice: JSON leaves it undefined which one counts, so it is refused.
  const std::string dup = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  ExpectThrowContains<std::invalid_argument>(
      [&] { parse_safetensors(u64le(dup.size()) + dup + "ab", "dup.st"); },
      {"dup.st: header: JSON object names the key \"w\" twice"});
  ExpectThrowContains<std::invalid_argument>(
      [&] { parse_safetensors_header(u64le(dup.size()) + dup + "ab", "dup.st"); }, {"names the key \"w\" twice"});
  // A 10,000-byte tensor name is quoted shortened.
  const std::string name(10000, 'n');
  const std::string bad = "{\"" + name + R"(":{"dtype":"U8","shape":[3],"data_offsets":[0,1]}})";
  try {
    parse_safetensors(u64le(bad.size()) + bad + "a", "long.st");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("(10000 bytes)"), std::string::npos) << e.what();
    EXPECT_LT(std::string(e.what()).size(), 400u);
  }
}

TEST(VAEConfigUntrusted, DeepConfigJsonIsRefusedByName) {
  test::TempDir dir("vae_deep");
  std::filesystem::create_directories(dir.file("v"));
  std::ofstream(dir.file("v/config.json")) << "{\"in_channels\":" << deep_json(100000) << "}";
  save_safetensors(dir.file("v/diffusion_pytorch_model.safetensors"), {{"w", torch::zeros({1})}});
  ExpectThrowContains<std::invalid_argument>([&] { load_diffusers_vae(dir.file("v")); },
                                             {dir.file("v/config.json"), "JSON nested deeper than 64 levels"});
  // The config a LatentForge VAE file keeps in its metadata.
  save_safetensors(dir.file("vae.safetensors"), {{"w", torch::zeros({1})}}, {{"config", deep_json(100000)}});
  ExpectThrowContains<std::invalid_argument>([&] { load_vae_file(dir.file("vae.safetensors")); },
                                             {dir.file("vae.safetensors") + ": metadata \"config\": JSON nested deeper"});
  // A config larger than any real one is refused before it is parsed.
  std::ofstream(dir.file("v/config.json")) << std::string(2 << 20, ' ');
  ExpectThrowContains<std::runtime_error>([&] { load_diffusers_vae(dir.file("v")); },
                                          {dir.file("v/config.json"), "larger than the limit of 1048576 bytes"});
}

}  // namespace
}  // namespace lf::core
