// `latentforge inspect PATH`: a safetensors file (tensor names, dtypes, shapes, sizes), a
// cache shard (HDF5, told by its signature), a latent cache (manifest summary + checksum verification), a checkpoint (summary +
// verification), a run directory (its checkpoints, each verified) or a diffusers VAE folder.
#include <filesystem>
#include <iostream>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/util/json.h"
#include "core/util/strings.h"
#include "data/hdf5_util.h"
#include "data/latent_cache.h"
#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/subcommands.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

// Field `key` of `j` for display: a string as is (cut to max_chars), anything else as JSON,
// "?" when absent.
std::string shown(const nlohmann::json& j, const char* key, size_t max_chars = 80) {
  if (!j.is_object() || !j.contains(key)) return "?";
  const nlohmann::json& v = j[key];
  return v.is_string() ? excerpt(v.get<std::string>(), max_chars) : json_excerpt(v, max_chars);
}

int inspect_checkpoint(const std::string& dir) {
  std::cout << "checkpoint " << dir << "\n";
  nlohmann::json state;
  try {
    state = CheckpointManager::read_state(dir);
  } catch (const std::exception& e) {
    std::cout << "  INVALID: " << e.what() << "\n";
    return kExitRuntime;
  }
  // Shown as found (a damaged state.json may hold anything); verify() below judges it.
  std::cout << "  kind " << shown(state, "kind") << ", step " << shown(state, "step") << ", epoch "
            << shown(state, "epoch") << ", world size " << shown(state, "world_size") << "\n";
  if (state.contains("vae"))
    std::cout << "  vae " << shown(state["vae"], "kind") << " " << shown(state["vae"], "sha256", 16)
              << " " << shown(state["vae"], "weights") << "\n";
  if (state.contains("cache"))
    std::cout << "  cache " << shown(state["cache"], "dir") << ", scale factor "
              << shown(state["cache"], "scale_factor") << "\n";
  if (state.contains("files") && state["files"].is_object())
    for (const auto& [name, info] : state["files"].items())
      std::cout << "  " << excerpt(name) << "  " << shown(info, "bytes") << " bytes  sha256 "
                << shown(info, "sha256", 16) << "\n";
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
    throw UsageError("inspect takes one path: a .safetensors file, a cache shard, a cache directory, a checkpoint or a run directory");
  const std::string path = inv.args.positional[0];
  if (!fs::exists(path)) throw UsageError(str("inspect: '", path, "' does not exist"));
  if (fs::is_regular_file(path) && data::is_hdf5_file(path)) {  // never read as safetensors
    auto result = data::inspect_shard(path);
    std::cout << result.text;
    return result.ok ? kExitOk : kExitRuntime;
  }
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
