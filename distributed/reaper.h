// The reaper an aborting rank leaves behind. Open MPI 4.1's mpirun, and its daemon (orted) on
// each host, end a job after MPI_Abort only once every host has reported its processes dead: a
// host that does not answer (cut off, dead) leaves mpirun, and the daemon on that host itself,
// waiting for good, holding the allocation. So before MPI_Abort a rank started by Open MPI
// spawns a small detached shell that, if this rank or its parent (mpirun or orted) is still
// alive `delay` seconds later, kills it. On every host some rank aborts (each one's collective
// deadline passes), so every host's Open MPI processes end, whichever side of a cut they are.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace lf::dist {

// Seconds an aborting rank gives mpirun/orted to end the job by themselves (they take about a
// second when every host answers).
inline constexpr double kLauncherReapDelayS = 10.0;

// A process, identified beyond its pid by its start time (field 22 of /proc/PID/stat), so that
// a pid reused by another process is never signalled.
struct ReapTarget {
  pid_t pid = 0;
  std::string start_time;
};

// The target for a live process, or nullopt when it is gone.
std::optional<ReapTarget> reap_target(pid_t pid);

// True for the command names (/proc/PID/comm) of Open MPI's launcher and daemons: mpirun,
// mpiexec, orterun, orted, prterun, prted.
bool is_open_mpi_launcher(const std::string& comm);

// Spawns (posix_spawn, its own session, stdio on /dev/null, no other descriptors) a /bin/sh
// that waits up to `delay_s`, leaving early when every target has gone, then SIGKILLs each
// target still alive. Returns the shell's pid, or -1 when it could not be started. Does not
// block; safe to call from any thread (no fork in this process).
pid_t spawn_reaper(const std::vector<ReapTarget>& targets, double delay_s);

// What abort_job calls before MPI_Abort: reaps this process and, when it is Open MPI's
// launcher or daemon, its parent. Under another launcher (srun) it does nothing.
void leave_launcher_reaper(double delay_s = kLauncherReapDelayS);

}  // namespace lf::dist
