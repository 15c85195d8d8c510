// Options <-> JSON and module weights <-> safetensors (see model_io.h).
#include "launch/model_io.h"

#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/strings.h"

namespace lf::launch {

namespace {

// The "text" object of a text model's options (absent without text conditioning).
void put_text(nlohmann::json& j, const core::TextOptions& t) {
  if (!t.enabled()) return;
  j["text"] = {{"context_length", t.context_length}, {"vocab_size", t.vocab_size}, {"width", t.width},
               {"depth", t.depth}, {"heads", t.heads}, {"pad_token", t.pad_token}};
  if (t.external()) j["text"]["embedding_dim"] = t.embedding_dim;
}

core::TextOptions get_text(const nlohmann::json& j) {
  core::TextOptions t;
  if (!j.contains("text")) return t;
  const nlohmann::json& x = j.at("text");
  t.context_length = x.at("context_length");
  t.vocab_size = x.at("vocab_size");
  t.width = x.at("width");
  t.depth = x.at("depth");
  t.heads = x.at("heads");
  t.pad_token = x.at("pad_token");
  t.embedding_dim = x.value("embedding_dim", int64_t{0});
  return t;
}

}  // namespace

nlohmann::json to_json(const core::UNetOptions& o) {
  nlohmann::json j = {{"in_channels", o.in_channels}, {"out_channels", o.out_channels}, {"model_channels", o.model_channels},
          {"channel_mult", o.channel_mult}, {"num_res_blocks", o.num_res_blocks}, {"attention_ds", o.attention_ds},
          {"head_channels", o.head_channels}, {"num_classes", o.num_classes}, {"dropout", o.dropout},
          {"norm_groups", o.norm_groups}};
  put_text(j, o.text);
  return j;
}

core::UNetOptions unet_options_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    core::UNetOptions o;
    o.in_channels = j.at("in_channels");
    o.out_channels = j.at("out_channels");
    o.model_channels = j.at("model_channels");
    o.channel_mult = j.at("channel_mult").get<std::vector<int64_t>>();
    o.num_res_blocks = j.at("num_res_blocks");
    o.attention_ds = j.at("attention_ds").get<std::vector<int64_t>>();
    o.head_channels = j.at("head_channels");
    o.num_classes = j.at("num_classes");
    o.dropout = j.at("dropout");
    o.norm_groups = j.at("norm_groups");
    o.text = get_text(j);
    o.validate();
    return o;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(str(where, ": model options: ", e.what()));
  }
}

nlohmann::json to_json(const core::DenoiserOptions& o) {
  if (o.kind == core::DenoiserKind::kUNet) {
    nlohmann::json j = to_json(o.unet);
    j["kind"] = "unet";
    return j;
  }
  const core::DiTOptions& d = o.dit;
  nlohmann::json j = {{"kind", "dit"},         {"in_channels", d.in_channels}, {"out_channels", d.out_channels},
                      {"patch_size", d.patch_size}, {"depth", d.depth},           {"width", d.width},
                      {"heads", d.heads},           {"mlp_ratio", d.mlp_ratio},   {"num_classes", d.num_classes}};
  put_text(j, d.text);
  return j;
}

core::DenoiserOptions denoiser_options_from_json(const nlohmann::json& j, const std::string& where) {
  core::DenoiserOptions o;
  try {
    o.kind = core::denoiser_kinds().parse(j.value("kind", std::string("unet")), where + ": model.kind");
    if (o.kind == core::DenoiserKind::kUNet) {
      o.unet = unet_options_from_json(j, where);
      return o;
    }
    core::DiTOptions& d = o.dit;
    d.in_channels = j.at("in_channels");
    d.out_channels = j.at("out_channels");
    d.patch_size = j.at("patch_size");
    d.depth = j.at("depth");
    d.width = j.at("width");
    d.heads = j.at("heads");
    d.mlp_ratio = j.at("mlp_ratio");
    d.num_classes = j.at("num_classes");
    d.text = get_text(j);
    o.validate();
    return o;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(str(where, ": model options: ", e.what()));
  }
}

nlohmann::json to_json(const core::DiffusionOptions& o) {
  return {{"objective", core::to_string(o.objective)}, {"schedule", core::to_string(o.schedule)},
          {"timesteps", o.timesteps}, {"prediction", core::to_string(o.prediction)},
          {"loss_weighting", core::to_string(o.weighting)}, {"min_snr_gamma", o.min_snr_gamma},
          {"offset_noise", o.offset_noise}, {"t_sampling", core::to_string(o.t_sampling)},
          {"t_mean", o.t_mean}, {"t_std", o.t_std}};
}

core::DiffusionOptions diffusion_options_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    core::DiffusionOptions o;
    o.schedule = core::schedule_kinds().parse(j.at("schedule").get<std::string>(), where + ": diffusion.schedule");
    o.timesteps = j.at("timesteps");
    o.prediction = core::predictions().parse(j.at("prediction").get<std::string>(), where + ": diffusion.prediction");
    o.weighting = core::loss_weightings().parse(j.at("loss_weighting").get<std::string>(), where + ": diffusion.loss_weighting");
    o.min_snr_gamma = j.at("min_snr_gamma");
    o.offset_noise = j.at("offset_noise");
    // Checkpoints written before the flow objective existed are DDPM ones.
    o.objective = core::objectives().parse(j.value("objective", std::string("ddpm")), where + ": diffusion.objective");
    o.t_sampling =
        core::time_samplings().parse(j.value("t_sampling", std::string("uniform")), where + ": diffusion.t_sampling");
    o.t_mean = j.value("t_mean", 0.0);
    o.t_std = j.value("t_std", 1.0);
    o.validate();
    return o;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(str(where, ": diffusion options: ", e.what()));
  }
}

void load_module_weights(torch::nn::Module& module, const std::string& path) {
  auto content = core::load_safetensors(path);
  core::load_state_dict(module, content.tensors, true, path);
}

void load_module_weights_from_map(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                                  const std::string& source) {
  core::load_state_dict(module, tensors, true, source);
}

void save_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::map<std::string, std::string>& metadata) {
  core::save_safetensors(path, core::state_dict(module), metadata);
}

}  // namespace lf::launch
