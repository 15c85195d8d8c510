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
#include "launch/run_lock.h"
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

// Verifies first: only a well-formed state.json (checkpoint_state.h) is described. In a run
// directory an invalid checkpoint is a warning naming it; alone it is the verdict.
bool inspect_checkpoint(const std::string& dir, bool in_run) {
  try {
    CheckpointManager::verify(dir);
  } catch (const std::exception& e) {
    if (in_run) std::cout << "warning: skipping invalid checkpoint " << e.what() << "\n";
    else std::cout << "checkpoint " << dir << "\n  INVALID: " << e.what() << "\n";
    return false;
  }
  const nlohmann::json state = CheckpointManager::read_state(dir);
  std::cout << "checkpoint " << dir << "\n";
  std::cout << "  kind " << shown(state, "kind") << ", step " << shown(state, "step") << ", epoch "
            << shown(state, "epoch") << ", world size " << shown(state, "world_size") << "\n";
  if (state.contains("vae"))
    std::cout << "  vae " << shown(state["vae"], "kind") << " " << shown(state["vae"], "sha256", 16)
              << " " << shown(state["vae"], "weights") << "\n";
  if (state.contains("cache"))
    std::cout << "  cache " << shown(state["cache"], "dir") << ", scale factor "
              << shown(state["cache"], "scale_factor") << "\n";
  if (state.contains("shards")) {
    std::vector<std::string> parts;
    for (const auto& [stem, files] : state["shards"].items()) parts.push_back(str(stem, " (", files.size(), " files)"));
    std::cout << "  sharded (dist.shard_optimizer): " << join(parts, ", ")
              << "; readable on any number of ranks, `latentforge export` writes it whole\n";
  }
  for (const auto& [name, info] : state["files"].items())
    std::cout << "  " << excerpt(name) << "  " << human_bytes(info["bytes"].get<double>()) << "  sha256 "
              << shown(info, "sha256", 16) << "\n";
  std::cout << "  verified: every file matches its checksum\n";
  return true;
}

// A run directory: every valid checkpoint described; an invalid one (a malformed state.json,
// a damaged file, a deletion a crash interrupted) skipped with a warning naming it, never failing
// the listing. Exit 1 only when no checkpoint is valid. Reads only: never takes the run's lock.
int inspect_run(const std::string& path) {
  CheckpointManager m(path, 1, 0);
  auto all = m.list();
  std::cout << "run " << path << ": " << all.size() << " checkpoint(s)\n";
  try {
    if (auto holder = read_lock_record((fs::path(path) / kRunLockName).string()))
      std::cout << "being written by " << describe(*holder) << " (" << kRunLockName << ")\n";
  } catch (const std::exception& e) {
    std::cout << "warning: " << e.what() << "\n";
  }
  std::string latest;
  for (const auto& [step, dir] : all)
    if (inspect_checkpoint(dir, /*in_run=*/true)) latest = dir;
  for (const auto& e : fs::directory_iterator(m.dir()))
    if (e.path().filename().string().rfind("abandoned-", 0) == 0)
      std::cout << "abandoned history (not resumed, never pruned): " << e.path().string() << "\n";
  std::cout << "newest valid: " << (latest.empty() ? std::string("none") : latest) << "\n";
  return latest.empty() ? kExitRuntime : kExitOk;
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
    return inspect_checkpoint(path, /*in_run=*/false) ? kExitOk : kExitRuntime;
  if (fs::exists(fs::path(path) / core::kDiffusersWeightsName)) {
    auto vae = core::load_diffusers_vae(path);
    std::cout << "diffusers AutoencoderKL " << path << "\n"
              << core::diffusers_vae_config(vae->options()).dump(2) << "\n"
              << core::describe_safetensors(
                     core::read_safetensors_header((fs::path(path) / core::kDiffusersWeightsName).string()));
    return kExitOk;
  }
  if (fs::is_directory(fs::path(path) / "checkpoints")) return inspect_run(path);
  throw UsageError(str("inspect: '", path, "' is neither a safetensors file, a cache (manifest.json), a checkpoint "
                       "(state.json), a run directory (checkpoints/) nor a diffusers VAE folder"));
}

}  // namespace lf::launch
