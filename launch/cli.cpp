// The latentforge command line: finds the subcommand, parses its flags and config (usage errors
// of the command line exit 2 here), sets threads and logging, and runs it as a Job, whose run()
// is the one catch-all of the program (job.cpp: it logs with the rank and ends the whole job).
#include "launch/cli.h"

#include <glog/logging.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "core/util/strings.h"
#include "launch/args.h"
#include "launch/config.h"
#include "launch/config_view.h"
#include "launch/job.h"
#include "launch/subcommands.h"
#include "launch/threads.h"

namespace lf::launch {

namespace {

const std::vector<FlagSpec> kCommonFlags = {
    {"threads", true, "N", "torch and OpenBLAS threads (default: OMP_NUM_THREADS, else cores / ranks on this node)"},
    {"print-config", false, "", "print the resolved config this subcommand reads (INI) and exit"},
};


void print_top_help(std::ostream& os) {
  os << "latentforge " << LF_VERSION << " - latent diffusion training across ranks\n\n"
     << "usage: latentforge <subcommand> [--config FILE.ini] [--section.key=value ...] [flags]\n\n"
     << "subcommands:\n";
  for (const auto& s : subcommands()) {
    char line[160];
    std::snprintf(line, sizeof line, "  %-22s %s\n", s.name.c_str(), s.summary.c_str());
    os << line;
  }
  os << "\n`latentforge <subcommand> --help` lists its flags and config keys.\n"
     << "Exit codes: 0 success, 1 runtime failure, 2 usage or config error"
     << " (train/vae train also: " << kExitRequeue << " checkpointed for requeue, "
     << kExitTerminated << " checkpointed after SIGTERM).\n";
}

void print_sub_help(std::ostream& os, const Subcommand& s, const ConfigView& view, const ConfigRegistry& registry) {
  os << "usage: latentforge " << s.name << " " << s.usage << "\n\n" << s.description << "\n\nflags:\n";
  auto flag_line = [&](const FlagSpec& f) {
    std::string left = "--" + f.name + (f.takes_value ? " " + f.value_name : "");
    char line[256];
    std::snprintf(line, sizeof line, "  %-26s %s\n", left.c_str(), f.doc.c_str());
    os << line;
  };
  flag_line({"config", true, "FILE", "INI config file (may be repeated; later files win)"});
  for (const auto& f : kCommonFlags) flag_line(f);
  for (const auto& f : s.flags) flag_line(f);
  flag_line({"help", false, "", "this help"});
  std::vector<std::string> keys = view.keys();
  if (keys.empty()) return;
  os << "\nconfig keys it reads (INI [section] key = value, or --section.key=value):\n";
  std::string current;
  for (const auto& key : keys) {
    std::string section = key.substr(0, key.find('.'));
    if (section != current) {
      os << "  [" << section << "]\n";
      current = section;
    }
    const KeyInfo& k = registry.info(key);
    os << "    " << k.key << " = " << (k.default_value.empty() ? "\"\"" : k.default_value) << "  ("
       << k.type << (k.range.empty() ? "" : " " + k.range) << ")\n      " << k.doc << "\n";
  }
}

const Subcommand* find_subcommand(int argc, char** argv, int* consumed) {
  for (const auto& s : subcommands()) {
    std::vector<std::string> words = split(s.name, ' ');
    if (argc - 1 < static_cast<int>(words.size())) continue;
    bool match = true;
    for (size_t i = 0; i < words.size(); ++i) match = match && words[i] == argv[1 + i];
    if (match) {
      // Prefer the longest name ("eval train-classifier" over "eval").
      const Subcommand* best = &s;
      *consumed = static_cast<int>(words.size());
      for (const auto& t : subcommands()) {
        auto tw = split(t.name, ' ');
        if (tw.size() > words.size() && argc - 1 >= static_cast<int>(tw.size())) {
          bool m = true;
          for (size_t i = 0; i < tw.size(); ++i) m = m && tw[i] == argv[1 + i];
          if (m) {
            best = &t;
            *consumed = static_cast<int>(tw.size());
          }
        }
      }
      return best;
    }
  }
  return nullptr;
}

}  // namespace

std::string subcommand_help(const Subcommand& s) {
  Config config;
  ConfigRegistry registry;
  register_config(config, registry);
  ConfigView view(config, registry, s.reads, s.name);
  std::ostringstream os;
  print_sub_help(os, s, view, registry);
  return os.str();
}

std::string markdown_key_table(const ConfigRegistry& registry) {
  std::ostringstream os;
  std::string current;
  for (const auto& key : registry.keys()) {
    std::string section = key.substr(0, key.find('.'));
    if (section != current) {
      os << (current.empty() ? "" : "\n") << "#### [" << section << "]\n\n| key | default | type / range | meaning |\n|---|---|---|---|\n";
      current = section;
    }
    const KeyInfo& k = registry.info(key);
    std::string range = k.range;
    for (auto& ch : range)
      if (ch == '|') ch = '/';
    os << "| `" << k.key << "` | `" << (k.default_value.empty() ? "\"\"" : k.default_value) << "` | " << k.type
       << (range.empty() ? "" : " " + range) << " | " << k.doc << " |\n";
  }
  return os.str();
}

int run_cli(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_top_help(std::cout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  if (std::string(argv[1]) == "--markdown-keys") {  // regenerates the key table of docs/cli.md
    Config config;
    ConfigRegistry registry;
    register_config(config, registry);
    std::cout << markdown_key_table(registry);
    return kExitOk;
  }
  if (std::string(argv[1]) == "--version") {
    std::cout << "latentforge " << LF_VERSION << " (LibTorch " << TORCH_VERSION_MAJOR << "."
              << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH << ")\n";
    return kExitOk;
  }
  int consumed = 0;
  const Subcommand* sub = find_subcommand(argc, argv, &consumed);
  if (!sub) {
    std::vector<std::string> names;
    for (const auto& s : subcommands()) names.push_back(s.name);
    std::string hint = closest_match(argv[1], names);
    std::cerr << "latentforge: unknown subcommand '" << argv[1] << "'"
              << (hint.empty() ? "" : "; did you mean '" + hint + "'?") << "\n"
              << "run `latentforge --help` for the list\n";
    return kExitUsage;
  }

  Job job(sub->name, argv[0]);
  Config config;
  ConfigRegistry registry;
  register_config(config, registry);
  ConfigView view(config, registry, sub->reads, sub->name);
  std::vector<FlagSpec> flags = kCommonFlags;
  flags.insert(flags.end(), sub->flags.begin(), sub->flags.end());

  ParsedArgs args;
  try {
    args = parse_command_line(std::vector<std::string>(argv + 1 + consumed, argv + argc), flags, registry);
    if (args.help) {
      print_sub_help(std::cout, *sub, view, registry);
      return kExitOk;
    }
    validate_config(config);
    if (args.has("print-config")) {
      std::cout << view.to_ini();
      return kExitOk;
    }
    const std::string threads_flag = args.flag("threads");
    set_threads(choose_threads(args.has("threads") ? &threads_flag : nullptr, std::getenv("OMP_NUM_THREADS")));
  } catch (const std::invalid_argument& e) {
    std::cerr << "latentforge " << sub->name << ": error: " << e.what() << "\n";
    return kExitUsage;
  }
  return job.run([&] { return sub->run(Invocation{args, view}); });
}

}  // namespace lf::launch
