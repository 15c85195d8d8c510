// AdamW (Loshchilov & Hutter 2019) with the exact update order of PyTorch's
// torch.optim.AdamW (_single_tensor_adamw / _multi_tensor_adamw, amsgrad off), fused into
// one pass over memory per parameter on contiguous CPU tensors, and as foreach-style tensor
// ops elsewhere (CUDA). Its state is a list of named tensors for checkpoints.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lf::core {

struct AdamWOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  using Named = std::vector<std::pair<std::string, at::Tensor>>;
  AdamW(Named params, AdamWOptions options);

  // One update with learning rate `lr` from each parameter's .grad() times `grad_scale` (a
  // parameter without a gradient is skipped, as in PyTorch). Call after gradients are synced,
  // clipped and checked. grad_scale folds a factor (e.g. 1/world_size after a summing
  // all-reduce) into this pass instead of a pass of its own; .grad() is left as it was.
  void step(double lr, double grad_scale = 1.0);

  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return options_; }

  // "exp_avg.NAME", "exp_avg_sq.NAME" for each parameter and "step" (int64 scalar).
  Named state() const;
  // Restores state(); every missing or shape-mismatched entry is named in one error.
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  Named params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// Global L2 norm of all gradients (undefined gradients count as zero), computed in float64.
double global_grad_norm(const std::vector<at::Tensor>& params);

// Scales every gradient by min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_.
void clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm, double norm);

}  // namespace lf::core
