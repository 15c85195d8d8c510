// Command-line and INI parsing with Boost.Program_options: subcommand flags, positional
// arguments, --config FILE (INI, sections per concern) and --section.key=value overrides.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "launch/config_registry.h"

namespace lf::launch {

// A subcommand's own flag (not a config key), e.g. --resume auto, --finalize.
struct FlagSpec {
  std::string name;       // "resume"
  bool takes_value;       // false for switches
  std::string value_name; // "auto|PATH"
  std::string doc;
};

struct ParsedArgs {
  std::map<std::string, std::string> flags;  // flags given (switches map to "true")
  std::vector<std::string> positional;
  std::vector<std::string> config_files;
  bool help = false;
  bool has(const std::string& flag) const { return flags.count(flag) > 0; }
  std::string flag(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

// Parses `args` (after the subcommand name): flags, positionals, --config files (applied in
// order) and then every --section.key=value override, into `registry`. Throws UsageError
// naming the unknown option or key (with the closest valid one), the file, or the bad value.
ParsedArgs parse_command_line(const std::vector<std::string>& args, const std::vector<FlagSpec>& flags,
                              ConfigRegistry& registry);

// Applies one INI file to `registry`; unknown keys are errors naming the file and the key.
void apply_config_file(const std::string& path, ConfigRegistry& registry);

}  // namespace lf::launch
