// Fuzz targets of the weights readers: a safetensors file (header and data, from memory and
// from a file, content hash) and a diffusers AutoencoderKL config.json.
#include <stdexcept>

#include "core/diffusers_vae.h"
#include "core/safetensors.h"
#include "core/util/json.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

void run_safetensors(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const core::SafetensorsHeader h = core::parse_safetensors_header(bytes, path);
  core::describe_safetensors(h);
  const core::SafetensorsContent mem = core::parse_safetensors(bytes, path);
  write_file(path, data, size);
  const core::SafetensorsContent file = core::load_safetensors(path);
  // The streamed hash of the file equals the hash of the tensors it loads to.
  if (core::hash_safetensors_file(path) != core::hash_tensors(file.tensors))
    throw std::logic_error("hash_safetensors_file differs from hash_tensors of the loaded file");
  if (mem.tensors.size() != file.tensors.size() || mem.metadata != file.metadata)
    throw std::logic_error("parse_safetensors and load_safetensors disagree");
  // A LatentForge VAE file keeps its config as JSON in the metadata (load_vae_file).
  auto it = file.metadata.find("config");
  if (it != file.metadata.end())
    core::vae_options_from_diffusers_config(parse_json(it->second, path + ": metadata \"config\""),
                                            path + " metadata \"config\"");
}

void run_vae_config(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  core::vae_options_from_diffusers_config(parse_json(text, path), path);
}

}  // namespace lf::fuzz
