// Atomic, verified checkpoints (docs/design.md, invariant 3). Layout of a run directory:
//   RUN_DIR/checkpoints/step-00001000/{state.json, model.safetensors, ema.safetensors, ...}
// A checkpoint is written under .tmp-step-*, every file fsynced, state.json (listing every
// file's SHA-256) written last, the directory fsynced and renamed into place, the parent
// fsynced. It is valid only if state.json exists and every listed file matches its checksum.
// Old ones are deleted only after the new one verifies; state.json goes first, so a crash
// mid-deletion leaves an invalid directory that `latest_valid` skips, never a half-valid one.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lf::launch {

struct CheckpointFile {
  std::string name;                                   // "model.safetensors"
  std::function<void(const std::string& path)> write;  // writes the whole file at path
};

class CheckpointManager {
 public:
  // keep_last >= 1; milestone_every = 0 means no milestones.
  CheckpointManager(std::string run_dir, int64_t keep_last, int64_t milestone_every);

  const std::string& dir() const { return ckpt_dir_; }
  static std::string name_for_step(int64_t step);  // "step-00001000"

  // Writes checkpoint `step` (blocking until durable), verifies it, then prunes old ones.
  // `state` gets "step", "files" (name -> sha256, bytes) and "format_version" added.
  // Throws std::runtime_error if the free disk is below `expected_bytes` * 1.1 + 64 MB.
  // Crash points: ckpt.after_tensors, ckpt.before_rename, ckpt.during_delete.
  std::string save(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                   uint64_t expected_bytes);

  // The newest valid checkpoint of the run, skipping (with a warning each) invalid ones.
  std::optional<std::string> latest_valid(std::vector<std::string>* warnings = nullptr) const;

  // Throws std::runtime_error naming the file when `dir` is not a valid checkpoint.
  static void verify(const std::string& dir);
  // state.json of a checkpoint (after verify()); parsed with bounded size and depth, throws
  // std::runtime_error naming the file when it is not valid JSON.
  static nlohmann::json read_state(const std::string& dir);

  // Valid or not, every step-* directory with its step, ascending.
  std::vector<std::pair<int64_t, std::string>> list() const;

 private:
  void prune(int64_t newest_step);

  std::string run_dir_;
  std::string ckpt_dir_;
  int64_t keep_last_;
  int64_t milestone_every_;
};

}  // namespace lf::launch
