// Fuzz targets of the launch/ readers: a checkpoint's state.json (verification and `inspect`)
// and an INI config file (what it accepts must survive a write-read round trip).
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "launch/args.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/config_view.h"
#include "launch/subcommands.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

void run_state_json(const uint8_t* data, size_t size, const std::string&, const std::string& dir) {
  // A checkpoint folder of step 10 holding the files an ldm checkpoint must have (empty), so
  // that a state.json listing them with their sizes and hashes is a valid checkpoint.
  const std::string ckpt = dir + "/step-00000010";
  std::filesystem::create_directories(ckpt);
  for (const char* name : {"model.safetensors", "optimizer.safetensors", "ema.safetensors"})
    write_file(ckpt + "/" + name, "", 0);
  write_file(ckpt + "/state.json", data, size);
  // `inspect` verifies, then describes only a valid checkpoint: it never throws for a bad file.
  launch::Config config;
  launch::ConfigRegistry registry;
  launch::register_config(config, registry);
  launch::ParsedArgs args;
  args.positional = {ckpt};
  std::ostringstream sink;
  std::streambuf* old = std::cout.rdbuf(sink.rdbuf());
  try {
    const launch::ConfigView view(config, registry, {}, "inspect");  // inspect reads no config key
    launch::run_inspect(launch::Invocation{args, view});
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  launch::CheckpointManager::read_state(ckpt);
  launch::CheckpointManager::verify(ckpt);
}

void run_ini(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  write_file(path, data, size);
  launch::Config config;
  launch::ConfigRegistry registry;
  launch::register_config(config, registry);
  launch::apply_config_file(path, registry);
  // The resolved config, written as INI and read back, is the same config.
  const std::string again_path = path + ".resolved.ini";
  const std::string ini = registry.to_ini();
  write_file(again_path, ini.data(), ini.size());
  launch::Config config2;
  launch::ConfigRegistry registry2;
  launch::register_config(config2, registry2);
  try {
    launch::apply_config_file(again_path, registry2);
  } catch (const std::exception& e) {
    throw std::logic_error(std::string("the resolved INI of an accepted config is refused: ") + e.what());
  }
  if (registry2.to_json() != registry.to_json())
    throw std::logic_error("config changed in an INI write-read round trip");
}

}  // namespace lf::fuzz
