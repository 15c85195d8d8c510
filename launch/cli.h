// The latentforge command line: subcommand dispatch, global flags, exit codes.
#pragma once
#include <string>

namespace lf::launch {

// Exit codes of every subcommand (docs/cli.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,  // a runtime failure (I/O, a diverged run, a failed rank)
  kExitUsage = 2,    // bad usage or config, detected before any work
};

class ConfigRegistry;
// The table of every config key (docs/cli.md embeds it; a test keeps them equal).
std::string markdown_key_table(const ConfigRegistry& registry);

struct Subcommand;
// The text of `latentforge NAME --help`: usage, flags, and every config key the subcommand reads.
std::string subcommand_help(const Subcommand& s);

// Runs latentforge with the process's arguments; returns the exit code.
int run_cli(int argc, char** argv);

}  // namespace lf::launch
