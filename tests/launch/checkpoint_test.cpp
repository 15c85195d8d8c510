// Checkpoint directories: atomic write, verification, pruning with milestones, and crashes at
// each named point leaving the previous checkpoint valid and chosen by latest_valid().
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "launch/checkpoint.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

std::string fresh_dir(const std::string& name) {
  const char* base = std::getenv("LF_TEST_TMP");
  fs::path dir = fs::path(base ? base : fs::temp_directory_path().string()) / ("ckpt_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<CheckpointFile> files_for(int64_t step) {
  return {{"a.bin", [step](const std::string& p) { std::ofstream(p) << "weights of step " << step; }},
          {"b.bin", [step](const std::string& p) { std::ofstream(p) << std::string(1000, char('a' + step % 26)); }}};
}

TEST(Checkpoint, SaveVerifyAndPrune) {
  CheckpointManager m(fresh_dir("prune"), 2, 4);
  for (int64_t s = 1; s <= 6; ++s) m.save(s, {{"note", s}}, files_for(s), 2000);
  std::vector<int64_t> steps;
  for (auto& [s, p] : m.list()) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 5, 6}));  // last 2 + milestone 4
  auto latest = m.latest_valid();
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000006");
  EXPECT_EQ(CheckpointManager::read_state(*latest)["note"], 6);
}

TEST(Checkpoint, CorruptNewestIsSkippedWithWarning) {
  CheckpointManager m(fresh_dir("corrupt"), 5, 0);
  m.save(1, {}, files_for(1), 0);
  std::string newest = m.save(2, {}, files_for(2), 0);
  {
    std::fstream f(newest + "/b.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('#');
  }
  std::vector<std::string> warnings;
  auto latest = m.latest_valid(&warnings);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000001");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("b.bin"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
  fs::remove(newest + "/a.bin");
  try {
    CheckpointManager::verify(newest);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("a.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

// Runs save(step) in a child that dies at `point`; returns the child's wait status.
int crash_child(const std::string& run_dir, int64_t step, const char* point) {
  pid_t pid = fork();
  if (pid == 0) {
    setenv("LF_CRASH_AT", point, 1);
    CheckpointManager m(run_dir, 1, 0);
    m.save(step, {}, files_for(step), 0);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(Checkpoint, CrashAtEveryPointLeavesPreviousValid) {
  for (const char* point : {"ckpt.after_tensors", "ckpt.before_rename", "ckpt.during_delete"}) {
    std::string dir = fresh_dir(std::string("crash_") + point);
    CheckpointManager m(dir, 1, 0);
    m.save(1, {{"step_note", 1}}, files_for(1), 0);
    int status = crash_child(dir, 2, point);
    ASSERT_TRUE(WIFSIGNALED(status)) << point << " did not crash";
    auto latest = m.latest_valid();
    ASSERT_TRUE(latest.has_value()) << point;
    // Before the rename the old one is the newest valid; during deletion the new one is.
    std::string want = std::string(point) == "ckpt.during_delete" ? "step-00000002" : "step-00000001";
    EXPECT_EQ(fs::path(*latest).filename(), want) << point;
    // And a later save completes and cleans up leftovers.
    m.save(3, {}, files_for(3), 0);
    EXPECT_EQ(fs::path(*m.latest_valid()).filename(), "step-00000003");
    size_t entries = 0;
    for (auto& e : fs::directory_iterator(m.dir())) entries += e.path().filename().string()[0] != '.';
    EXPECT_EQ(entries, 1u) << point;
  }
}

TEST(Checkpoint, RefusesWhenDiskIsTooSmall) {
  CheckpointManager m(fresh_dir("disk"), 1, 0);
  try {
    m.save(1, {}, files_for(1), uint64_t(1) << 62);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lf::launch
