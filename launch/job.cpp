// Job: logging set-up and the failure policy of one subcommand run (see job.h).
#include "launch/job.h"

#include <glog/logging.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include "core/util/strings.h"
#include "launch/cli.h"
#include "launch/config_registry.h"
#include "launch/rank_context.h"

namespace lf::launch {

Job::Job(const std::string& name, const char* argv0) : name_(name) { init_logging(argv0); }

int Job::run(const std::function<int()>& body) {
  int code = kExitOk;
  std::string message;
  try {
    return body();
  } catch (const std::invalid_argument& e) {
    code = kExitUsage;
    message = e.what();
  } catch (const c10::Error& e) {
    code = kExitRuntime;
    message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    code = kExitRuntime;
    message = e.what();
  }
  fail_job(str(name_, ": error: ", message), code);
  return code;
}

}  // namespace lf::launch
