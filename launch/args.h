// Command-line parsing with Boost.Program_options (subcommand flags, positional arguments,
// --section.key=value overrides) and --config FILE (INI, sections per concern).
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

// One `key = value` line of an INI file, its key prefixed with the [section] it is in.
struct IniEntry {
  std::string key;    // "train.run_dir"
  std::string value;  // everything after the first '=', trimmed ("runs/a#b")
  size_t line = 0;
};
// The entries of INI text in file order. A comment is a line whose first non-blank character
// is '#' or ';' (never part of a line: a value keeps every character). Throws UsageError
// naming `source` and the line for a line that is none of [section], key = value, comment.
std::vector<IniEntry> parse_ini(const std::string& text, const std::string& source);

}  // namespace lf::launch
