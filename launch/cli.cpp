// Subcommand dispatch (placeholder until the config layer lands in the next commit).
#include "launch/cli.h"

#include <cstdio>
#include <cstring>

namespace lf::launch {

int run_cli(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("latentforge %s\n", LF_VERSION);
    return kExitOk;
  }
  std::printf("usage: latentforge <subcommand> [options]\n");
  return argc > 1 ? kExitUsage : kExitOk;
}

}  // namespace lf::launch
