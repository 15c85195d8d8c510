// What `train` and `vae train` share around their optimizer steps: the run directory (its lock)
// and its checkpoints, resuming (--resume auto|PATH) with every rank loading the checkpoint rank 0
// chose, the keys a resume may not change, stop signals agreed at step boundaries, timing,
// progress lines with rate and ETA, and metrics.jsonl (rank 0).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "distributed/communicator.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/metrics.h"
#include "launch/run_lock.h"
#include "launch/signals.h"

namespace lf::launch {

// Config keys (exact, or prefixes ending in '.') that must not change when resuming.
std::vector<std::string> frozen_keys_for(const std::string& kind);

// Throws UsageError naming the first key among `frozen` whose value differs between the
// checkpoint's config and the current one (both as registry JSON).
void check_frozen_keys(const nlohmann::json& saved, const nlohmann::json& current,
                       const std::vector<std::string>& frozen, const std::string& checkpoint);

// Time spent per phase of a step, in seconds.
struct StepTimes {
  double data = 0, forward_backward = 0, sync = 0, optimizer = 0;
  double total() const { return data + forward_backward + sync + optimizer; }
};

class TrainSession {
 public:
  // `kind` is "ldm" or "vae"; `config_json` the full resolved config (registry JSON).
  // Installs the stop handlers (signals.h): construct it before the slow start-up.
  TrainSession(std::string kind, const TrainLoopConfig& loop, const DistConfig& dist,
               dist::Communicator& cpu_comm, nlohmann::json config_json);
  // Waits for a background checkpoint still being written (never abandons it half-way).
  ~TrainSession();
  TrainSession(const TrainSession&) = delete;
  TrainSession& operator=(const TrainSession&) = delete;

  // Rank 0 takes the run directory's lock (run_lock.h) — before any work, so a second writer is
  // refused at once; UsageError naming the holder when refused. Released when the session ends.
  // Other ranks: nothing.
  void lock_run_dir(bool break_lock);

  // --resume: "" (start fresh; refuse a run dir that already has checkpoints), "auto" (the newest
  // valid checkpoint or fresh), or a checkpoint directory. Rank 0 decides: it first completes an
  // interrupted checkpoint replacement (CheckpointManager::recover), then, resuming at step N,
  // moves the run's checkpoints later than N aside (abandon_after), so a later `--resume auto`
  // follows this history. Every rank receives rank 0's chosen path (collective, under
  // dist.checkpoint_timeout_s: rank 0 hashes the checkpoint meanwhile). Returns the checkpoint to
  // load, after checking its kind and frozen keys.
  std::optional<std::string> resolve_resume(const std::string& flag);

  // After every rank loaded `checkpoint`: compares `digest` (a SHA-256 in hex of what this rank
  // loaded) across ranks with one collective; throws std::runtime_error on every rank naming the
  // two ranks and both values when they differ (ranks that read different files would otherwise
  // continue with different optimizer or EMA state, silently).
  void check_same_checkpoint(const std::string& digest, const std::string& checkpoint);

  // Waits (a barrier under dist.checkpoint_timeout_s) for rank 0's own work — a sample grid, an
  // evaluation — so that no collective with the step deadline waits for it. `what` names it.
  void wait_for_root(const std::string& what);

  // Opens metrics.jsonl (rank 0) dropping records after `start_step` and starts the training
  // clock at `prior_seconds` (a resumed run's state.json "train_seconds").
  void begin(int64_t start_step, double prior_seconds = 0.0);
  // Wall-clock seconds of training so far, summed over every run of this training (what
  // benchmarks plot quality against); recorded in metrics.jsonl ("train_s") and state.json.
  double train_seconds() const;

  // At a step boundary: the most severe stop request of any rank (collective).
  StopRequest agree_stop();

  // Rank 0 writes; every rank then waits (with the checkpoint deadline) until it is durable.
  // Returns the checkpoint directory (on rank 0; "" elsewhere). A background checkpoint in
  // flight is committed first.
  std::string save_checkpoint(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                              uint64_t expected_bytes);

  // A sharded checkpoint (dist.shard_optimizer): every rank writes `files` (its own part; rank 0's
  // include the shared ones) into the checkpoint's temporary folder in parallel, fsyncs and hashes
  // them; rank 0 then writes state.json — with `shards` (stem -> every rank's file names) and the
  // gathered checksums — last, after every rank's files are durable, and puts the folder in place.
  // A failure on any rank fails the save on every rank with that rank's message. Crash point
  // ckpt.shards_written: every rank's part is durable, state.json is not yet written.
  std::string save_checkpoint_sharded(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                                      const nlohmann::json& shards, uint64_t expected_bytes);

  // train.async_checkpoint, rank 0 only: hands the checkpoint to a background thread and returns
  // at once; training goes on while it is written, verified and put in place (the same atomic
  // save as above: a crash at any moment leaves the previous checkpoint valid). `files` must
  // write copies that nothing changes meanwhile (host copies taken at the step boundary). At most
  // one is in flight: the caller waits for the previous one first (wait_checkpoint). A failure is
  // thrown on rank 0 by the next wait_checkpoint() or check_checkpoint_writer(), which ends the job.
  void save_checkpoint_async(int64_t step, nlohmann::json state, std::vector<CheckpointFile> files,
                             uint64_t expected_bytes);
  // Rank 0: waits until the background checkpoint (if any) is committed; throws its error.
  // Returns the seconds waited. Other ranks: nothing.
  double wait_checkpoint();
  // Rank 0, at every step boundary: throws the error of a background checkpoint that failed
  // (without waiting for one still being written).
  void check_checkpoint_writer();

  // Progress: a log line every log_every steps (rank 0) with rate and ETA, and a metrics record.
  void record_step(int64_t step, int64_t total_steps, int64_t samples_per_step, const StepTimes& t,
                   nlohmann::json values);
  void write_metrics(const nlohmann::json& record);

  bool is_root() const { return comm_.rank() == 0; }
  const std::string& run_dir() const { return loop_.run_dir; }
  const nlohmann::json& config_json() const { return config_json_; }
  CheckpointManager& checkpoints() { return checkpoints_; }

 private:
  // Rank 0's part of resolve_resume: the checkpoint folder, or "" to start fresh.
  std::string choose_checkpoint(const std::string& flag);
  // Rank 0: CheckpointManager::save of a stamped state; logs (`how` after the time) and returns the folder.
  std::string write_checkpoint(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                               uint64_t expected_bytes, const char* how);
  // The run's fields of state.json: kind, config, world size, training seconds so far.
  void stamp(nlohmann::json& state) const;

  std::string kind_;
  TrainLoopConfig loop_;
  DistConfig dist_;
  dist::Communicator& comm_;
  nlohmann::json config_json_;
  CheckpointManager checkpoints_;
  std::unique_ptr<RunDirLock> lock_;
  MetricsWriter metrics_;
  std::chrono::steady_clock::time_point window_start_;
  int64_t window_steps_ = 0;
  StepTimes window_times_;
  int64_t start_step_ = 0;
  double prior_seconds_ = 0.0;
  std::chrono::steady_clock::time_point begin_time_;
  // The background checkpoint writer (rank 0): its thread, whether it finished, its error.
  std::thread writer_;
  std::shared_ptr<std::atomic<bool>> writer_done_;
  std::shared_ptr<std::string> writer_error_;
};

}  // namespace lf::launch
