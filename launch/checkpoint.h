// Atomic, verified checkpoints (docs/design.md, invariant 3). Layout of a run directory:
//   RUN_DIR/checkpoints/step-00001000/{state.json, model.safetensors, ema.safetensors, ...}
// A checkpoint is written under .tmp-step-*, every file fsynced, state.json (listing every
// file's SHA-256) written last, the folder verified and fsynced, renamed into place, the parent
// fsynced. It is valid only if its state.json is well-formed (checkpoint_state.h: its kind's
// files, names confined to the folder, the step its name says) and every listed file matches.
//
// No instant of a save has fewer valid checkpoints than before it began:
//  * a step that exists already is replaced by one atomic exchange of the two folders
//    (renameat2 RENAME_EXCHANGE); where the file system lacks it, the old folder is parked as
//    .old-step-*-PID (still valid, and listed for its step while step-* is absent) and the new
//    one renamed in; recover() finishes a replacement that a crash interrupted;
//  * old ones are pruned (state.json first, so a crash mid-deletion leaves an invalid folder,
//    never a half-valid one) only after the new one is in place and verified.
// Only the holder of the run directory's lock (run_lock.h) saves, recovers, abandons or prunes.
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

  // Writes checkpoint `step` (blocking until durable), verifies it, puts it in place (replacing
  // an existing one of that step atomically), then prunes old ones.
  // `state` gets "step", "files" (name -> sha256, bytes) and "format_version" added.
  // Throws std::runtime_error if the free disk is below `expected_bytes` * 1.1 + 64 MB.
  // Crash points: ckpt.after_tensors, ckpt.before_rename, ckpt.after_exchange (a replacement:
  // the old folder is under the temporary name), ckpt.between_renames (a replacement without
  // RENAME_EXCHANGE: the old one parked), ckpt.during_delete.
  std::string save(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                   uint64_t expected_bytes);

  // The same in steps, for checkpoints that several ranks write (sharded runs): begin_save checks
  // the free disk and makes the temporary folder (returned); every writer puts its files there,
  // fsynced, with file_record() of each; finish_save (the lock holder) writes state.json with that
  // table last, checks it (rehash: every file's SHA-256 again; otherwise each listed file's
  // presence and size, the writers having hashed their own fsynced files), and puts the folder in
  // place as save() does. Crash points as save()'s.
  std::string begin_save(int64_t step, uint64_t expected_bytes);
  static nlohmann::json file_record(const std::string& path);  // {"sha256", "bytes"}
  std::string finish_save(int64_t step, nlohmann::json state, const std::string& tmp_dir, nlohmann::json table,
                          bool rehash);

  // The newest valid checkpoint of the run, skipping (with a warning each, naming it) invalid ones.
  std::optional<std::string> latest_valid(std::vector<std::string>* warnings = nullptr) const;

  // Throws std::runtime_error naming the file when `dir` is not a valid checkpoint; never
  // another exception type. The step is the one the folder's name says.
  static void verify(const std::string& dir);
  // state.json of a checkpoint (after verify()); parsed with bounded size and depth, throws
  // std::runtime_error naming the file when it is not valid JSON.
  static nlohmann::json read_state(const std::string& dir);

  // Valid or not, every checkpoint folder with its step, ascending: step-*, and for a step
  // without one a parked .old-step-* (a replacement interrupted between its renames).
  std::vector<std::pair<int64_t, std::string>> list() const;

  // The writer's repairs before its first save: a replacement interrupted between its two
  // renames is completed (the new folder if complete, else the parked old one, renamed to
  // step-*). Returns one line per repair, for the log.
  std::vector<std::string> recover();

  // Moves every checkpoint later than `step` (all of them when `step` < 0) into
  // checkpoints/abandoned-<UTC time>/, where nothing reads or prunes them, so that
  // `--resume auto` follows the history being resumed. Returns the folders moved.
  std::vector<std::string> abandon_after(int64_t step);

  // Tests force the replacement without RENAME_EXCHANGE (file systems that lack it) with false.
  static void use_rename_exchange(bool enabled);

 private:
  void put_in_place(const std::string& tmp_dir, const std::string& final_dir, int64_t step);
  void prune(int64_t newest_step);
  void remove_leftovers();

  std::string run_dir_;
  std::string ckpt_dir_;
  int64_t keep_last_;
  int64_t milestone_every_;
};

}  // namespace lf::launch
