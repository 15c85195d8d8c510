// Crash tests of encode: a child process (this test binary, re-executed) is killed at a named
// crash point (LF_CRASH_AT); the parent checks that nothing half-written carries a final name,
// re-runs encode + finalize, and compares the result with an uninterrupted run, byte for byte.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include "core/util/sha256.h"
#include "data/latent_cache.h"
#include "data_test_util.h"

namespace lf::data {
namespace {

using namespace lf::data::testing;

void run_encode(const std::string& dir) {
  auto src = synthetic_source(50);
  EncodeOptions o = small_options(dir);
  encode_shards(*src, fake_encoder(), o, 0, 1);
  finalize_cache(dir, o);
}

// The child's body: only run when re-executed by CrashTest below.
TEST(CrashChild, DISABLED_RunEncode) {
  const char* dir = std::getenv("LF_CRASH_CHILD_DIR");
  ASSERT_NE(dir, nullptr);
  run_encode(dir);
}

// Runs the child with LF_CRASH_AT=`point`; returns its wait status.
int run_child(const std::string& dir, const std::string& point) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("LF_CRASH_AT", point.c_str(), 1);
    ::setenv("LF_CRASH_CHILD_DIR", dir.c_str(), 1);
    int fd = ::open((dir + ".child.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const char* argv[] = {"test_data", "--gtest_filter=CrashChild.DISABLED_RunEncode",
                          "--gtest_also_run_disabled_tests", nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

struct CrashCase {
  const char* point;
  int finished_shards;   // shards under their final name when the process dies
  bool manifest_temp;    // a temporary manifest is left behind
};

class CrashTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashTest, ReRunAfterAKillEqualsAnUninterruptedRun) {
  const CrashCase c = GetParam();
  const std::string base = scratch_dir();
  const std::string ref = base + "/ref", dir = base + "/crashed";
  run_encode(ref);
  fs::create_directories(dir);

  int status = run_child(dir, c.point);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child was not killed at " << c.point << " (status " << status << "); its log:\n"
      << slurp(dir + ".child.log");
  std::vector<std::string> left = names_in(dir);
  int finished = 0, temps = 0;
  bool manifest = false;
  for (const auto& n : left) {
    if (n == "manifest.json") manifest = true;
    if (n.find(".tmp-") != std::string::npos) ++temps;
    if (n.size() == 14 && n.rfind("shard-", 0) == 0) ++finished;
  }
  EXPECT_EQ(finished, c.finished_shards) << ::testing::PrintToString(left);
  EXPECT_FALSE(manifest) << "a manifest under its final name after a crash";
  EXPECT_EQ(temps, 1) << ::testing::PrintToString(left);
  // The half-made cache is not mistaken for a finished one.
  EXPECT_THROW(LatentCache::open(dir), std::runtime_error);

  run_encode(dir);  // the re-run, same arguments
  EXPECT_EQ(slurp(dir + "/manifest.json"), slurp(ref + "/manifest.json"));
  for (int i = 0; i < 4; ++i) {
    const std::string f = "/" + shard_file_name(i);
    EXPECT_EQ(sha256_file(dir + f), sha256_file(ref + f)) << f;
  }
  std::vector<std::string> after = names_in(dir);
  EXPECT_EQ(after, names_in(ref)) << "temporaries left behind";
  EXPECT_NO_THROW(LatentCache::open(dir, /*verify=*/true));
}

INSTANTIATE_TEST_SUITE_P(
    Points, CrashTest,
    ::testing::Values(CrashCase{"encode.shard_written", 0, false},
                      CrashCase{"encode.shard_written:3", 2, false},
                      CrashCase{"encode.manifest_write", 4, true}),
    [](const ::testing::TestParamInfo<CrashCase>& info) {
      std::string n = info.param.point;
      for (char& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

}  // namespace
}  // namespace lf::data
