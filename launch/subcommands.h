// The table of subcommands; each lives in its own cmd_*.cpp and declares the config sections and
// keys it reads: its --help and --print-config list exactly those, and it can read nothing else
// (config_view.h).
#pragma once
#include <string>
#include <vector>

#include "launch/args.h"
#include "launch/config_view.h"

namespace lf::launch {

struct Invocation {
  const ParsedArgs& args;
  const ConfigView& config;
};

struct Subcommand {
  std::string name;         // "train", "vae train"
  std::string summary;      // one line for the top-level help
  std::string usage;        // after "latentforge NAME"
  std::string description;  // a paragraph for NAME --help
  std::vector<FlagSpec> flags;
  std::vector<std::string> reads;  // config sections ("train") and single keys ("vae.weights")
  int (*run)(const Invocation&);
};

const std::vector<Subcommand>& subcommands();

int run_inspect(const Invocation& inv);

}  // namespace lf::launch
