// The run-directory lock (see run_lock.h).
#include "launch/run_lock.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/util/fs.h"
#include "core/util/strings.h"
#include "distributed/rank_context.h"
#include "launch/config_registry.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

OSLock try_flock(int fd) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return OSLock::kAcquired;
  if (errno == EWOULDBLOCK) return OSLock::kHeldByOther;
  return OSLock::kUnsupported;  // ENOLCK, EOPNOTSUPP, ENOSYS: e.g. Lustre mounted without flock
}

std::string read_fd(int fd) {
  std::string out;
  char buf[4096];
  off_t off = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
    if (out.size() > (1 << 20)) break;  // a record is a few hundred bytes
  }
  return out;
}

std::optional<LockHolder> parse_record(const std::string& text) {
  if (text.find_first_not_of(" \n\t\r") == std::string::npos) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(text);
  LockHolder h;
  h.host = j.at("host").get<std::string>();
  h.pid = j.at("pid").get<int64_t>();
  h.slurm_job_id = j.value("slurm_job_id", std::string());
  h.started = j.value("started", std::string());
  h.command = j.value("command", std::string());
  h.os_locked = j.value("flock", true);
  return h;
}

void write_record(int fd, const LockHolder& h, const std::string& path) {
  const std::string text = nlohmann::json{{"host", h.host},       {"pid", h.pid},
                                          {"slurm_job_id", h.slurm_job_id}, {"started", h.started},
                                          {"command", h.command}, {"flock", h.os_locked}}
                               .dump(2) +
                           "\n";
  // In place, not by rename: the flock belongs to this inode.
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd) != 0)
    throw std::runtime_error(str(path, ": cannot write the lock record: ", std::strerror(errno)));
}

std::string refusal(const std::string& lock_path, const std::string& run_dir_key, const std::string& who,
                    const std::string& hint) {
  return str(lock_path, ": ", run_dir_key, " is being written by ", who,
             "; two jobs must not write one run directory. ", hint);
}

}  // namespace

LockHolder this_process(const std::string& command) {
  LockHolder h;
  h.host = dist::local_host_name();
  h.pid = ::getpid();
  const char* job = std::getenv("SLURM_JOB_ID");
  h.slurm_job_id = job ? job : "";
  h.started = utc_now();
  h.command = command;
  return h;
}

std::string describe(const LockHolder& h) {
  return str("host ", h.host, ", pid ", h.pid, h.slurm_job_id.empty() ? "" : ", Slurm job " + h.slurm_job_id,
             h.started.empty() ? "" : ", since " + h.started, h.command.empty() ? "" : " (" + h.command + ")");
}

LockDecision decide_lock(const std::optional<LockHolder>& holder, bool unreadable, OSLock os_lock, bool holder_alive,
                         const LockHolder& me, bool break_lock, const std::string& lock_path,
                         const std::string& run_dir_key) {
  const std::string wait_hint = "Wait for it to end or choose another " + run_dir_key;
  if (!holder) {
    if (os_lock != OSLock::kHeldByOther)
      return {unreadable ? LockAction::kTakeOver : LockAction::kTake,
              unreadable ? str(lock_path, ": replacing an unreadable lock record (no process holds the lock)") : ""};
    return {LockAction::kRefuse, refusal(lock_path, run_dir_key, "another process (it holds the OS lock; its record "
                                         "is not written or unreadable)", wait_hint + ".")};
  }
  const LockHolder& h = *holder;
  const bool same_host = h.host == me.host;
  if (same_host && h.pid == me.pid) return {LockAction::kTake, ""};
  const bool same_job = !h.slurm_job_id.empty() && h.slurm_job_id == me.slurm_job_id;
  if (os_lock == OSLock::kHeldByOther) {
    // Someone holds the OS lock: on this host it is a live process; from another host it may be
    // a dead node's lock that the file server has not expired yet.
    if (!same_host && same_job)
      return {LockAction::kTakeOver, str(lock_path, ": taking over the lock of Slurm job ", h.slurm_job_id,
                                         " (this job, requeued; its previous run on ", describe(h), ")")};
    if (!same_host && break_lock)
      return {LockAction::kBreak, str(lock_path, ": --break-lock: breaking the lock of ", describe(h))};
    return {LockAction::kRefuse,
            refusal(lock_path, run_dir_key, describe(h),
                    same_host ? wait_hint + " (that process is alive on this host; stop it first to take over)."
                              : wait_hint + "; if that job is gone (its host died), pass --break-lock.")};
  }
  if (same_job)
    return {LockAction::kTakeOver, str(lock_path, ": taking over the lock of Slurm job ", h.slurm_job_id,
                                       " (this job, requeued; previously ", describe(h), ")")};
  if (same_host) {
    // A live pid that held the flock would hold it still: with the flock ours, it is a reused pid.
    if (!holder_alive || (os_lock == OSLock::kAcquired && h.os_locked))
      return {LockAction::kTakeOver, str(lock_path, ": taking over the stale lock of ", describe(h),
                                         " (no such process holds it any more)")};
    if (break_lock) return {LockAction::kBreak, str(lock_path, ": --break-lock: breaking the lock of ", describe(h))};
    return {LockAction::kRefuse, refusal(lock_path, run_dir_key, describe(h),
                                         wait_hint + "; if that process is not latentforge, pass --break-lock.")};
  }
  if (break_lock) return {LockAction::kBreak, str(lock_path, ": --break-lock: breaking the lock of ", describe(h))};
  return {LockAction::kRefuse,
          refusal(lock_path, run_dir_key, describe(h),
                  wait_hint + "; if that job is gone (its host died or it was killed), pass --break-lock.")};
}

std::optional<LockHolder> read_lock_record(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    return parse_record(read_file(path));
  } catch (const std::exception& e) {
    throw std::runtime_error(str(path, ": unreadable lock record: ", e.what()));
  }
}

std::unique_ptr<RunDirLock> RunDirLock::acquire(const std::string& run_dir, const std::string& run_dir_key,
                                                bool break_lock, const std::string& command) {
  fs::create_directories(run_dir);
  const std::string path = (fs::path(run_dir) / kRunLockName).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(str(path, ": cannot open the run directory's lock: ", std::strerror(errno)));
  std::unique_ptr<RunDirLock> lock(new RunDirLock(path, fd));
  const OSLock os_lock = try_flock(fd);
  std::optional<LockHolder> holder;
  bool unreadable = false;
  try {
    holder = parse_record(read_fd(fd));
  } catch (const std::exception&) {
    unreadable = true;
  }
  LockHolder me = this_process(command);
  me.os_locked = os_lock == OSLock::kAcquired;
  const LockDecision d = decide_lock(holder, unreadable, os_lock, holder && process_alive(holder->pid), me,
                                     break_lock, path, run_dir_key);
  if (d.action == LockAction::kRefuse) {
    lock->fd_ = -1;
    ::close(fd);  // releases nothing it did not take: our flock attempt failed or was ours
    throw UsageError(d.message);
  }
  if (!d.message.empty()) LOG(WARNING) << d.message;
  if (os_lock == OSLock::kUnsupported)
    LOG(WARNING) << path << ": the file system does not support flock(); the lock relies on its record alone";
  write_record(fd, me, path);
  return lock;
}

RunDirLock::~RunDirLock() {
  if (fd_ < 0) return;
  // Cleared, not deleted: unlinking a flock()ed file lets two processes lock two inodes.
  if (::ftruncate(fd_, 0) == 0) ::fsync(fd_);
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

}  // namespace lf::launch
