// Numeric precision of training: f32 (CPU default), f64 (CPU, for exactness tests), and on
// CUDA bf16 autocast or fp16 autocast with dynamic loss scaling (as torch.cuda.amp.GradScaler:
// scale 2^16, halved on a non-finite step, doubled after 2000 finite ones).
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "core/util/enum_table.h"

namespace lf::launch {

enum class Precision { kF32, kF64, kBF16, kF16 };
const EnumTable<Precision>& precisions();  // "f32", "f64", "bf16", "f16" (the keys also take "auto")
// For logs: "f32", "bf16 autocast", "f16 autocast + loss scaling".
std::string describe(Precision p);

// "auto" -> bf16 on CUDA, f32 on CPU; f64 only on CPU; bf16/f16 only on CUDA. Throws
// std::invalid_argument naming `key` otherwise.
Precision resolve_precision(const std::string& value, at::Device device, const std::string& key);

// "auto|true|false": auto loads the cache into RAM when it takes under a quarter of it.
bool decide_in_memory(const std::string& value, int64_t cache_bytes);

class MixedPrecision {
 public:
  MixedPrecision(Precision p, at::Device device);

  // Enables autocast on CUDA for bf16/f16 until the returned guard is destroyed.
  struct Guard {
    explicit Guard(bool active);
    ~Guard();
    bool active;
  };
  Guard autocast() const { return Guard(autocast_); }

  // loss.backward(), scaled by the current loss scale under f16.
  void backward(const at::Tensor& loss);
  // Undoes the loss scale on the (synced) gradients and returns their global norm
  // (non-finite when any gradient is).
  double unscale_and_norm(const std::vector<at::Tensor>& params);
  // After the step: the loss scale's dynamics (f16 only).
  void update(bool finite);
  double loss_scale() const { return scale_; }

 private:
  Precision precision_;
  bool autocast_ = false;
  double scale_ = 1.0;
  int64_t good_steps_ = 0;
};

}  // namespace lf::launch
