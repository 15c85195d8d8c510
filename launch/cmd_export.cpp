// `latentforge export CHECKPOINT OUT_DIR`: a checkpoint's model for use elsewhere, whole whatever
// layout it was written in (checkpoint_tensors.h): OUT_DIR/model.safetensors (the trained weights),
// OUT_DIR/ema.safetensors (the EMA's, when the run kept one), OUT_DIR/model_config.json (the
// network, diffusion and latent settings that rebuild it) and, for a latent model with a KL VAE,
// OUT_DIR/vae/ in the diffusers AutoencoderKL layout. A VAE run's checkpoint exports its VAE
// weights (its diffusers folder is RUN_DIR/vae already).
#include <filesystem>
#include <iostream>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/util/fs.h"
#include "core/util/strings.h"
#include "launch/autoencoder.h"
#include "launch/checkpoint.h"
#include "launch/checkpoint_model.h"
#include "launch/checkpoint_tensors.h"
#include "launch/cli.h"
#include "launch/subcommands.h"

namespace fs = std::filesystem;

namespace lf::launch {

int run_export(const Invocation& inv) {
  if (inv.args.positional.size() != 2)
    throw UsageError("export takes two paths: a checkpoint (or a run directory: its newest valid checkpoint) and the "
                     "folder to write");
  std::string checkpoint;
  try {
    checkpoint = resolve_checkpoint(inv.args.positional[0]);
    CheckpointManager::verify(checkpoint);
  } catch (const std::exception& e) {
    throw UsageError(str("export: ", e.what()));
  }
  const std::string out = inv.args.positional[1];
  if (fs::exists(out) && !fs::is_directory(out)) throw UsageError(str("export: '", out, "' exists and is not a folder"));
  fs::create_directories(out);
  const nlohmann::json state = CheckpointManager::read_state(checkpoint);
  const core::TensorMap weights = read_checkpoint_weights(checkpoint, /*ema=*/false);
  const core::TensorMetadata meta = {{"source", fs::absolute(checkpoint).string()},
                                     {"step", std::to_string(state.at("step").get<int64_t>())},
                                     {"kind", state.at("kind").get<std::string>()}};
  core::save_safetensors((fs::path(out) / "model.safetensors").string(), weights, meta);
  std::cout << "wrote " << (fs::path(out) / "model.safetensors").string() << " (" << weights.size() << " tensors)\n";
  const core::TensorMap ema = read_checkpoint_weights(checkpoint, /*ema=*/true);
  if (!ema.empty()) {
    core::save_safetensors((fs::path(out) / "ema.safetensors").string(), ema, meta);
    std::cout << "wrote " << (fs::path(out) / "ema.safetensors").string() << "\n";
  }
  nlohmann::json config = {{"kind", state["kind"]}, {"step", state["step"]}, {"source", fs::absolute(checkpoint).string()}};
  for (const char* key : {"model", "diffusion", "cache", "vae", "vae_config"})
    if (state.contains(key)) config[key] = state[key];
  atomic_write_file((fs::path(out) / "model_config.json").string(), config.dump(2) + "\n");
  std::cout << "wrote " << (fs::path(out) / "model_config.json").string() << "\n";
  if (state.contains("vae") && state["vae"].value("kind", std::string()) == "kl") {
    const std::string weights_path = state["vae"].value("weights", std::string());
    const int64_t channels = state.at("cache").at("image_shape").at(0).get<int64_t>();
    Autoencoder ae = Autoencoder::load("kl", weights_path, channels);
    if (ae.hash() != state["vae"].value("sha256", std::string()))
      throw std::runtime_error(str("export: the VAE at ", weights_path, " is not the one this model was trained with "
                                   "(its sha256 differs from the checkpoint's record)"));
    core::save_diffusers_vae(ae.vae(), (fs::path(out) / "vae").string());
    std::cout << "wrote " << (fs::path(out) / "vae").string() << " (diffusers AutoencoderKL layout)\n";
  }
  return kExitOk;
}

}  // namespace lf::launch
