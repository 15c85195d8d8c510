// State dicts of torch::nn::Module: every parameter and buffer under its dotted name
// ("encoder.down_blocks.0.resnets.1.conv1.weight"), and a loader that reports every mismatch.
#pragma once
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "core/safetensors.h"

namespace lf::core {

// Parameters and buffers of `module` (recursively), detached, sharing storage with the module.
// Names are those LibTorch registers ("a.b.c"); a name registered as both is an error.
TensorMap state_dict(const torch::nn::Module& module);

// What a non-strict load skipped.
struct StateDictReport {
  std::vector<std::string> missing;     // in the module, not in the tensors
  std::vector<std::string> unexpected;  // in the tensors, not in the module
};

// Copies `tensors` into the module's parameters and buffers (converting dtype and device; no
// autograd history). strict: any missing or unexpected key is an error; shape mismatches are
// always errors. All problems are collected first and reported in ONE std::invalid_argument
// that names every key (and `source`, e.g. the file, when given); the module is left untouched
// when it throws. Returns what was skipped when !strict.
StateDictReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                                bool strict = true, const std::string& source = "");

// Number of scalar parameters (buffers excluded).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace lf::core
