// `latentforge inspect PATH`: a safetensors file (tensor names, dtypes, shapes, sizes), a
// latent cache (manifest summary + checksum verification), a checkpoint (summary +
// verification), a run directory (its checkpoints, each verified) or a diffusers VAE folder.
#include <filesystem>
#include <iostream>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/util/strings.h"
#include "data/latent_cache.h"
#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/subcommands.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

int inspect_checkpoint(const std::string& dir) {
  std::cout << "checkpoint " << dir << "\n";
  nlohmann::json state;
  try {
    state = CheckpointManager::read_state(dir);
  } catch (const std::exception& e) {
    std::cout << "  INVALID: " << e.what() << "\n";
    return kExitRuntime;
  }
  std::cout << "  kind " << state.value("kind", std::string("?")) << ", step " << state.value("step", int64_t{-1})
            << ", epoch " << state.value("epoch", 0.0) << ", world size " << state.value("world_size", 0) << "\n";
  if (state.contains("vae"))
    std::cout << "  vae " << state["vae"].value("kind", std::string("?")) << " "
              << state["vae"].value("sha256", std::string("")).substr(0, 16) << " "
              << state["vae"].value("weights", std::string("")) << "\n";
  if (state.contains("cache"))
    std::cout << "  cache " << state["cache"].value("dir", std::string("")) << ", scale factor "
              << state["cache"].value("scale_factor", 0.0) << "\n";
  const nlohmann::json files = state.value("files", nlohmann::json::object());
  for (const auto& [name, info] : files.items())
    std::cout << "  " << name << "  " << human_bytes(info.value("bytes", 0.0)) << "  sha256 "
              << info.value("sha256", std::string("")).substr(0, 16) << "\n";
  try {
    CheckpointManager::verify(dir);
    std::cout << "  verified: every file matches its checksum\n";
    return kExitOk;
  } catch (const std::exception& e) {
    std::cout << "  INVALID: " << e.what() << "\n";
    return kExitRuntime;
  }
}

}  // namespace

int run_inspect(const Invocation& inv) {
  if (inv.args.positional.size() != 1)
    throw UsageError("inspect takes one path: a .safetensors file, a cache directory, a checkpoint or a run directory");
  const std::string path = inv.args.positional[0];
  if (!fs::exists(path)) throw UsageError(str("inspect: '", path, "' does not exist"));
  if (fs::is_regular_file(path)) {
    std::cout << path << "\n" << core::describe_safetensors(core::read_safetensors_header(path));
    return kExitOk;
  }
  if (fs::exists(fs::path(path) / "manifest.json")) {
    auto result = data::inspect_cache(path);
    std::cout << result.text;
    return result.ok ? kExitOk : kExitRuntime;
  }
  if (fs::exists(fs::path(path) / "state.json") || fs::path(path).filename().string().rfind("step-", 0) == 0)
    return inspect_checkpoint(path);
  if (fs::exists(fs::path(path) / core::kDiffusersWeightsName)) {
    auto vae = core::load_diffusers_vae(path);
    std::cout << "diffusers AutoencoderKL " << path << "\n"
              << core::diffusers_vae_config(vae->options()).dump(2) << "\n"
              << core::describe_safetensors(
                     core::read_safetensors_header((fs::path(path) / core::kDiffusersWeightsName).string()));
    return kExitOk;
  }
  if (fs::is_directory(fs::path(path) / "checkpoints")) {
    CheckpointManager m(path, 1, 0);
    auto all = m.list();
    std::cout << "run " << path << ": " << all.size() << " checkpoint(s)\n";
    int code = kExitOk;
    for (const auto& [step, dir] : all) code = std::max(code, inspect_checkpoint(dir));
    auto latest = m.latest_valid();
    std::cout << "newest valid: " << (latest ? *latest : std::string("none")) << "\n";
    return code;
  }
  throw UsageError(str("inspect: '", path, "' is neither a safetensors file, a cache (manifest.json), a checkpoint "
                       "(state.json), a run directory (checkpoints/) nor a diffusers VAE folder"));
}

}  // namespace lf::launch
