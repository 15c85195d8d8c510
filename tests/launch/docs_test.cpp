// The documentation stays true: docs/cli.md's key table equals what the code registers
// (regenerate with tools/update_cli_doc.sh), every subcommand is documented, its --help lists
// every key it reads, and every config key named anywhere a user reads one exists.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>

#include "core/util/fs.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/config_view.h"
#include "launch/subcommands.h"

namespace lf::launch {
namespace {

std::string source_dir() {
  const char* s = std::getenv("LF_SOURCE_DIR");
  return s ? s : LF_SOURCE_DIR_FALLBACK;
}

TEST(Docs, CliKeyTableMatchesTheCode) {
  std::string doc = read_file(source_dir() + "/docs/cli.md");
  Config config;
  ConfigRegistry registry;
  register_config(config, registry);
  std::string table = markdown_key_table(registry);
  auto begin = doc.find("<!-- keys:begin");
  auto end = doc.find("<!-- keys:end -->");
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  begin = doc.find('\n', begin) + 1;
  std::string in_doc = doc.substr(begin, end - begin);
  EXPECT_EQ(in_doc, "\n" + table + "\n") << "docs/cli.md is stale: run tools/update_cli_doc.sh";
}

TEST(Docs, EverySubcommandIsDocumented) {
  std::string doc = read_file(source_dir() + "/docs/cli.md");
  for (const auto& s : subcommands()) EXPECT_NE(doc.find("`" + s.name), std::string::npos) << s.name;
}

TEST(Docs, HelpListsEveryKeyTheSubcommandReads) {
  Config config;
  ConfigRegistry registry;
  register_config(config, registry);
  for (const auto& s : subcommands()) {
    ConfigView view(config, registry, s.reads, s.name);
    const std::string help = subcommand_help(s);
    for (const auto& key : view.keys()) EXPECT_NE(help.find("    " + key + " = "), std::string::npos) << s.name << ": " << key;
    // And nothing else: a key listed is a key read.
    for (const auto& key : registry.keys()) {
      if (!view.declares(key)) {
        EXPECT_EQ(help.find("    " + key + " = "), std::string::npos) << s.name << ": " << key;
      }
    }
  }
}

// Names that look like section.key but are files or examples, not keys.
const std::set<std::string> kNotKeys = {
    "model.safetensors", "vae.safetensors", "train.sbatch", "cache.md", "vae.log", "train.log",
    "train.stepz",  // docs/cli.md's example of a misspelt key
};

// "section.key" tokens of the config's sections in `text` (not followed by '(': code).
std::vector<std::string> key_like_tokens(const std::string& text) {
  static const std::regex re(
      R"((?:^|[^\w./-])((?:data|cache|vae|vae_train|model|diffusion|train|dist|sample|eval)\.[a-z_][a-z_0-9]*)(?![\w(]))");
  std::vector<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) out.push_back((*it)[1].str());
  return out;
}

// The string literals of a C++ source.
std::string string_literals(const std::string& source) {
  static const std::regex re(R"re("((?:[^"\\\n]|\\.)*)")re");
  std::string out;
  for (std::sregex_iterator it(source.begin(), source.end(), re), end; it != end; ++it) out += (*it)[1].str() + "\n";
  return out;
}

TEST(Docs, EveryKeyNamedAnywhereIsRegistered) {
  Config config;
  ConfigRegistry registry;
  register_config(config, registry);
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> texts;  // (where, text)
  for (const auto& s : subcommands()) texts.emplace_back(s.name + " --help", subcommand_help(s));
  const fs::path root = source_dir();
  for (const char* dir : {"docs", "configs", "cluster"})
    for (const auto& e : fs::recursive_directory_iterator(root / dir))
      if (e.is_regular_file() && e.path().extension() != ".png") texts.emplace_back(e.path().string(), read_file(e.path().string()));
  texts.emplace_back("README.md", read_file((root / "README.md").string()));
  for (const char* dir : {"core", "data", "distributed", "launch"})
    for (const auto& e : fs::recursive_directory_iterator(root / dir)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".cpp" || ext == ".h"))
        texts.emplace_back(e.path().string(), string_literals(read_file(e.path().string())));
    }
  int checked = 0;
  for (const auto& [where, text] : texts)
    for (const auto& token : key_like_tokens(text)) {
      ++checked;
      if (kNotKeys.count(token)) continue;
      EXPECT_TRUE(registry.has(token)) << where << " names '" << token << "', which is not a config key";
    }
  EXPECT_GT(checked, 200) << "the scan found too few key names: is the source directory right?";
}

}  // namespace
}  // namespace lf::launch
