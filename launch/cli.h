// The latentforge command line: subcommand dispatch, global flags, exit codes.
#pragma once

namespace lf::launch {

// Exit codes of every subcommand (docs/cli.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,  // a runtime failure (I/O, a diverged run, a failed rank)
  kExitUsage = 2,    // bad usage or config, detected before any work
};

// Runs latentforge with the process's arguments; returns the exit code.
int run_cli(int argc, char** argv);

}  // namespace lf::launch
