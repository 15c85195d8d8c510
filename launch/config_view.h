// A subcommand's view of the resolved config: exactly the sections and single keys it declares
// in the subcommand table (subcommands.cpp), which are also what its --help and --print-config
// list. Reading anything else throws std::logic_error naming the key, so every test that runs a
// subcommand also checks that its --help is complete.
#pragma once
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/config_registry.h"

namespace lf::launch {

// The [vae] keys of the architecture `vae train` builds (vae.kind and vae.weights name a trained
// autoencoder for the other stages).
extern const std::vector<std::string> kVAEArchKeys;

class ConfigView {
 public:
  // `declared`: section names ("train") and single keys ("train.run_dir"); `who` names the
  // subcommand in errors. The view keeps references: config and registry must outlive it.
  ConfigView(const Config& config, const ConfigRegistry& registry, std::vector<std::string> declared,
             std::string who);

  // Whole sections (the section must be declared).
  const DataConfig& data() const { return need("data").data; }
  const CacheConfig& cache() const { return need("cache").cache; }
  // The architecture `vae train` builds (its keys: kVAEArchKeys, declared together).
  const core::VAEOptions& vae_arch() const;
  const VAELossConfig& vae_loss() const { return need("vae_train").vae_loss; }
  const ModelConfig& model() const { return need("model").model; }
  const core::DiffusionOptions& diffusion() const { return need("diffusion").diffusion; }
  const TrainLoopConfig& train() const { return need("train").train; }
  const LDMTrainConfig& ldm() const { return need("train").ldm; }
  const TrainLoopConfig& vae_train() const { return need("vae_train").vae_train; }
  const DistConfig& dist() const { return need("dist").dist; }
  const SampleConfig& sample() const { return need("sample").sample; }
  const EvalConfig& eval() const { return need("eval").eval; }

  // One key as configured (its section or the key itself must be declared), e.g. sample's
  // "train.run_dir".
  std::string value(const std::string& key) const;

  // Whether `key` is among what the subcommand reads.
  bool declares(const std::string& key) const;
  // The keys the subcommand reads, in registration order.
  std::vector<std::string> keys() const;
  // Those keys as INI text (sections in registration order), loadable back with --config.
  std::string to_ini() const;
  // Every registered key as JSON (what checkpoints record and resume compares).
  nlohmann::json all_to_json() const { return registry_.to_json(); }

 private:
  const Config& need(const std::string& section) const;

  const Config& config_;
  const ConfigRegistry& registry_;
  std::vector<std::string> declared_;
  std::string who_;
};

}  // namespace lf::launch
