// The run-directory lock: a live second writer is refused with a message naming the holder; a
// requeue of the same Slurm job and a stale lock of a dead process on this host are taken over;
// a record from another host is never broken without --break-lock; a clean end clears it. The
// rules as a table (decide_lock), then with real processes and files.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/util/fs.h"
#include "distributed/rank_context.h"
#include "launch/config_registry.h"
#include "launch/run_lock.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

using lf::testing::contains;

std::string fresh_dir(const std::string& name) { return lf::testing::fresh_dir("lock_" + name); }

LockHolder holder(const std::string& host, int64_t pid, const std::string& job = "") {
  LockHolder h;
  h.host = host;
  h.pid = pid;
  h.slurm_job_id = job;
  h.started = "2030-01-02T03:04:05Z";
  h.command = "latentforge train";
  return h;
}

LockDecision decide(const std::optional<LockHolder>& h, OSLock os, bool alive, const LockHolder& me,
                    bool break_lock = false) {
  return decide_lock(h, false, os, alive, me, break_lock, "RUN/writer.lock", "train.run_dir");
}

TEST(RunLockRules, TheTable) {
  const LockHolder me = holder("node1", 100, "55");
  // No record, or the record of this very process.
  EXPECT_EQ(decide(std::nullopt, OSLock::kAcquired, false, me).action, LockAction::kTake);
  EXPECT_EQ(decide(holder("node1", 100), OSLock::kAcquired, true, me).action, LockAction::kTake);
  // A live holder on this host (it holds the flock): refused, naming it; --break-lock cannot help.
  LockDecision d = decide(holder("node1", 7, "41"), OSLock::kHeldByOther, true, me, true);
  EXPECT_EQ(d.action, LockAction::kRefuse);
  EXPECT_TRUE(contains(d.message, "RUN/writer.lock: train.run_dir is being written by host node1, pid 7, Slurm job "
                                  "41, since 2030-01-02T03:04:05Z (latentforge train)")) << d.message;
  EXPECT_TRUE(contains(d.message, "alive on this host")) << d.message;
  // A stale record of a dead process on this host; a reused pid (flock free): taken over.
  EXPECT_EQ(decide(holder("node1", 7), OSLock::kAcquired, false, me).action, LockAction::kTakeOver);
  EXPECT_EQ(decide(holder("node1", 7), OSLock::kAcquired, true, me).action, LockAction::kTakeOver);
  EXPECT_EQ(decide(holder("node1", 7), OSLock::kUnsupported, false, me).action, LockAction::kTakeOver);
  // Without a working flock a live pid on this host may be the holder: refused.
  EXPECT_EQ(decide(holder("node1", 7), OSLock::kUnsupported, true, me).action, LockAction::kRefuse);
  // The same Slurm job requeued, on any host, flock held (an expiring lease) or not: taken over.
  d = decide(holder("node9", 7, "55"), OSLock::kHeldByOther, true, me);
  EXPECT_EQ(d.action, LockAction::kTakeOver);
  EXPECT_TRUE(contains(d.message, "taking over the lock of Slurm job 55")) << d.message;
  EXPECT_EQ(decide(holder("node9", 7, "55"), OSLock::kAcquired, false, me).action, LockAction::kTakeOver);
  // Another host, another job: refused with the hint, broken only with --break-lock.
  for (OSLock os : {OSLock::kAcquired, OSLock::kHeldByOther, OSLock::kUnsupported}) {
    d = decide(holder("node9", 7, "41"), os, false, me);
    EXPECT_EQ(d.action, LockAction::kRefuse);
    EXPECT_TRUE(contains(d.message, "host node9, pid 7, Slurm job 41")) << d.message;
    EXPECT_TRUE(contains(d.message, "pass --break-lock")) << d.message;
    d = decide(holder("node9", 7, "41"), os, false, me, true);
    EXPECT_EQ(d.action, LockAction::kBreak);
    EXPECT_TRUE(contains(d.message, "--break-lock: breaking the lock of host node9")) << d.message;
  }
  // A record a crash left torn: replaced when no process holds the flock, else refused.
  EXPECT_EQ(decide_lock(std::nullopt, true, OSLock::kAcquired, false, me, false, "L", "K").action,
            LockAction::kTakeOver);
  EXPECT_EQ(decide_lock(std::nullopt, true, OSLock::kHeldByOther, false, me, false, "L", "K").action,
            LockAction::kRefuse);
}

// A child process that takes the lock and holds it until killed; returns its pid.
pid_t hold_in_child(const std::string& run_dir) {
  int ready[2];
  EXPECT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    auto lock = RunDirLock::acquire(run_dir, "train.run_dir", false, "latentforge train");
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(3);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char c = 0;
  EXPECT_EQ(read(ready[0], &c, 1), 1) << "the child could not take the lock";
  close(ready[0]);
  return pid;
}

TEST(RunDirLock, SecondWriterIsRefusedAndAStaleLockOfADeadProcessIsTakenOver) {
  const std::string run = fresh_dir("second");
  pid_t child = hold_in_child(run);
  const std::string msg = lf::testing::error_of<UsageError>(
      [&] { RunDirLock::acquire(run, "train.run_dir", /*break_lock=*/true, "latentforge train"); });
  EXPECT_TRUE(contains(msg, run + "/writer.lock: train.run_dir is being written by host " + dist::local_host_name() +
                                ", pid " + std::to_string(child)))
      << msg;
  EXPECT_TRUE(contains(msg, "two jobs must not write one run directory")) << msg;
  kill(child, SIGKILL);  // kill -9: the record stays, the flock goes
  waitpid(child, nullptr, 0);
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->pid, child);
  auto lock = RunDirLock::acquire(run, "train.run_dir", false, "latentforge train");
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->pid, getpid());
  lock.reset();  // a clean end clears the record: the next writer takes it silently
  EXPECT_FALSE(read_lock_record(run + "/writer.lock").has_value());
  EXPECT_TRUE(fs::exists(run + "/writer.lock"));
}

void write_record(const std::string& run, const LockHolder& h) {
  std::ofstream(run + "/writer.lock", std::ios::trunc)
      << nlohmann::json{{"host", h.host}, {"pid", h.pid}, {"slurm_job_id", h.slurm_job_id},
                        {"started", h.started}, {"command", h.command}}
             .dump();
}

TEST(RunDirLock, RequeueOfTheSameSlurmJobTakesOverAndAnotherHostNeedsBreakLock) {
  const std::string run = fresh_dir("slurm");
  write_record(run, holder("another-host", 4242, "9001"));
  setenv("SLURM_JOB_ID", "9001", 1);
  auto lock = RunDirLock::acquire(run, "train.run_dir", false, "latentforge train");
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->slurm_job_id, "9001");
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->host, dist::local_host_name());
  lock.reset();
  unsetenv("SLURM_JOB_ID");

  write_record(run, holder("another-host", 4242, "9001"));
  const std::string msg = lf::testing::error_of<UsageError>(
      [&] { RunDirLock::acquire(run, "vae_train.run_dir", false, "latentforge vae train"); });
  EXPECT_TRUE(contains(msg, "vae_train.run_dir is being written by host another-host, pid 4242, Slurm job 9001"))
      << msg;
  EXPECT_TRUE(contains(msg, "pass --break-lock")) << msg;
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->host, "another-host");  // untouched
  lock = RunDirLock::acquire(run, "vae_train.run_dir", true, "latentforge vae train");
  EXPECT_EQ(read_lock_record(run + "/writer.lock")->pid, getpid());
}

}  // namespace
}  // namespace lf::launch
