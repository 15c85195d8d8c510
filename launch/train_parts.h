// Pieces both training loops (`train`, `vae train`) are built from: named parameters, a
// parameter group (parameters + their gradient reducer + AdamW), checkpointable tensor maps,
// and the debug switches the end-to-end tests use as negative controls.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/adamw.h"
#include "core/safetensors.h"
#include "distributed/reducer.h"
#include "launch/config.h"
#include "launch/runtime.h"

namespace lf::launch {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The module's parameters under their dotted names, in registration order.
NamedTensors named_parameters(const torch::nn::Module& m);

// What one optimizer updates: the parameters, their bucketed all-reduce (world > 1; it
// broadcasts rank 0's parameters and buffers at construction, collectively) and AdamW.
// Sharded (dist.shard_optimizer on W > 1 ranks, ZeRO-1): the reducer reduce-scatters, and AdamW
// (and the model's EMA) keep state only for `owned`, this rank's segments of the parameters:
// views into the parameters named "NAME@OFFSET" (OFFSET: the first element, in the flattened
// parameter), each with the reduced gradient of its elements as grad(). Those names are the
// keys of the sharded checkpoint files (docs/design.md, "Sharded checkpoints").
struct ParamGroup {
  NamedTensors named;
  std::vector<at::Tensor> params;
  std::unique_ptr<dist::Reducer> reducer;
  std::unique_ptr<core::AdamW> optimizer;
  bool sharded = false;
  NamedTensors owned;
  // What the optimizer updates: `owned` when sharded, else `named`.
  const NamedTensors& updated() const { return sharded ? owned : named; }
  std::vector<at::Tensor> updated_tensors() const;
};
ParamGroup make_param_group(torch::nn::Module& m, const TrainLoopConfig& loop, double lr, const DistConfig& d,
                            Runtime& rt, dist::GradReduction reduction = dist::GradReduction::kAverage);

// "NAME@OFFSET" of a segment, and back: the name and offset (false for a plain tensor name).
std::string segment_key(const std::string& name, int64_t offset);
bool split_segment_key(const std::string& key, std::string& name, int64_t& offset);

// The logged losses of a training loop: local sums since the last log line, turned into means
// over every rank and step of that window when a line is logged (so a curve is not one step's
// noise).
class LossWindow {
 public:
  explicit LossWindow(size_t count) : sums_(count, 0.0) {}
  // This step's local values (as many as `count`).
  void add(const std::vector<double>& values);
  // The means over all ranks and steps since the last call, which starts a new window. A
  // collective on `comm` when it has more than one rank: every rank calls it at the same step.
  std::vector<double> take_means(dist::Communicator& comm);

 private:
  std::vector<double> sums_;
  int64_t steps_ = 0;
};

// In place (the reducer's gradients are views into its buckets: never reset them to undefined).
void zero_grads(const std::vector<at::Tensor>& params);

// Debug switches (environment variables, read once at start) that break an invariant on
// purpose, so the end-to-end tests (tests/e2e/train_*.sh) can show that their comparisons
// would catch the breakage (negative controls) and that a failing rank ends the job:
//   LF_DEBUG_SUM_GRADS=1        the reducer sums gradients over ranks instead of averaging
//                               (GradReduction::kSum): W ranks no longer equal 1 rank.
//   LF_DEBUG_RANK_NOISE=1       per-sample draws are keyed by seed + rank (DiT's per-rank
//                               seeding): rank r > 0 sees other noise than 1 rank would.
//   LF_DEBUG_THROW_AT_STEP=K    throw std::runtime_error("injected failure at step K") when
//   LF_DEBUG_THROW_RANK=R       optimizer step K begins, on rank R only (default 0).
//   LF_DEBUG_CKPT_DELAY_MS=D    a background checkpoint (train.async_checkpoint) waits D ms
//                               before writing, so a test sees training go on meanwhile.
//   LF_DEBUG_CKPT_FAIL=1        writing a background checkpoint fails (its error must end the job).
// Never set in production; rank 0 warns when any is active.
struct DebugSwitches {
  bool sum_grads = false;
  bool rank_noise = false;
  int64_t throw_at_step = -1;
  int64_t throw_rank = 0;
  int64_t ckpt_delay_ms = 0;
  bool ckpt_fail = false;
  bool any() const { return sum_grads || rank_noise || throw_at_step >= 0 || ckpt_delay_ms > 0 || ckpt_fail; }
};

// Reads the switches; throws UsageError for a malformed value.
DebugSwitches read_debug_switches();

}  // namespace lf::launch
