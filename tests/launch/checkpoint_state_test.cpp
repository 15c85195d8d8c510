// state.json is not trusted: a checkpoint whose record lists no files, names files outside its
// folder, disagrees with its folder's step, misses a file its kind needs, has fields of the wrong
// type or is not JSON at all is invalid — verify() names the file and the field — and
// latest_valid() (what --resume auto and `inspect RUN` use) skips it with a warning naming it,
// taking the previous checkpoint instead of failing the run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/util/fs.h"
#include "launch/checkpoint.h"
#include "launch/checkpoint_state.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

using lf::testing::contains;

std::string fresh_dir(const std::string& name) { return lf::testing::fresh_dir("ckpt_state_" + name); }

// A run with valid checkpoints of steps 1 and 2; returns the manager.
CheckpointManager two_checkpoints(const std::string& name) {
  CheckpointManager m(fresh_dir(name), 5, 0);
  for (int64_t step : {1, 2}) {
    std::vector<CheckpointFile> files;
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "ema.safetensors"})
      files.push_back({f, [step](const std::string& p) { std::ofstream(p) << "data " << step; }});
    m.save(step, {{"kind", "ldm"}, {"config", {{"train.seed", "0"}}}}, files, 0);
  }
  return m;
}

std::string state_path(const CheckpointManager& m, int64_t step) {
  return m.dir() + "/" + CheckpointManager::name_for_step(step) + "/state.json";
}

// Rewrites step 2's state.json with `edit` applied, then expects verify() to fail with every
// part in its message, and latest_valid() to skip step 2 with a warning naming it.
void expect_invalid(const std::string& name, const std::function<void(nlohmann::json&)>& edit,
                    const std::vector<std::string>& parts) {
  CheckpointManager m = two_checkpoints(name);
  nlohmann::json state = nlohmann::json::parse(read_file(state_path(m, 2)));
  edit(state);
  std::ofstream(state_path(m, 2), std::ios::trunc) << state.dump(2);
  const std::string dir = m.dir() + "/step-00000002";
  const std::string msg = lf::testing::error_of<std::runtime_error>([&] { CheckpointManager::verify(dir); });
  for (const auto& p : parts) EXPECT_TRUE(contains(msg, p)) << name << ": '" << p << "' not in: " << msg;
  EXPECT_TRUE(contains(msg, "step-00000002/state.json")) << msg;
  std::vector<std::string> warnings;
  auto latest = m.latest_valid(&warnings);
  ASSERT_TRUE(latest.has_value()) << name;
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000001") << name;
  ASSERT_EQ(warnings.size(), 1u) << name;
  EXPECT_TRUE(contains(warnings[0], "skipping invalid checkpoint")) << warnings[0];
  EXPECT_TRUE(contains(warnings[0], "step-00000002")) << warnings[0];
}

TEST(CheckpointState, ListingNoFilesIsInvalid) {
  expect_invalid("no_files", [](nlohmann::json& s) { s["files"] = nlohmann::json::object(); },
                 {"'files' lists no file"});
}

TEST(CheckpointState, AFileTheKindNeedsMustBeListed) {
  expect_invalid("no_ema", [](nlohmann::json& s) { s["files"].erase("ema.safetensors"); },
                 {"does not list ema.safetensors", "'ldm'"});
}

TEST(CheckpointState, ListedPathsStayInsideTheFolder) {
  // Each would otherwise be hashed and accepted (the listed size and checksum made to match).
  for (const std::string outside : {"../step-00000001/model.safetensors", "/etc/hostname", "sub/x", ".."}) {
    expect_invalid("outside", [&](nlohmann::json& s) { s["files"][outside] = s["files"]["model.safetensors"]; },
                   {"names '" + outside + "'", "not a file of the checkpoint folder"});
  }
}

TEST(CheckpointState, StepMustAgreeWithTheFolderName) {
  expect_invalid("step", [](nlohmann::json& s) { s["step"] = 1; },
                 {"step 1 but the folder is the checkpoint of step 2"});
  expect_invalid("step_type", [](nlohmann::json& s) { s["step"] = "2"; }, {"no 'step'"});
}

TEST(CheckpointState, FieldsOfTheWrongTypeAreNamed) {
  expect_invalid("kind", [](nlohmann::json& s) { s["kind"] = 5; }, {"no string 'kind'"});
  expect_invalid("kind_unknown", [](nlohmann::json& s) { s["kind"] = "gan"; }, {"kind 'gan' is neither"});
  expect_invalid("config", [](nlohmann::json& s) { s["config"] = "x"; }, {"config is string, expected an object"});
  expect_invalid("cache", [](nlohmann::json& s) { s["cache"] = {{"latent_shape", {4, "8"}}}; },
                 {"cache/latent_shape is array, expected an array of integers"});
  expect_invalid("sha", [](nlohmann::json& s) { s["files"]["model.safetensors"]["sha256"] = "abc"; },
                 {"files/model.safetensors has no sha256 of 64 hex digits"});
  expect_invalid("bytes", [](nlohmann::json& s) { s["files"]["model.safetensors"].erase("bytes"); },
                 {"files/model.safetensors has no byte count"});
  expect_invalid("version", [](nlohmann::json& s) { s["format_version"] = 9; }, {"format_version 9"});
}

TEST(CheckpointState, ShardsMustNameListedFilesAndStandInForARequiredFile) {
  // A sharded part ("shards": {STEM: [files]}) replaces STEM.safetensors; every file it names must
  // be in the checksummed table, and version 1 knows no shards.
  auto sharded = [](nlohmann::json& s) {
    s["files"]["model-00000-of-00001.safetensors"] = s["files"]["model.safetensors"];
    s["files"].erase("model.safetensors");
    s["shards"] = {{"model", {"model-00000-of-00001.safetensors"}}};
  };
  {
    CheckpointManager m = two_checkpoints("shards_ok");
    nlohmann::json state = nlohmann::json::parse(read_file(state_path(m, 2)));
    sharded(state);
    fs::rename(m.dir() + "/step-00000002/model.safetensors", m.dir() + "/step-00000002/model-00000-of-00001.safetensors");
    std::ofstream(state_path(m, 2), std::ios::trunc) << state.dump(2);
    EXPECT_NO_THROW(CheckpointManager::verify(m.dir() + "/step-00000002"));
  }
  expect_invalid("shards_unlisted", [&](nlohmann::json& s) {
    sharded(s);
    s["shards"]["model"].push_back("model-00001-of-00001.safetensors");
  }, {"shards/model names model-00001-of-00001.safetensors, which 'files' does not list"});
  expect_invalid("shards_type", [&](nlohmann::json& s) { s["shards"] = {{"ema", "ema.safetensors"}}; },
                 {"shards/ema is not a non-empty array of file names"});
  expect_invalid("shards_v1", [&](nlohmann::json& s) {
    s["shards"] = {{"ema", {"ema.safetensors"}}};
    s["format_version"] = 1;
  }, {"'shards' in a format_version 1 checkpoint"});
  expect_invalid("no_model", [](nlohmann::json& s) { s["files"].erase("model.safetensors"); },
                 {"does not list model.safetensors (nor 'shards' a sharded model)"});
}

TEST(CheckpointState, MalformedOrUnreadableStateJsonInvalidatesOnlyThatCheckpoint) {
  CheckpointManager m = two_checkpoints("malformed");
  std::ofstream(state_path(m, 2), std::ios::trunc) << "{\"kind\": \"ldm\", \"files\": {";  // torn
  std::vector<std::string> warnings;
  auto latest = m.latest_valid(&warnings);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000001");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "step-00000002/state.json: unreadable or not valid JSON")) << warnings[0];
  // A directory where state.json should be: unreadable, still only that checkpoint.
  fs::remove(state_path(m, 2));
  fs::create_directories(state_path(m, 2));
  EXPECT_EQ(fs::path(*m.latest_valid()).filename(), "step-00000001");
}

TEST(CheckpointState, FolderNamesAndSteps) {
  EXPECT_EQ(step_of_checkpoint_name("step-00001000"), 1000);
  EXPECT_EQ(step_of_checkpoint_name(".tmp-step-00000002-4242"), 2);
  EXPECT_EQ(step_of_checkpoint_name(".old-step-00000003-17"), 3);
  EXPECT_FALSE(step_of_checkpoint_name("step-").has_value());
  EXPECT_FALSE(step_of_checkpoint_name("step-12a").has_value());
  EXPECT_FALSE(step_of_checkpoint_name("my-copy").has_value());
  EXPECT_FALSE(step_of_checkpoint_name(".tmp-other-1").has_value());
  CheckpointManager m = two_checkpoints("renamed");
  fs::rename(m.dir() + "/step-00000002", m.dir() + "/../best");
  const std::string msg = lf::testing::error_of([&] { CheckpointManager::verify(m.dir() + "/../best"); });
  EXPECT_TRUE(contains(msg, "named step-NNNNNNNN after its step; this one is 'best'")) << msg;
  EXPECT_NO_THROW(CheckpointManager::verify(m.dir() + "/step-00000001/"));  // a trailing slash is fine
}

}  // namespace
}  // namespace lf::launch
