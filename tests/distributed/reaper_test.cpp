// The reaper an aborting rank leaves for mpirun/orted: it kills its targets after the delay,
// never a process whose start time differs (a reused pid), and leaves early once all are gone.
#include "distributed/reaper.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace lf::dist {
namespace {

pid_t start_sleeper() {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds` for `pid` (our child) to end; its wait status, or -1 when still alive.
int wait_for(pid_t pid, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST(Reaper, KnowsOpenMPIsLaunchers) {
  for (const char* name : {"mpirun", "orterun", "orted", "prted"}) EXPECT_TRUE(is_open_mpi_launcher(name)) << name;
  for (const char* name : {"slurmstepd", "bash", "latentforge", ""}) EXPECT_FALSE(is_open_mpi_launcher(name)) << name;
}

TEST(Reaper, TargetOfThisProcess) {
  const auto self = reap_target(getpid());
  ASSERT_TRUE(self.has_value());
  EXPECT_EQ(self->pid, getpid());
  EXPECT_FALSE(self->start_time.empty());
  EXPECT_EQ(reap_target(getpid())->start_time, self->start_time);
  EXPECT_FALSE(reap_target(0).has_value());
}

TEST(Reaper, KillsATargetStillAliveAfterTheDelay) {
  const pid_t victim = start_sleeper();
  const auto target = reap_target(victim);
  ASSERT_TRUE(target.has_value());
  const pid_t reaper = spawn_reaper({*target}, 1.0);
  ASSERT_GT(reaper, 0);
  EXPECT_EQ(wait_for(victim, 0.5), -1);  // not before the delay
  const int status = wait_for(victim, 5.0);
  ASSERT_NE(status, -1) << "the reaper did not kill the target";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_NE(wait_for(reaper, 5.0), -1);
}

TEST(Reaper, SparesAProcessWithAnotherStartTime) {
  const pid_t bystander = start_sleeper();
  const pid_t reaper = spawn_reaper({ReapTarget{bystander, "1"}}, 1.0);
  ASSERT_GT(reaper, 0);
  // With its only target "gone" (start time differs) the reaper leaves at once.
  EXPECT_NE(wait_for(reaper, 3.0), -1);
  EXPECT_EQ(wait_for(bystander, 0.2), -1);
  kill(bystander, SIGKILL);
  wait_for(bystander, 5.0);
}

TEST(Reaper, LeavesEarlyWhenTheTargetsEndByThemselves) {
  const pid_t victim = start_sleeper();
  const pid_t reaper = spawn_reaper({*reap_target(victim)}, 30.0);
  ASSERT_GT(reaper, 0);
  kill(victim, SIGTERM);
  wait_for(victim, 5.0);
  EXPECT_NE(wait_for(reaper, 5.0), -1) << "the reaper stayed for its whole delay";
}

}  // namespace
}  // namespace lf::dist
