// Checkpoint directories: atomic write, verification, pruning with milestones, and crashes at
// each named point — of a first save, of a re-save of an existing step (with and without
// RENAME_EXCHANGE), of a deletion and of moving an abandoned history aside — never leaving fewer
// valid checkpoints than before the save began.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/util/fs.h"
#include "launch/checkpoint.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

using lf::testing::contains;

std::string fresh_dir(const std::string& name) { return lf::testing::fresh_dir("ckpt_" + name); }

// The files an 'ldm' checkpoint needs, holding `tag` (so two saves of a step differ).
std::vector<CheckpointFile> files_for(int64_t step, const std::string& tag = "") {
  auto text = [step, tag](const std::string& what) {
    return [=](const std::string& p) { std::ofstream(p) << what << " of step " << step << tag; };
  };
  return {{"model.safetensors", text("weights")},
          {"optimizer.safetensors", text("moments")},
          {"ema.safetensors", text("averages")},
          {"b.bin", [step](const std::string& p) { std::ofstream(p) << std::string(1000, char('a' + step % 26)); }}};
}

std::string save(CheckpointManager& m, int64_t step, const std::string& tag = "") {
  return m.save(step, {{"kind", "ldm"}, {"note", step}}, files_for(step, tag), 0);
}

std::string model_text(const std::string& dir) { return read_file(dir + "/model.safetensors"); }

// How many checkpoints latest_valid() could choose from (valid ones in list()).
int valid_count(const CheckpointManager& m) {
  int n = 0;
  for (const auto& [step, path] : m.list()) {
    try {
      CheckpointManager::verify(path);
      ++n;
    } catch (const std::runtime_error&) {
    }
  }
  return n;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Checkpoint, SaveVerifyAndPrune) {
  CheckpointManager m(fresh_dir("prune"), 2, 4);
  for (int64_t s = 1; s <= 6; ++s) save(m, s);
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
  save(m, 1);
  std::string newest = save(m, 2);
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
  EXPECT_TRUE(contains(warnings[0], "b.bin")) << warnings[0];
  EXPECT_TRUE(contains(warnings[0], "checksum")) << warnings[0];
  fs::remove(newest + "/b.bin");
  std::string msg = lf::testing::error_of([&] { CheckpointManager::verify(newest); });
  EXPECT_TRUE(contains(msg, "b.bin: listed in state.json but missing")) << msg;
}

// Runs `body` in a child process with LF_CRASH_AT=point; returns the child's wait status.
int crash_child(const char* point, const std::function<void()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    setenv("LF_CRASH_AT", point, 1);
    body();
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
    save(m, 1);
    int status = crash_child(point, [&] {
      CheckpointManager child(dir, 1, 0);
      save(child, 2);
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << point << " did not crash";
    auto latest = m.latest_valid();
    ASSERT_TRUE(latest.has_value()) << point;
    // Before the rename the old one is the newest valid; during deletion the new one is.
    std::string want = std::string(point) == "ckpt.during_delete" ? "step-00000002" : "step-00000001";
    EXPECT_EQ(fs::path(*latest).filename(), want) << point;
    // And a later save completes and cleans up leftovers.
    save(m, 3);
    EXPECT_EQ(fs::path(*m.latest_valid()).filename(), "step-00000003");
    EXPECT_EQ(names_in(m.dir()), std::vector<std::string>{"step-00000003"}) << point;
  }
}

// Re-saving a step that exists: at every crash point the step stays valid (old or new content),
// the number of valid checkpoints never drops, and recover() + the next save leave exactly one
// folder per step. Both with RENAME_EXCHANGE and with the fallback that parks the old folder.
TEST(Checkpoint, ResaveOfAStepIsNeverWithoutThatStep) {
  struct Case {
    bool exchange;
    const char* point;
    const char* content_after;  // the step's content after the crash and recover()
  };
  const std::vector<Case> cases = {
      {true, "ckpt.before_rename", "old"},       {true, "ckpt.after_exchange", "new"},
      {true, "ckpt.during_delete", "new"},       {false, "ckpt.before_rename", "old"},
      {false, "ckpt.between_renames", "new"},    {false, "ckpt.during_delete", "new"},
  };
  for (const Case& c : cases) {
    const std::string what = std::string(c.exchange ? "exchange " : "fallback ") + c.point;
    std::string dir = fresh_dir(std::string("resave_") + (c.exchange ? "x_" : "f_") + c.point);
    CheckpointManager::use_rename_exchange(c.exchange);
    CheckpointManager m(dir, 3, 0);
    save(m, 1);
    std::string two = save(m, 2, "old");
    ASSERT_EQ(valid_count(m), 2) << what;
    int status = crash_child(c.point, [&] {
      CheckpointManager child(dir, 3, 0);
      save(child, 2, "new");
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << what << " did not crash";
    EXPECT_EQ(valid_count(m), 2) << what << ": a valid checkpoint went missing";
    ASSERT_TRUE(m.latest_valid().has_value()) << what;
    m.recover();
    EXPECT_EQ(model_text(two), std::string("weights of step 2") + c.content_after) << what;
    save(m, 3);
    EXPECT_EQ(names_in(m.dir()), (std::vector<std::string>{"step-00000001", "step-00000002", "step-00000003"}))
        << what;
    // Uninterrupted, the re-save replaces the content.
    save(m, 2, "again");
    EXPECT_EQ(model_text(two), "weights of step 2again") << what;
    EXPECT_EQ(valid_count(m), 3) << what;
  }
  CheckpointManager::use_rename_exchange(true);
}

TEST(Checkpoint, ParkedFolderIsListedForItsStepUntilRecovered) {
  CheckpointManager::use_rename_exchange(false);
  std::string dir = fresh_dir("parked");
  CheckpointManager m(dir, 3, 0);
  save(m, 1, "old");
  int status = crash_child("ckpt.between_renames", [&] {
    CheckpointManager child(dir, 3, 0);
    save(child, 1, "new");
  });
  CheckpointManager::use_rename_exchange(true);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_EQ(m.list().size(), 1u);
  const std::string parked = m.list()[0].second;
  EXPECT_TRUE(contains(parked, ".old-step-00000001-")) << parked;
  EXPECT_EQ(model_text(*m.latest_valid()), "weights of step 1old");  // still the old, valid one
  // A prune never deletes it while step-00000001 is missing; recover() puts the new one in place.
  auto log = m.recover();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(contains(log[0], "completed an interrupted replacement")) << log[0];
  EXPECT_EQ(model_text(m.dir() + "/step-00000001"), "weights of step 1new");
  save(m, 2);
  EXPECT_EQ(names_in(m.dir()), (std::vector<std::string>{"step-00000001", "step-00000002"}));
}

TEST(Checkpoint, AbandonAfterMovesLaterOnesAsideAndACrashIsFinishedByRecover) {
  std::string dir = fresh_dir("abandon");
  CheckpointManager m(dir, 10, 0);
  for (int64_t s = 1; s <= 4; ++s) save(m, s);
  int status = crash_child("ckpt.during_abandon", [&] {
    CheckpointManager child(dir, 10, 0);
    child.abandon_after(2);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(m.list().size(), 3u);  // one of 3 and 4 moved before the crash
  auto log = m.recover();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(contains(log[0], "finished moving aside")) << log[0];
  std::vector<int64_t> steps;
  for (auto& [s, p] : m.list()) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2}));
  auto abandoned = [&] {
    std::vector<std::string> found;
    for (const auto& name : names_in(m.dir())) {
      if (name.rfind("abandoned-", 0) != 0) continue;
      for (const auto& inner : names_in(m.dir() + "/" + name)) {
        CheckpointManager::verify(m.dir() + "/" + name + "/" + inner);  // moved whole, still valid
        found.push_back(inner);
      }
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  const std::vector<std::string> want = {"step-00000003", "step-00000004"};
  EXPECT_EQ(abandoned(), want);
  EXPECT_FALSE(fs::exists(m.dir() + "/resume-intent.json"));
  CheckpointManager small(dir, 1, 0);
  save(small, 3);  // a new step 3 of this history; the abandoned ones are never pruned
  EXPECT_EQ(abandoned(), want);
  EXPECT_EQ(fs::path(*m.latest_valid()).filename(), "step-00000003");
  EXPECT_EQ(m.list().size(), 1u);
}

TEST(Checkpoint, RefusesWhenDiskIsTooSmall) {
  CheckpointManager m(fresh_dir("disk"), 1, 0);
  std::string msg = lf::testing::error_of([&] { m.save(1, {{"kind", "ldm"}}, files_for(1), uint64_t(1) << 62); });
  EXPECT_TRUE(contains(msg, "free")) << msg;
}

}  // namespace
}  // namespace lf::launch
