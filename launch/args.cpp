// Config files (a small INI reader with one comment rule, docs/cli.md) and the command line
// (Boost.Program_options) into the config registry (see args.h).
#include "launch/args.h"

#include <boost/program_options.hpp>
#include <filesystem>

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace po = boost::program_options;

namespace lf::launch {

namespace {

constexpr size_t kMaxConfigFileBytes = 16 << 20;

po::options_description key_options(const ConfigRegistry& registry) {
  po::options_description desc("config keys");
  for (const auto& key : registry.keys()) desc.add_options()(key.c_str(), po::value<std::string>());
  return desc;
}

std::vector<std::string> flag_names(const std::vector<FlagSpec>& flags) {
  std::vector<std::string> names = {"help", "config"};
  for (const auto& f : flags) names.push_back(f.name);
  return names;
}

}  // namespace

void apply_config_file(const std::string& path, ConfigRegistry& registry) {
  // The path itself is untrusted text: a name longer than the file system allows made
  // std::filesystem throw past every handler. Errors quote a bounded excerpt of it.
  const std::string shown = excerpt(path, 200);
  std::error_code ec;
  const bool regular = std::filesystem::is_regular_file(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw UsageError(str("config file '", shown, "': cannot be read (", ec.message(), ")"));
  if (!regular)
    throw UsageError(str("config file '", shown, "': not found (expected an INI file, see configs/)"));
  std::string text;
  try {
    text = read_file(path, kMaxConfigFileBytes);
  } catch (const std::runtime_error& e) {
    throw UsageError(str("config file '", shown, "': cannot be read (",
                         std::string(e.what()).substr(path.size() + 2), ")"));
  }
  for (const auto& entry : parse_ini(text, shown)) {
    if (!registry.has(entry.key))
      throw UsageError(registry.unknown_key_message(excerpt(entry.key), shown));
    registry.set(entry.key, entry.value, shown);
  }
}

std::vector<IniEntry> parse_ini(const std::string& text, const std::string& source) {
  std::vector<IniEntry> out;
  std::string section;
  size_t line_no = 0;
  for (const std::string& raw : split(text, '\n')) {
    ++line_no;
    const std::string line = trim(raw);  // also drops a '\r' of CRLF files
    // A comment is a whole line starting with '#' or ';'; a value keeps every character after
    // '=' (so `dir = runs/a#b` is "runs/a#b", where Boost cut it to "runs/a").
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    auto fail = [&](const std::string& what) {
      throw UsageError(str("config file '", source, "' line ", line_no, ": ", what));
    };
    if (line[0] == '[') {
      if (line.back() != ']' || line.size() < 3)
        fail(str("'", excerpt(line), "' is not a [section] header"));
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos)
      fail(str("'", excerpt(line), "' is neither [section], key = value nor a comment (# or ;)"));
    const std::string key = trim(line.substr(0, eq));
    if (key.empty()) fail(str("'", excerpt(line), "' has no key before '='"));
    out.push_back({section.empty() ? key : section + "." + key, trim(line.substr(eq + 1)), line_no});
  }
  return out;
}

ParsedArgs parse_command_line(const std::vector<std::string>& args, const std::vector<FlagSpec>& flags,
                              ConfigRegistry& registry) {
  po::options_description desc;
  desc.add_options()("help,h", "show help")("config", po::value<std::vector<std::string>>(), "INI file");
  for (const auto& f : flags) {
    if (f.takes_value)
      desc.add_options()(f.name.c_str(), po::value<std::string>());
    else
      desc.add_options()(f.name.c_str(), po::bool_switch());
  }
  desc.add(key_options(registry));
  desc.add_options()("positional__", po::value<std::vector<std::string>>());
  po::positional_options_description pos;
  pos.add("positional__", -1);

  // "--key=" (an empty value, e.g. to clear a path the INI sets) is refused by Boost's adjacent
  // form; it is the same as "--key ''", which Boost accepts.
  std::vector<std::string> split_args;
  for (const auto& a : args) {
    if (a.size() > 3 && a.compare(0, 2, "--") == 0 && a.back() == '=' && a.find('=') == a.size() - 1) {
      split_args.push_back(a.substr(0, a.size() - 1));
      split_args.emplace_back();
    } else {
      split_args.push_back(a);
    }
  }
  po::parsed_options parsed(nullptr);
  try {
    int style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    parsed = po::command_line_parser(split_args).options(desc).positional(pos).style(style)
                 .allow_unregistered().run();
  } catch (const po::error& e) {
    throw UsageError(str("command line: ", e.what()));
  }

  ParsedArgs out;
  std::vector<std::pair<std::string, std::string>> overrides;
  std::vector<std::string> known_flags = flag_names(flags);
  for (const auto& o : parsed.options) {
    if (o.unregistered) {
      std::string name = o.string_key;
      while (!name.empty() && name[0] == '-') name.erase(0, 1);
      auto eq = name.find('=');
      if (eq != std::string::npos) name.resize(eq);
      if (name.find('.') != std::string::npos) throw UsageError(registry.unknown_key_message(name, "command line"));
      std::vector<std::string> all = known_flags;
      for (const auto& k : registry.keys()) all.push_back(k);
      std::string hint = closest_match(name, all);
      throw UsageError(str("unknown option '--", name, "'",
                           hint.empty() ? "" : str("; did you mean '--", hint, "'?")));
    }
    const std::string& key = o.string_key;
    if (key == "positional__") {
      for (const auto& v : o.value) out.positional.push_back(v);
    } else if (key == "help") {
      out.help = true;
    } else if (key == "config") {
      for (const auto& v : o.value) out.config_files.push_back(v);
    } else if (registry.has(key)) {
      if (o.value.empty()) throw UsageError(str("--", key, ": expected a value (--", key, "=VALUE)"));
      overrides.emplace_back(key, o.value.back());
    } else {
      bool is_switch = false;
      for (const auto& f : flags)
        if (f.name == key) is_switch = !f.takes_value;
      if (is_switch) {
        out.flags[key] = "true";
      } else {
        if (o.value.empty()) throw UsageError(str("--", key, ": expected a value"));
        out.flags[key] = o.value.back();
      }
    }
  }
  if (out.help) return out;
  for (const auto& path : out.config_files) apply_config_file(path, registry);
  for (const auto& [key, value] : overrides) registry.set(key, value, "command line");
  return out;
}

}  // namespace lf::launch
