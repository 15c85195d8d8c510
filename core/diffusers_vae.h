// The VAE in diffusers' AutoencoderKL layout (a directory with config.json and
// diffusion_pytorch_model.safetensors) both ways, and as one safetensors file with its config in
// the metadata (LatentForge's own runs/vae/.../vae.safetensors).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "core/vae.h"

namespace lf::core {

inline constexpr const char* kDiffusersConfigName = "config.json";
inline constexpr const char* kDiffusersWeightsName = "diffusion_pytorch_model.safetensors";

// diffusers' AutoencoderKL config for `o` ("_class_name": "AutoencoderKL", block types,
// act_fn "silu", ...).
nlohmann::json diffusers_vae_config(const VAEOptions& o);

// Options from a diffusers AutoencoderKL config. Structural keys (in_channels, out_channels,
// latent_channels, layers_per_block, norm_num_groups, block_out_channels, down_block_types,
// up_block_types) are required; act_fn, sample_size, scaling_factor (diffusers' default
// 0.18215), mid_block_add_attention, force_upcast, use_quant_conv, use_post_quant_conv,
// shift_factor, latents_mean, latents_std are optional; keys starting with "_" are ignored but
// "_class_name" must be "AutoencoderKL". Throws one std::invalid_argument naming `source` and
// listing every missing key, unknown key (with the closest known one), wrongly typed value and
// unsupported value (act_fn other than silu, other block types, use_quant_conv false...).
VAEOptions vae_options_from_diffusers_config(const nlohmann::json& config, const std::string& source);

// Loads dir/config.json and dir/diffusion_pytorch_model.safetensors (old attention key names
// accepted, see map_legacy_vae_keys). Throws std::invalid_argument listing every missing,
// unexpected or mis-shaped weight with the file's name; std::runtime_error for unreadable files.
VAE load_diffusers_vae(const std::string& dir);

// Writes the same layout into `dir` (created if needed); each file atomically. Blocks on I/O.
void save_diffusers_vae(const VAE& vae, const std::string& dir);

// One file: the weights plus metadata "latentforge.kind" = "vae" and "config" = the diffusers
// config JSON, so the file alone rebuilds the model. Atomic; blocks on I/O.
void save_vae_file(const VAE& vae, const std::string& path);
// Rebuilds a VAE from save_vae_file's output. Throws std::invalid_argument naming the file when
// the metadata has no config or the weights do not fit it.
VAE load_vae_file(const std::string& path);

}  // namespace lf::core
