// "One rank fails: the whole job ends within seconds, naming it": rank 0 starts child jobs
// (`mpirun -np 2 <this binary> --fail-mode=...`) and checks their exit status, duration and
// stderr. The other ranks wait; every rank then agrees on the outcome.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/test_util.h"
#include "distributed/agreement.h"
#include "tests/mpi/mpi_test_main.h"

extern char** environ;

namespace lf::dist {
namespace {

struct ChildJob {
  int exit_code = -1;  // 128 + signal when killed
  double seconds = 0.0;
  std::string output;  // stderr, then stdout
  bool timed_out = false;
  std::string stderr_text;
};

std::string read_and_remove(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(path.c_str());
  return text.str();
}

// The parent job's MPI variables would make the child mpirun believe it is one of our ranks.
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const bool mpi_internal = kv.rfind("OMPI_", 0) == 0 || kv.rfind("PMIX_", 0) == 0 ||
                              kv.rfind("ORTE_", 0) == 0 || kv.rfind("OPAL_", 0) == 0;
    const bool keep = kv.rfind("OMPI_ALLOW_RUN_AS_ROOT", 0) == 0;
    if (!mpi_internal || keep) env.push_back(kv);
  }
  return env;
}

std::string self_path() {
  char buffer[4096] = {0};
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

ChildJob run_child_job(const std::string& mode, double limit_s) {
  const char* tmp = std::getenv("LF_TEST_TMP");
  const std::string log = std::string(tmp ? tmp : "/tmp") + "/test_mpi_fail_" + mode + "_" +
                          std::to_string(getpid());
  const std::string err_log = log + ".stderr";
  const std::string out_log = log + ".stdout";
  const char* mpirun_env = std::getenv("LF_MPIRUN");
  const std::string mpirun = mpirun_env ? mpirun_env : "mpirun";
  std::vector<std::string> args{mpirun, "--oversubscribe", "--bind-to", "none", "-np", "2",
                                self_path(), "--fail-mode=" + mode};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = child_environment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);  // its own group, so a runaway job can be killed whole

  ChildJob job;
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, mpirun.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    job.output = "posix_spawnp(" + mpirun + ") failed: " + std::strerror(rc);
    return job;
  }
  int status = 0;
  while (true) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (done == pid) break;
    if (job.seconds > limit_s) {
      job.timed_out = true;
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  job.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  job.stderr_text = read_and_remove(err_log);
  job.output = job.stderr_text + "\n--- stdout ---\n" + read_and_remove(out_log);
  return job;
}

// Runs the child job on rank 0 only; `check` adds failures there. All ranks wait for it.
void on_rank0(const std::string& mode, const std::function<void(const ChildJob&)>& check) {
  auto comm = testkit::test_world();
  if (comm->rank() == 0) {
    const ChildJob job = run_child_job(mode, 40.0);
    check(job);
  }
  comm->barrier(Deadline::after(Seconds(90)), "barrier after the --fail-mode=" + mode + " job");
}

using lf::testing::contains;

TEST(JobFailure, ThrowingRankEndsTheJobWithItsMessage) {
  on_rank0("throw", [](const ChildJob& job) {
    EXPECT_FALSE(job.timed_out) << job.output;
    EXPECT_NE(job.exit_code, 0) << job.output;
    EXPECT_LT(job.seconds, 20.0) << job.output;
    EXPECT_TRUE(contains(job.stderr_text, "[rank 1/2 ")) << job.output;
    EXPECT_TRUE(contains(job.stderr_text, "injected failure: cannot open cache/shard-00003.h5 (rank 1)"))
        << job.output;
  });
}

TEST(JobFailure, StuckRankTripsTheDeadlineNamingTheOperation) {
  on_rank0("hang", [](const ChildJob& job) {
    EXPECT_FALSE(job.timed_out) << job.output;
    EXPECT_NE(job.exit_code, 0) << job.output;
    EXPECT_LT(job.seconds, 20.0) << job.output;
    EXPECT_TRUE(contains(job.stderr_text, "[rank 0/2 ")) << job.output;
    EXPECT_TRUE(contains(job.stderr_text, "barrier before step 41 has not completed after 1.5 s"))
        << job.output;
  });
}

TEST(JobFailure, DeadRankEndsTheJob) {
  on_rank0("die", [](const ChildJob& job) {
    EXPECT_FALSE(job.timed_out) << job.output;
    EXPECT_NE(job.exit_code, 0) << job.output;
    EXPECT_LT(job.seconds, 20.0) << job.output;
  });
}

}  // namespace
}  // namespace lf::dist
