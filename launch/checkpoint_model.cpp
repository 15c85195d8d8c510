// Loading a trained model from a checkpoint (see checkpoint_model.h).
#include "launch/checkpoint_model.h"

#include <filesystem>

#include "core/ema.h"
#include "core/safetensors.h"
#include "core/util/strings.h"
#include "launch/checkpoint.h"
#include "launch/checkpoint_tensors.h"
#include "launch/model_io.h"

namespace fs = std::filesystem;

namespace lf::launch {

std::string resolve_checkpoint(const std::string& path) {
  if (path.empty())
    throw std::invalid_argument("sample.checkpoint is empty: set it to a checkpoint directory or a run directory");
  if (fs::exists(fs::path(path) / "state.json")) return path;
  if (fs::is_directory(fs::path(path) / "checkpoints")) {
    std::vector<std::string> warnings;
    auto latest = CheckpointManager(path, 1, 0).latest_valid(&warnings);
    if (!latest) throw std::invalid_argument(str(path, ": no valid checkpoint in ", path, "/checkpoints"));
    return *latest;
  }
  throw std::invalid_argument(str("'", path, "' is neither a checkpoint (state.json) nor a run directory (checkpoints/)"));
}

TrainedModel load_trained_model(const std::string& path, bool use_ema, const std::string& vae_override) {
  TrainedModel m;
  m.checkpoint = resolve_checkpoint(path);
  try {
    CheckpointManager::verify(m.checkpoint);
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(str("checkpoint ", m.checkpoint, " is invalid: ", e.what()));
  }
  nlohmann::json state = CheckpointManager::read_state(m.checkpoint);
  if (state.value("kind", std::string()) != "ldm")
    throw std::invalid_argument(str(m.checkpoint, " is not a latent diffusion checkpoint (kind '",
                                    state.value("kind", std::string("?")), "')"));
  const std::string where = (fs::path(m.checkpoint) / "state.json").string();
  m.step = state.at("step").get<int64_t>();
  core::DenoiserOptions mopt = denoiser_options_from_json(state.at("model"), where);
  m.diffusion = diffusion_options_from_json(state.at("diffusion"), where);
  m.latent_shape = state.at("cache").at("latent_shape").get<std::vector<int64_t>>();
  m.scale_factor = state.at("cache").at("scale_factor").get<double>();
  m.label_names = state.at("cache").value("label_names", std::vector<std::string>{});
  m.model = core::make_denoiser(mopt);
  load_module_weights_from_map(*m.model, read_checkpoint_weights(m.checkpoint, use_ema),
                               (fs::path(m.checkpoint) / (use_ema ? "ema.safetensors" : "model.safetensors")).string());
  m.model->eval();
  const nlohmann::json& vae = state.at("vae");
  const std::string kind = vae.at("kind").get<std::string>();
  std::string weights = vae_override.empty() ? vae.value("weights", std::string()) : vae_override;
  int64_t channels = state.at("cache").at("image_shape").at(0).get<int64_t>();
  m.autoencoder = Autoencoder::load(kind, weights, channels);
  if (m.autoencoder.hash() != vae.at("sha256").get<std::string>())
    throw std::invalid_argument(str("the VAE at ", weights, " (sha256 ", m.autoencoder.hash().substr(0, 12),
                                    "…) is not the one this model was trained with (", vae.at("sha256").get<std::string>().substr(0, 12),
                                    "…); pass the right one with --vae.weights"));
  return m;
}

}  // namespace lf::launch
