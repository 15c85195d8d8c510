// The table of subcommands; each lives in its own cmd_*.cpp. A subcommand whose issue has not
// landed is simply absent from this table (and from --help).
#pragma once
#include <string>
#include <vector>

#include "launch/args.h"
#include "launch/config.h"

namespace lf::launch {

struct Invocation {
  const ParsedArgs& args;
  Config& config;
  const ConfigRegistry& registry;
};

struct Subcommand {
  std::string name;         // "train", "vae train"
  std::string summary;      // one line for the top-level help
  std::string usage;        // after "latentforge NAME"
  std::string description;  // a paragraph for NAME --help
  std::vector<FlagSpec> flags;
  std::vector<std::string> sections;  // config sections listed by NAME --help
  int (*run)(const Invocation&);
};

const std::vector<Subcommand>& subcommands();

int run_inspect(const Invocation& inv);

}  // namespace lf::launch
