// Learning rate at an optimizer step: linear warm-up from 0, then constant or cosine decay
// to min_lr_ratio * lr (the cosine of Loshchilov & Hutter's SGDR without restarts).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "core/util/enum_table.h"

namespace lf::launch {

enum class LRSchedule { kConstant, kCosine };
inline const EnumTable<LRSchedule>& lr_schedules() {
  static const EnumTable<LRSchedule> table = {{"constant", LRSchedule::kConstant}, {"cosine", LRSchedule::kCosine}};
  return table;
}

// step counts from 1 (the update being made); total = train.steps.
inline double learning_rate(double lr, LRSchedule schedule, int64_t warmup, double min_ratio,
                            int64_t step, int64_t total) {
  if (warmup > 0 && step <= warmup) return lr * static_cast<double>(step) / static_cast<double>(warmup);
  if (schedule != LRSchedule::kCosine || total <= warmup) return lr;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
  if (progress > 1) progress = 1;
  const double kPi = 3.14159265358979323846;
  return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(kPi * progress)));
}

}  // namespace lf::launch
