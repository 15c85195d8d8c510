// Replays tests/fuzz_corpus/<target>/* through the fuzz targets in the ordinary build: every
// input found to crash (or to end in an undocumented error) once, minimised, stays fixed, and
// the valid seed inputs (seed-*) are still read.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {
namespace {

namespace fs = std::filesystem;

fs::path corpus_dir() {
  const char* s = std::getenv("LF_SOURCE_DIR");
  return fs::path(s ? s : LF_SOURCE_DIR_FALLBACK) / "tests" / "fuzz_corpus";
}

class Replay : public ::testing::TestWithParam<std::string> {};

TEST_P(Replay, EveryCorpusInputIsReadOrRefusedByName) {
  const Target& t = target(GetParam());
  const fs::path dir = corpus_dir() / t.name;
  ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing: every target keeps a corpus";
  std::vector<fs::path> inputs;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "README.md") inputs.push_back(e.path());
  std::sort(inputs.begin(), inputs.end());
  EXPECT_FALSE(inputs.empty()) << dir << " holds no inputs";
  const auto start = std::chrono::steady_clock::now();
  for (const auto& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string refusal;
    const std::string problem =
        run_checked(t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &refusal);
    EXPECT_EQ(problem, "") << p;
    // Seeds (tests/fuzz/make_seeds.py) are valid inputs: they must still be read.
    if (p.filename().string().rfind("seed-", 0) == 0) {
      EXPECT_EQ(refusal, "") << p;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("inputs", static_cast<int>(inputs.size()));
  std::printf("%s: %zu inputs in %.2f s\n", t.name, inputs.size(), s);
}

std::vector<std::string> target_names() {
  std::vector<std::string> names;
  for (const auto& t : targets()) names.push_back(t.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Corpus, Replay, ::testing::ValuesIn(target_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lf::fuzz
