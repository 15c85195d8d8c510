// The launcher reaper an aborting rank leaves behind (see reaper.h).
#include "distributed/reaper.h"

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

extern char** environ;

namespace lf::dist {
namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The shell: $1 is the delay in whole seconds, then come pid/start-time pairs. A target is alive
// while /proc/PID/stat shows the same start time (field 22, counted after the command name,
// which may contain spaces and ends with the last ") ") and a state other than Z (a zombie has
// ended; only its parent's wait is missing).
constexpr const char* kScript = R"sh(
delay=$1; shift
alive() { want=$2; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*") "}; set -- $s; [ "$1" != Z ] && [ "${20}" = "$want" ]; }
any_alive() { while [ $# -ge 2 ]; do alive "$1" "$2" && return 0; shift 2; done; return 1; }
i=0
while [ "$i" -lt "$delay" ]; do any_alive "$@" || exit 0; sleep 1; i=$((i + 1)); done
while [ $# -ge 2 ]; do alive "$1" "$2" && kill -KILL "$1" 2>/dev/null; shift 2; done
exit 0
)sh";

}  // namespace

std::optional<ReapTarget> reap_target(pid_t pid) {
  if (pid <= 1) return std::nullopt;
  const std::string stat = read_first_line("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(") ");
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // After the command name come state (field 3) ... start time (field 22): the 20th.
  for (int i = 0; i < 20 && (fields >> field); ++i) {
    if (i == 19) return ReapTarget{pid, field};
  }
  return std::nullopt;
}

bool is_open_mpi_launcher(const std::string& comm) {
  for (const char* name : {"mpirun", "mpiexec", "orterun", "orted", "prterun", "prted"})
    if (comm == name) return true;
  return false;
}

pid_t spawn_reaper(const std::vector<ReapTarget>& targets, double delay_s) {
  if (targets.empty()) return -1;
  std::vector<std::string> args = {"/bin/sh", "-c", kScript, "lf-launcher-reaper",
                                   std::to_string(static_cast<long>(std::ceil(std::max(0.0, delay_s))))};
  for (const ReapTarget& t : targets) {
    args.push_back(std::to_string(t.pid));
    args.push_back(t.start_time);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t files;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&files);
  posix_spawnattr_init(&attr);
  // No descriptor of ours may stay open in the shell: Open MPI counts a rank as ended only when
  // its stdout and stderr reach end-of-file, and peers' sockets would stay connected.
  for (int fd = 0; fd <= 2; ++fd) posix_spawn_file_actions_addopen(&files, fd, "/dev/null", O_RDWR, 0);
  posix_spawn_file_actions_addclosefrom_np(&files, 3);
  // Its own session: no signal meant for the rank's process group reaches it.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/bin/sh", &files, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? pid : -1;
}

void leave_launcher_reaper(double delay_s) {
  const pid_t parent = getppid();
  if (!is_open_mpi_launcher(read_first_line("/proc/" + std::to_string(parent) + "/comm"))) return;
  std::vector<ReapTarget> targets;
  if (auto self = reap_target(getpid())) targets.push_back(*self);
  if (auto launcher = reap_target(parent)) targets.push_back(*launcher);
  spawn_reaper(targets, delay_s);
}

}  // namespace lf::dist
