// The documentation stays true: docs/cli.md's key table equals what the code registers
// (regenerate with tools/update_cli_doc.sh), and every subcommand is documented.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "core/util/fs.h"
#include "launch/cli.h"
#include "launch/config.h"
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

}  // namespace
}  // namespace lf::launch
