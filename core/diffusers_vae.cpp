// diffusers AutoencoderKL layout import/export (see diffusers_vae.h). Config keys and defaults
// follow diffusers' AutoencoderKL.__init__ (models/autoencoders/autoencoder_kl.py).
#include "core/diffusers_vae.h"

#include <filesystem>
#include <stdexcept>

#include "core/state_dict.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/strings.h"

namespace lf::core {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr size_t kMaxConfigBytes = 1 << 20;  // diffusers' config.json is about 1 KB
constexpr double kDiffusersDefaultScaling = 0.18215;  // AutoencoderKL's scaling_factor default

const std::vector<std::string> kRequired = {
    "in_channels",      "out_channels",    "latent_channels",  "layers_per_block",
    "norm_num_groups",  "block_out_channels", "down_block_types", "up_block_types"};
const std::vector<std::string> kOptional = {
    "act_fn",        "sample_size",    "scaling_factor", "mid_block_add_attention",
    "force_upcast",  "use_quant_conv", "use_post_quant_conv", "shift_factor",
    "latents_mean",  "latents_std"};

// Collects every problem with one config so the error lists them all.
struct ConfigReader {
  const json& cfg;
  std::vector<std::string> errors;

  int64_t integer(const std::string& key, int64_t fallback) {
    if (!cfg.contains(key)) return fallback;
    if (!cfg[key].is_number_integer()) {
      errors.push_back(lf::str(key, " = ", json_excerpt(cfg[key]), " (expected an integer)"));
      return fallback;
    }
    return cfg[key].get<int64_t>();
  }
  bool boolean(const std::string& key, bool fallback) {
    if (!cfg.contains(key)) return fallback;
    if (!cfg[key].is_boolean()) {
      errors.push_back(lf::str(key, " = ", json_excerpt(cfg[key]), " (expected true or false)"));
      return fallback;
    }
    return cfg[key].get<bool>();
  }
  std::vector<int64_t> integers(const std::string& key) {
    std::vector<int64_t> out;
    if (!cfg.contains(key)) return out;
    const json& v = cfg[key];
    bool ok = v.is_array();
    if (ok)
      for (const json& e : v) ok = ok && e.is_number_integer();
    if (!ok) {
      errors.push_back(lf::str(key, " = ", json_excerpt(v), " (expected a list of integers)"));
      return out;
    }
    for (const json& e : v) out.push_back(e.get<int64_t>());
    return out;
  }
  void block_types(const std::string& key, const std::string& want, size_t levels) {
    if (!cfg.contains(key)) return;
    const json& v = cfg[key];
    if (!v.is_array()) {
      errors.push_back(lf::str(key, " = ", json_excerpt(v), " (expected a list of \"", want, "\")"));
      return;
    }
    if (v.size() != levels)
      errors.push_back(lf::str(key, " has ", v.size(), " entries but block_out_channels has ", levels));
    for (size_t i = 0; i < v.size() && i < levels; ++i)
      if (!v[i].is_string() || v[i].get<std::string>() != want)
        errors.push_back(lf::str(key, "[", i, "] = ", json_excerpt(v[i]), " is not supported (only \"",
                                 want, "\")"));
  }
  void must_equal(const std::string& key, const json& want) {
    if (cfg.contains(key) && cfg[key] != want)
      errors.push_back(lf::str(key, " = ", json_excerpt(cfg[key]), " is not supported (only ", want.dump(), ")"));
  }
};

std::string weights_path(const std::string& dir) { return (fs::path(dir) / kDiffusersWeightsName).string(); }

}  // namespace

json diffusers_vae_config(const VAEOptions& o) {
  const size_t levels = o.block_out_channels.size();
  return json{{"_class_name", "AutoencoderKL"},
              {"in_channels", o.in_channels},
              {"out_channels", o.out_channels},
              {"down_block_types", std::vector<std::string>(levels, "DownEncoderBlock2D")},
              {"up_block_types", std::vector<std::string>(levels, "UpDecoderBlock2D")},
              {"block_out_channels", o.block_out_channels},
              {"layers_per_block", o.layers_per_block},
              {"act_fn", "silu"},
              {"latent_channels", o.latent_channels},
              {"norm_num_groups", o.norm_num_groups},
              {"sample_size", o.sample_size},
              {"scaling_factor", o.scaling_factor},
              {"mid_block_add_attention", o.mid_block_add_attention}};
}

VAEOptions vae_options_from_diffusers_config(const json& cfg, const std::string& source) {
  if (!cfg.is_object())
    throw std::invalid_argument(lf::str(source, ": expected a JSON object, found ", json_type_phrase(cfg)));
  ConfigReader r{cfg, {}};
  std::vector<std::string> missing, unknown;
  for (const auto& key : kRequired)
    if (!cfg.contains(key)) missing.push_back(key);
  std::vector<std::string> known = kRequired;
  known.insert(known.end(), kOptional.begin(), kOptional.end());
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    const std::string& key = it.key();
    if (key.rfind('_', 0) == 0 || std::find(known.begin(), known.end(), key) != known.end()) continue;
    if (unknown.size() == 8) {  // the message stays short whatever the file holds
      unknown.push_back("...");
      break;
    }
    const std::string guess = key.size() <= 64 ? closest_match(key, known) : std::string();
    unknown.push_back(guess.empty() ? excerpt(key, 64) : lf::str(key, " (did you mean ", guess, "?)"));
  }
  if (!missing.empty()) r.errors.push_back("missing keys: " + join(missing, ", "));
  if (!unknown.empty()) r.errors.push_back("unknown keys: " + join(unknown, ", "));
  r.must_equal("_class_name", "AutoencoderKL");
  r.must_equal("act_fn", "silu");
  r.must_equal("use_quant_conv", true);
  r.must_equal("use_post_quant_conv", true);
  for (const char* key : {"shift_factor", "latents_mean", "latents_std"}) r.must_equal(key, nullptr);

  VAEOptions o;
  o.in_channels = r.integer("in_channels", o.in_channels);
  o.out_channels = r.integer("out_channels", o.out_channels);
  o.latent_channels = r.integer("latent_channels", o.latent_channels);
  o.layers_per_block = r.integer("layers_per_block", o.layers_per_block);
  o.norm_num_groups = r.integer("norm_num_groups", o.norm_num_groups);
  o.sample_size = r.integer("sample_size", o.sample_size);
  o.mid_block_add_attention = r.boolean("mid_block_add_attention", true);
  r.boolean("force_upcast", true);  // a pipeline's fp16 policy; type-checked only
  if (cfg.contains("block_out_channels")) o.block_out_channels = r.integers("block_out_channels");
  r.block_types("down_block_types", "DownEncoderBlock2D", o.block_out_channels.size());
  r.block_types("up_block_types", "UpDecoderBlock2D", o.block_out_channels.size());
  o.scaling_factor = kDiffusersDefaultScaling;
  if (cfg.contains("scaling_factor")) {
    if (cfg["scaling_factor"].is_number())
      o.scaling_factor = cfg["scaling_factor"].get<double>();
    else
      r.errors.push_back(lf::str("scaling_factor = ", json_excerpt(cfg["scaling_factor"]), " (expected a number)"));
  }
  if (!r.errors.empty())
    throw std::invalid_argument(lf::str(source, ": not a supported AutoencoderKL config: ",
                                        join(r.errors, "; ")));
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(lf::str(source, ": ", e.what()));
  }
  return o;
}

VAE load_diffusers_vae(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / kDiffusersConfigName).string();
  const std::string wpath = weights_path(dir);
  if (!fs::is_directory(dir))
    throw std::runtime_error(lf::str(dir, ": not a directory (expected a diffusers AutoencoderKL ",
                                     "folder with ", kDiffusersConfigName, " and ", kDiffusersWeightsName, ")"));
  if (!fs::exists(wpath)) {
    const bool has_bin = fs::exists(fs::path(dir) / "diffusion_pytorch_model.bin");
    throw std::runtime_error(lf::str(wpath, ": not found", has_bin
        ? "; only the pickle file diffusion_pytorch_model.bin is there, which LatentForge does not "
          "read: convert it to safetensors"
        : ""));
  }
  const json cfg = parse_json(read_file(config_path, kMaxConfigBytes), config_path);
  VAE vae(vae_options_from_diffusers_config(cfg, config_path));
  load_state_dict(*vae, map_legacy_vae_keys(load_safetensors(wpath).tensors), /*strict=*/true, wpath);
  return vae;
}

void save_diffusers_vae(const VAE& vae, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(lf::str(dir, ": cannot create directory: ", ec.message()));
  // {"format": "pt"} is what diffusers and transformers write; safetensors' torch loader checks it.
  save_safetensors(weights_path(dir), state_dict(*vae), {{"format", "pt"}});
  atomic_write_file((fs::path(dir) / kDiffusersConfigName).string(),
                    diffusers_vae_config(vae->options()).dump(2) + "\n");
}

void save_vae_file(const VAE& vae, const std::string& path) {
  save_safetensors(path, state_dict(*vae),
                   {{"format", "pt"},
                    {"latentforge.kind", "vae"},
                    {"config", diffusers_vae_config(vae->options()).dump()}});
}

VAE load_vae_file(const std::string& path) {
  SafetensorsContent content = load_safetensors(path);
  auto it = content.metadata.find("config");
  if (it == content.metadata.end())
    throw std::invalid_argument(lf::str(path, ": metadata has no \"config\"; is this a LatentForge VAE ",
                                        "file? (a diffusers folder loads with load_diffusers_vae)"));
  const json cfg = parse_json(it->second, path + ": metadata \"config\"");
  VAE vae(vae_options_from_diffusers_config(cfg, path + " metadata \"config\""));
  load_state_dict(*vae, map_legacy_vae_keys(content.tensors), /*strict=*/true, path);
  return vae;
}

}  // namespace lf::core
