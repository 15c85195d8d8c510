// Exponential moving average of model parameters with warm-up (CompVis LitEma), updated in
// place with foreach kernels, and its named state for checkpoints.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lf::core {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class EMA {
 public:
  // The state key of the update count (an int64 0-dim tensor); no parameter may use it.
  static constexpr const char* kNumUpdatesKey = "num_updates";

  // Starts the average at copies of `params` (same dtype and device). `decay` in [0, 1];
  // with `warmup`, update n (1-based) uses min(decay, (1 + n) / (10 + n)) (LitEma.forward),
  // so early averages are not dominated by the random initialisation. Throws
  // std::invalid_argument for a bad decay, duplicate or reserved names.
  EMA(const NamedTensors& params, double decay, bool warmup = true);

  // Call after each optimizer step with the parameters in construction order:
  // shadow <- d shadow + (1 - d) param (LitEma: shadow -= (1 - d) (shadow - param)).
  // No autograd, in place; launches foreach kernels (asynchronous on CUDA).
  void update(const std::vector<at::Tensor>& params);

  // Copies the averages into `params` (construction order), e.g. to evaluate or export the EMA
  // weights. No autograd, in place.
  void copy_to(const std::vector<at::Tensor>& params) const;

  // The decay that the next update() will use.
  double next_decay() const;
  double decay() const { return decay_; }
  bool warmup() const { return warmup_; }
  int64_t num_updates() const { return num_updates_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<at::Tensor>& averages() const { return shadow_; }

  // Named state for a checkpoint: each parameter's average under its name, plus
  // kNumUpdatesKey. The tensors alias the live averages; copy them if they must not change.
  NamedTensors state() const;
  // Restores what state() returned (copying values in place). Throws std::invalid_argument
  // naming the key on a missing or unexpected key, or a shape mismatch.
  void load_state(const NamedTensors& state);

 private:
  void check_params(const std::vector<at::Tensor>& params, const char* what) const;

  double decay_;
  bool warmup_;
  int64_t num_updates_ = 0;
  std::vector<std::string> names_;
  std::vector<at::Tensor> shadow_;
};

}  // namespace lf::core
