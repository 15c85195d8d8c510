// Readers of untrusted bytes in launch/: the INI comment rule, config paths the file system
// refuses, a checkpoint's state.json (bounded parse, typed entries), and `inspect` telling an
// HDF5 file by its signature (docs/fuzzing.md, docs/cli.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "data/encode.h"
#include "data/hdf5_util.h"
#include "launch/args.h"
#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/metrics.h"
#include "launch/subcommands.h"
#include "tests/data/data_test_util.h"

namespace lf::launch {
namespace {

namespace fs = std::filesystem;

std::string scratch(const std::string& name) {
  const char* base = std::getenv("LF_TEST_TMP");
  fs::path dir = fs::path(base && *base ? base : "/tmp") / ("launch-untrusted-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

template <class E, class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "<no error>";
}

struct Fixture {
  Config config;
  ConfigRegistry registry;
  Fixture() { register_config(config, registry); }
};

TEST(IniRule, CommentsAreWholeLinesAndValuesKeepEveryCharacter) {
  const std::string dir = scratch("ini");
  std::ofstream(dir + "/a.ini") << "# a comment\n"
                                << "   ; an indented comment\n"
                                << "[train]\r\n"
                                << "run_dir = runs/a#b\n"
                                << "steps=7\n"
                                << "# steps = 9\n"
                                << "[data]\n"
                                << "  source =  /data/x;y z  \n";
  Fixture f;
  apply_config_file(dir + "/a.ini", f.registry);
  EXPECT_EQ(f.config.train.run_dir, "runs/a#b");  // Boost cut it to "runs/a"
  EXPECT_EQ(f.config.train.steps, 7);
  EXPECT_EQ(f.config.data.source, "/data/x;y z");
  // An inline "comment" is part of the value, and the value is then checked as usual.
  std::ofstream(dir + "/b.ini") << "[train]\nsteps = 5 # five\n";
  std::string err = error_of<std::invalid_argument>([&] { apply_config_file(dir + "/b.ini", f.registry); });
  EXPECT_NE(err.find("train.steps = '5 # five'"), std::string::npos) << err;
  EXPECT_NE(err.find(dir + "/b.ini"), std::string::npos) << err;
  std::ofstream(dir + "/c.ini") << "[train]\nsteps 5\n";
  err = error_of<std::invalid_argument>([&] { apply_config_file(dir + "/c.ini", f.registry); });
  EXPECT_NE(err.find("config file '" + dir + "/c.ini' line 2: 'steps 5' is neither [section], key = value nor a "
                     "comment"),
            std::string::npos)
      << err;
  std::ofstream(dir + "/d.ini") << "[train\n";
  err = error_of<std::invalid_argument>([&] { apply_config_file(dir + "/d.ini", f.registry); });
  EXPECT_NE(err.find("line 1: '[train' is not a [section] header"), std::string::npos) << err;
}

TEST(IniRule, ConfigPathsTheFileSystemRefusesAreUsageErrors) {
  // Longer than PATH_MAX, and one component longer than NAME_MAX: std::filesystem threw
  // filesystem_error past every handler.
  for (const std::string& path : {std::string(5000, 'a') + ".ini", "/tmp/" + std::string(300, 'b') + ".ini"}) {
    Fixture f;
    std::string err = error_of<std::invalid_argument>([&] { apply_config_file(path, f.registry); });
    EXPECT_NE(err.find("config file '"), std::string::npos) << err;
    EXPECT_NE(err.find("File name too long"), std::string::npos) << err;
    EXPECT_LT(err.size(), 600u) << "the path is quoted shortened";
    err = error_of<std::invalid_argument>([&] { parse_command_line({"--config", path}, {}, f.registry); });
    EXPECT_NE(err.find("File name too long"), std::string::npos) << err;
  }
}

void write_state(const std::string& dir, const std::string& text) {
  fs::create_directories(dir);
  std::ofstream(dir + "/state.json") << text;
}

TEST(StateJson, DeepOrMistypedStateIsRefusedByName) {
  const std::string run = scratch("state");
  const std::string ckpt = run + "/checkpoints/step-00000001";
  write_state(ckpt, "{\"files\":{}, \"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}");
  std::string err = error_of<std::runtime_error>([&] { CheckpointManager::verify(ckpt); });
  EXPECT_NE(err.find(ckpt + "/state.json: JSON nested deeper than 64 levels"), std::string::npos) << err;
  err = error_of<std::runtime_error>([&] { CheckpointManager::read_state(ckpt); });
  EXPECT_NE(err.find(ckpt + "/state.json: JSON nested deeper"), std::string::npos) << err;
  std::vector<std::string> warnings;
  EXPECT_FALSE(CheckpointManager(run, 1, 0).latest_valid(&warnings).has_value());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("JSON nested deeper"), std::string::npos) << warnings[0];

  // Well-formed but for the field under test (launch/checkpoint_state.h checks the rest).
  const std::string head = R"({"format_version":1,"kind":"ldm","step":1,)";
  const std::string hash = std::string(64, 'a');
  write_state(ckpt, head + R"("files":{"model.safetensors":{"bytes":"12","sha256":")" + hash + R"("}}})");
  err = error_of<std::runtime_error>([&] { CheckpointManager::verify(ckpt); });
  EXPECT_NE(err.find(ckpt + "/state.json: files/model.safetensors has no byte count (a non-negative integer)"),
            std::string::npos)
      << err;
  write_state(ckpt, head + R"("files":{"/dev/zero":{"bytes":0,"sha256":")" + hash + R"("}}})");
  err = error_of<std::runtime_error>([&] { CheckpointManager::verify(ckpt); });
  EXPECT_NE(err.find("'files' names '/dev/zero', which is not a file of the checkpoint folder"), std::string::npos)
      << err;
  write_state(ckpt, R"({"files":{"a":1},"files":{}})");
  err = error_of<std::runtime_error>([&] { CheckpointManager::verify(ckpt); });
  EXPECT_NE(err.find("names the key \"files\" twice"), std::string::npos) << err;
}

TEST(MetricsJsonl, ADeepLineIsDroppedOnResumeLikeATornOne) {
  const std::string path = scratch("metrics") + "/metrics.jsonl";
  std::ofstream(path) << "{\"step\":1}\n{\"x\":" << std::string(100000, '[') << std::string(100000, ']')
                      << ",\"step\":2}\n{\"step\":3}\n";
  MetricsWriter w;
  w.open(path, 2);  // keeps step 1, drops the deep line and step 3
  w.write({{"step", 3}});
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "{\"step\":1}\n{\"step\":3}\n");
}

// Runs `latentforge inspect PATH` in-process; returns the exit code and what it printed.
std::pair<int, std::string> inspect(const std::string& path) {
  Fixture f;
  ParsedArgs args;
  args.positional = {path};
  std::ostringstream out;
  std::streambuf* old = std::cout.rdbuf(out.rdbuf());
  int code = -1;
  try {
    ConfigView view(f.config, f.registry, {}, "inspect");  // inspect reads no config key
    code = run_inspect(Invocation{args, view});
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  return {code, out.str()};
}

TEST(Inspect, AnHDF5FileIsToldByItsSignatureNotReadAsSafetensors) {
  using namespace lf::data::testing;
  const std::string dir = scratch("inspect");
  auto src = synthetic_source(20);
  data::EncodeOptions o = small_options(dir + "/cache");
  data::encode_shards(*src, fake_encoder(), o, 0, 1);
  const std::string shard = o.cache_dir + "/" + data::shard_file_name(1);
  auto [code, text] = inspect(shard);
  EXPECT_EQ(code, kExitOk) << text;
  EXPECT_NE(text.find("cache shard " + shard), std::string::npos) << text;
  EXPECT_NE(text.find("not listed in a manifest"), std::string::npos) << text;
  EXPECT_NE(text.find("shard 1: samples [16, 20) of 20"), std::string::npos) << text;
  EXPECT_NE(text.find("verified"), std::string::npos) << text;
  data::finalize_cache(o.cache_dir, o);
  std::tie(code, text) = inspect(shard);
  EXPECT_EQ(code, kExitOk) << text;
  EXPECT_NE(text.find("the file matches its SHA-256 there"), std::string::npos) << text;
  // An HDF5 file that is not a shard: named, with the attribute it lacks.
  const std::string other = dir + "/other.h5";
  {
    std::lock_guard<std::recursive_mutex> lock(data::h5_mutex());
    data::h5_init();
    data::H5Id f(H5Fcreate(other.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(f.valid());
  }
  std::tie(code, text) = inspect(other);
  EXPECT_EQ(code, kExitRuntime) << text;
  EXPECT_NE(text.find("FAILED: " + other + ": attribute 'format_version' is missing"), std::string::npos) << text;
  EXPECT_EQ(text.find("safetensors"), std::string::npos) << text;
}

}  // namespace
}  // namespace lf::launch
