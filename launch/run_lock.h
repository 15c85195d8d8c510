// One writer per run directory: `train` and `vae train` hold RUN_DIR/writer.lock while they run
// (rank 0 takes it before any work), so a duplicate sbatch or a copy started by hand cannot
// write checkpoints into the same run. The file holds a JSON record of the holder (host, pid,
// Slurm job id, start time, command) and is flock()ed where the file system supports it.
// Readers (`sample`, `eval`, `inspect`) never take or need it. Rules (docs/cli.md, "The run
// directory lock"):
//  * a live holder refuses a second writer, with a message naming it;
//  * a requeue of the same Slurm job, and a stale record of a dead process on this host, are
//    taken over (logged);
//  * a record from another host is never broken silently: --break-lock does it (logged).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace lf::launch {

inline constexpr const char* kRunLockName = "writer.lock";

struct LockHolder {
  std::string host;
  int64_t pid = 0;
  std::string slurm_job_id;  // "" outside Slurm
  std::string started;       // UTC, ISO 8601
  std::string command;
  bool os_locked = true;  // it holds the flock (false: unsupported, or taken over without it)
};

// This process as a holder (host, pid, SLURM_JOB_ID, now, `command`).
LockHolder this_process(const std::string& command);
// "host node7, pid 4242, Slurm job 991, since 2025-01-02T03:04:05Z (latentforge train)".
std::string describe(const LockHolder& h);

// What flock() said.
enum class OSLock { kAcquired, kHeldByOther, kUnsupported };

enum class LockAction { kTake, kTakeOver, kBreak, kRefuse };
struct LockDecision {
  LockAction action = LockAction::kRefuse;
  std::string message;  // why (a log line for kTakeOver/kBreak, the error for kRefuse)
};

// The rules above as a pure function. `holder`: the record found (nullopt: none, or empty
// after a clean release); `unreadable`: a record that could not be parsed; `holder_alive`:
// whether holder->pid is a live process (meaningful on the same host only); `run_dir_key` and
// `lock_path` name the run directory and the file in messages.
LockDecision decide_lock(const std::optional<LockHolder>& holder, bool unreadable, OSLock os_lock,
                         bool holder_alive, const LockHolder& me, bool break_lock, const std::string& lock_path,
                         const std::string& run_dir_key);

class RunDirLock {
 public:
  // Takes the lock of `run_dir` (creating the folder), following decide_lock; logs a take-over
  // or a break as a warning. Throws UsageError (exit 2) with the decision's message when it
  // refuses. Does not block.
  static std::unique_ptr<RunDirLock> acquire(const std::string& run_dir, const std::string& run_dir_key,
                                             bool break_lock, const std::string& command);
  // Clears the record and releases the OS lock (a clean end: the next job takes it silently).
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  RunDirLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

// The record in `path` as the lock's holder sees it; nullopt when absent or empty. Throws
// std::runtime_error when it exists but cannot be parsed (for inspect and tests).
std::optional<LockHolder> read_lock_record(const std::string& path);

}  // namespace lf::launch
