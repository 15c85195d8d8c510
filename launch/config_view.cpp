// The declared view of the config (see config_view.h).
#include "launch/config_view.h"

#include <algorithm>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::launch {

ConfigView::ConfigView(const Config& config, const ConfigRegistry& registry, std::vector<std::string> declared,
                       std::string who)
    : config_(config), registry_(registry), declared_(std::move(declared)), who_(std::move(who)) {
  for (const auto& d : declared_) {
    bool known = d.find('.') != std::string::npos ? registry_.has(d) : false;
    for (const auto& k : registry_.keys()) known = known || k.rfind(d + ".", 0) == 0;
    if (!known) throw std::logic_error(str(who_, " declares '", d, "', which is neither a config section nor a key"));
  }
}

const std::vector<std::string> kVAEArchKeys = {"vae.channels", "vae.layers_per_block", "vae.latent_channels",
                                               "vae.norm_groups", "vae.mid_attention"};

const core::VAEOptions& ConfigView::vae_arch() const {
  for (const auto& k : kVAEArchKeys) value(k);  // throws for an undeclared one
  return config_.vae.arch;
}

const Config& ConfigView::need(const std::string& section) const {
  if (std::find(declared_.begin(), declared_.end(), section) == declared_.end())
    throw std::logic_error(str(who_, " reads the config section [", section, "] but does not declare it, so its --help "
                               "does not list those keys (add it to the subcommand table)"));
  return config_;
}

bool ConfigView::declares(const std::string& key) const {
  const std::string section = key.substr(0, key.find('.'));
  return std::find(declared_.begin(), declared_.end(), key) != declared_.end() ||
         std::find(declared_.begin(), declared_.end(), section) != declared_.end();
}

std::string ConfigView::value(const std::string& key) const {
  if (!declares(key))
    throw std::logic_error(str(who_, " reads the config key ", key, " but does not declare it, so its --help does "
                               "not list it (add it to the subcommand table)"));
  return registry_.get(key);
}

std::vector<std::string> ConfigView::keys() const {
  std::vector<std::string> out;
  for (const auto& k : registry_.keys())
    if (declares(k)) out.push_back(k);
  return out;
}

std::string ConfigView::to_ini() const { return registry_.to_ini(keys()); }

}  // namespace lf::launch
