// Named crash and pause points (see crash_point.h).
#include "core/util/crash_point.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

namespace lf {
namespace {

// True when LF_PAUSE_AT names `name`: "NAME" (every hit), or "NAME:K" and this is the point's
// K-th hit, counting from 1.
bool pause_requested(const char* name) {
  const char* spec = std::getenv("LF_PAUSE_AT");
  if (!spec || !*spec) return false;
  std::string s(spec);
  long want = 0;
  auto colon = s.find(':');
  if (colon != std::string::npos) {
    want = std::strtol(s.c_str() + colon + 1, nullptr, 10);
    s.resize(colon);
  }
  if (s != name) return false;
  static std::mutex mu;
  static std::map<std::string, long> hits;
  std::lock_guard<std::mutex> lock(mu);
  const long n = ++hits[s];
  return want <= 0 || n == want;
}

}  // namespace

void crash_point(const char* name) {
  pause_point(name);  // every crash point is a pause point too
  const char* spec = std::getenv("LF_CRASH_AT");
  if (!spec || !*spec) return;
  std::string s(spec);
  long want = 1;
  auto colon = s.find(':');
  if (colon != std::string::npos) {
    want = std::strtol(s.c_str() + colon + 1, nullptr, 10);
    s.resize(colon);
  }
  if (s != name) return;
  static std::mutex mu;
  static std::map<std::string, long> hits;
  std::lock_guard<std::mutex> lock(mu);
  if (++hits[s] < want) return;
  std::fprintf(stderr, "LF_CRASH_AT: killing the process at crash point '%s' (hit %ld)\n", name,
               hits[s]);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);
}

void pause_point(const char* name) {
  if (!pause_requested(name)) return;
  std::fprintf(stderr, "LF_PAUSE_AT: stopping the process at pause point '%s'\n", name);
  std::fflush(stderr);
  ::kill(::getpid(), SIGSTOP);
  // Continued. A stop signal sent during the pause (the tests' SIGUSR1/SIGTERM) is process-directed:
  // the kernel may hand it to any thread, whose handler can run after this thread has gone on to
  // the next step boundary. Wait until no such signal is pending and give its handler a moment, so
  // that a signal sent while paused is seen at this point's step boundary (a test's premise), not
  // at a later one.
  sigset_t pending;
  for (int i = 0; i < 2000; ++i) {
    sigpending(&pending);
    bool any = false;
    for (int s : {SIGUSR1, SIGTERM, SIGINT}) any = any || sigismember(&pending, s) == 1;
    if (!any) break;
    ::usleep(500);
  }
  ::usleep(20000);
}

}  // namespace lf
