// The one training loop of `train` and `vae train` (docs/design.md, "One training loop"): resume
// or start, the step loop with gradient accumulation, gradient sync, the optimizers and the
// EMA, the non-finite policy, logging and metrics, checkpoints, stop signals and exit codes.
// What differs between the two commands is a Trainer: its modules, its data, the forward and
// loss of a micro-batch, its checkpoint fields, and its work between steps and at the end.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/ema.h"
#include "launch/config.h"
#include "launch/mixed_precision.h"
#include "launch/runtime.h"
#include "launch/train_parts.h"
#include "launch/train_session.h"

namespace lf::launch {

class TrainingLoop;

// A module with an optimizer of its own. The first a trainer returns is the model: the EMA
// follows it and its checkpoint files are model.safetensors and optimizer.safetensors; another
// one's are NAME.safetensors and NAME_optimizer.safetensors (the VAE's discriminator, "disc").
struct TrainedModule {
  std::string name;
  torch::nn::Module* module = nullptr;
  double lr = 0.0;  // peak learning rate; the schedule scales every module's alike
};

// One micro-batch of an optimizer step, as a trainer's micro_step sees it.
struct MicroStep {
  int64_t step = 0;   // optimizer steps already taken (the step being made is step + 1)
  int64_t micro = 0;  // a in [0, grad_accum)
  bool last = false;  // the step's last micro-batch: its backward completes the gradient sync
  MixedPrecision* amp = nullptr;
  StepTimes* times = nullptr;  // add the micro-batch's data and forward/backward seconds
};

class Trainer {
 public:
  virtual ~Trainer() = default;

  // Called in this order. open_data: after the stop handlers are in place (it may take minutes:
  // loading images, verifying a cache); errors in the data or its fit with the config.
  virtual void open_data(TrainingLoop& loop) = 0;
  // The modules, built on loop.device() in loop.param_dtype() (torch's generator has just been
  // seeded with the run's seed, the same on every rank).
  virtual std::vector<TrainedModule> build_modules(TrainingLoop& loop) = 0;
  // Resuming: throw UsageError when the checkpoint's state.json does not fit this run.
  virtual void check_resume(const nlohmann::json& state, const std::string& checkpoint) {}
  // A fresh run with init_from set: load those weights (fine-tuning).
  virtual void init_from(const std::string& path) = 0;
  // One line for rank 0's log before training (model, data, batch).
  virtual std::string describe() const = 0;
  // Before the first step: start the data pipeline at `start_step`.
  virtual void start(TrainingLoop& loop, int64_t start_step) = 0;
  // Whether module i is trained at step `next` (1-based); an inactive module gets no gradient
  // sync and no optimizer step (the discriminator before vae_train.disc_start).
  virtual bool trains(size_t module, int64_t next) const { return true; }
  // Forward and backward of one micro-batch (losses through m.amp->backward); adds the rank's
  // local values of the logged quantities (one per logged_names()) to `logged`.
  virtual void micro_step(const MicroStep& m, std::vector<double>& logged) = 0;
  virtual std::vector<std::string> logged_names() const = 0;
  // The metrics values of a log line from the window means of the logged quantities (default:
  // each under its name; "loss" is the one the progress line shows).
  virtual void log_values(const std::vector<double>& means, int64_t step, nlohmann::json& values);
  // After optimizer step `step`, before its metrics record: collective extras such as a
  // validation loss (every rank calls it).
  virtual void after_step(TrainingLoop& loop, int64_t step, nlohmann::json& values) {}
  // After the record of a step that is not the last: rank 0's grids and evaluations. Returns
  // whether this step had such rank-0-only work (the same answer on every rank): the loop then
  // waits for rank 0 under dist.checkpoint_timeout_s, never under the next collective's deadline.
  virtual bool periodic(TrainingLoop& loop, int64_t step) { return false; }
  // Whether periodic() at `step` reads loop.copy_eval_weights() (the same answer on every rank):
  // a sharded EMA is gathered (collectively) first.
  virtual bool wants_eval_weights(int64_t step) const { return false; }
  // Fields of its own in a checkpoint's state.json.
  virtual void checkpoint_state(nlohmann::json& state) const {}
  // Samples per epoch (the epoch counter in state.json and the metrics).
  virtual int64_t epoch_size() const = 0;
  // After the last step, when this run trained at least one step (final grid, evaluation: the
  // loop waits for rank 0 afterwards under dist.checkpoint_timeout_s).
  virtual void finish(TrainingLoop& loop, int64_t step) {}
};

// The command-line flags of `train` and `vae train` that the loop reads.
struct TrainFlags {
  std::string resume;       // --resume: "", "auto" or a checkpoint directory
  bool break_lock = false;  // --break-lock: take the run directory's lock from another host
};

class TrainingLoop {
 public:
  // Installs the stop handlers first (TrainSession), so a signal during the slow start-up is
  // honoured at the first step boundary. `kind` is "ldm" or "vae"; `config_json` the resolved
  // config (recorded in checkpoints, checked for frozen keys on resume); `config_ini` what the
  // subcommand reads, written to RUN_DIR/config.ini (loadable back with --config).
  TrainingLoop(std::string kind, const TrainLoopConfig& loop, const DistConfig& dist, Runtime& rt,
               nlohmann::json config_json, std::string config_ini);
  ~TrainingLoop();

  // Trains; returns kExitOk, kExitRequeue or kExitTerminated. Rank 0 first takes the run
  // directory's lock (run_lock.h; refused: UsageError naming the holder).
  int run(Trainer& trainer, const TrainFlags& flags);

  // For the trainer's hooks.
  const TrainLoopConfig& config() const { return loop_; }
  Runtime& runtime() { return rt_; }
  TrainSession& session() { return session_; }
  at::Device device() const { return rt_.device(); }
  at::ScalarType param_dtype() const { return param_dtype_; }
  at::TensorOptions options() const { return at::TensorOptions().dtype(param_dtype_).device(rt_.device()); }
  Precision precision() const { return precision_; }
  const DebugSwitches& debug() const { return debug_; }
  // The seed of every per-sample draw: the run's seed (+ rank under LF_DEBUG_RANK_NOISE).
  uint64_t draw_seed() const;
  // The model's weights for evaluation and grids: the EMA's (the raw ones when the EMA is off)
  // written into `target`, a module of the model's architecture.
  void copy_eval_weights(torch::nn::Module& target) const;

 private:
  struct Group;
  void restore(Trainer& trainer, const std::optional<std::string>& checkpoint);
  // Loads the checkpoint's weights into `modules`; returns its step.
  int64_t load_weights(Trainer& trainer, const std::vector<TrainedModule>& modules, const std::string& checkpoint);
  // SHA-256 (hex) of what was loaded: state.json's bytes, the weights as read (before the
  // reducer broadcasts rank 0's), the optimizer and EMA state.
  std::string loaded_digest(const std::string& weights_digest) const;
  void make_groups(const std::vector<TrainedModule>& modules);
  // One optimizer step (micro-batches, sync, update); returns the logged local values.
  std::vector<double> step(Trainer& trainer, StepTimes& times, nlohmann::json& values);
  bool apply_update(nlohmann::json& values);
  // Writes the checkpoint of step_: synchronously, or (train.async_checkpoint, unless `exiting`:
  // the last step or a stop) from host copies in the background; an exiting save commits any
  // background one first, so no exit path leaves a checkpoint half-written.
  void save(Trainer& trainer, bool exiting);
  // A sharded run's checkpoint: every rank writes its part (TrainSession::save_checkpoint_sharded).
  void save_sharded(nlohmann::json state, uint64_t bytes);
  // Sharded with an EMA: every rank's averages into the model's gradient buckets (collective, between
  // steps), for copy_eval_weights() on a step whose grid or evaluation needs them; released (the
  // buckets zeroed) after that step's periodic work.
  void gather_eval_weights();
  void release_eval_weights();
  // Bytes of this rank's optimizer and EMA state tensors; this process's peak RSS.
  int64_t state_bytes() const;
  static int64_t peak_rss_bytes();
  // Rank 0 logs every rank's `local_bytes` ("WHAT per rank (bytes): ..."); collective.
  void log_memory(const std::string& what, int64_t local_bytes);

  std::string kind_;
  TrainLoopConfig loop_;
  DistConfig dist_;
  Runtime& rt_;
  TrainSession session_;
  DebugSwitches debug_;
  Precision precision_;
  at::ScalarType param_dtype_;
  MixedPrecision amp_;
  std::vector<Group> groups_;
  std::unique_ptr<core::EMA> ema_;
  double grad_scale_ = 1.0;  // 1/W folded into the norm and AdamW when the reducer only sums
  int64_t step_ = 0;
  int64_t next_ = 0;
  int64_t bad_steps_ = 0;
  nlohmann::json saved_state_;
  std::string saved_state_text_;
  int64_t epoch_size_ = 1;
  std::string config_ini_;
  // Host copies of the checkpoint files' tensors for background saves (reused between saves;
  // shared with the writer thread, which may outlive a failing loop).
  std::shared_ptr<std::map<std::string, core::TensorMap>> host_copy_;
  bool ema_in_buckets_ = false;  // the gathered EMA of a sharded run is in the gradient buckets
};

}  // namespace lf::launch
