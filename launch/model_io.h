// JSON forms of the model and diffusion options (stored in checkpoints' state.json so that
// `sample` and `eval` rebuild exactly what was trained), and loading a module's weights from
// a safetensors file with every missing, unexpected and mis-shaped key named.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/diffusion.h"
#include "core/denoiser_options.h"

namespace lf::launch {

nlohmann::json to_json(const core::UNetOptions& o);
core::UNetOptions unet_options_from_json(const nlohmann::json& j, const std::string& where);
// {"kind": "unet"|"dit", ...the chosen network's options}; a checkpoint without "kind" (written
// before the DiT existed) holds a UNet's.
nlohmann::json to_json(const core::DenoiserOptions& o);
core::DenoiserOptions denoiser_options_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json to_json(const core::DiffusionOptions& o);
core::DiffusionOptions diffusion_options_from_json(const nlohmann::json& j, const std::string& where);

// Loads `path` (safetensors) into `module` strictly; errors name the file and every bad key.
void load_module_weights(torch::nn::Module& module, const std::string& path);
// The same from tensors already in memory; `source` names them in errors. Tensors the module
// has no parameter or buffer for are errors, as are missing parameters; missing buffers too.
void load_module_weights_from_map(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                                  const std::string& source);
// Writes the module's parameters and buffers to `path` (safetensors, atomically).
void save_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace lf::launch
