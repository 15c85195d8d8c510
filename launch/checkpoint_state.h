// What a checkpoint's state.json must hold before anyone trusts it (docs/cli.md, "state.json"):
// the structure every reader relies on, checked before any file it lists is hashed. A
// state.json that fails here makes its checkpoint invalid — `--resume auto`, `inspect RUN` and
// `sample` skip it with a warning naming it — never the whole run.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lf::launch {

// 2: a part may be sharded ("shards": {STEM: [files]}, checkpoint_tensors.h); 1 (read still):
// every part in STEM.safetensors.
inline constexpr int kCheckpointFormatVersion = 2;
inline constexpr int kOldestCheckpointFormatVersion = 1;

// The files every checkpoint of `kind` ("ldm", "vae") lists (STEM.safetensors; a sharded part's
// files instead, under "shards"/STEM); empty for an unknown kind.
const std::vector<std::string>& required_checkpoint_files(const std::string& kind);

// The step a checkpoint folder's name says: "step-00001000" -> 1000, and the manager's own
// temporary names ".tmp-step-00001000-PID" and ".old-step-00001000-PID" likewise; nullopt for
// any other name.
std::optional<int64_t> step_of_checkpoint_name(const std::string& folder_name);

// Throws std::runtime_error naming `where` (the state.json path) and the field when `state` is
// not a well-formed record of a checkpoint of step `step`: format_version, a known kind, an
// integer step equal to `step`, a files table naming plain files of the folder (no '/', "..")
// with a sha256 of 64 hex digits and a byte count each, every file the kind requires, and the
// fields resuming and sampling read (config, train_seconds, bad_steps, cache, model, ...) of
// the right JSON type when present.
void check_state_structure(const nlohmann::json& state, int64_t step, const std::string& where);

}  // namespace lf::launch
