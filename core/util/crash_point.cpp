// Named crash points (see crash_point.h).
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

void crash_point(const char* name) {
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
  const char* spec = std::getenv("LF_PAUSE_AT");
  if (!spec || std::strcmp(spec, name) != 0) return;
  std::fprintf(stderr, "LF_PAUSE_AT: stopping the process at pause point '%s'\n", name);
  std::fflush(stderr);
  ::kill(::getpid(), SIGSTOP);
}

}  // namespace lf
