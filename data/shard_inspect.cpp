// `latentforge inspect` of one shard file (see latent_cache.h): attributes and checksum, the
// file's hash checked against its cache's manifest first when there is one.
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "core/util/strings.h"
#include "data/latent_cache.h"
#include "data/shard_file.h"

namespace lf::data {

namespace fs = std::filesystem;

InspectResult inspect_shard(const std::string& path) {
  InspectResult res;
  std::ostringstream os;
  os << "cache shard " << path << "\n";
  const fs::path manifest_path = fs::path(path).parent_path() / kManifestName;
  const std::string name = fs::path(path).filename().string();
  const ManifestShard* entry = nullptr;
  Manifest m;
  std::error_code ec;
  if (fs::exists(manifest_path, ec)) {
    m = Manifest::read(manifest_path.string());
    for (const auto& e : m.shards)
      if (e.file == name) entry = &e;
  }
  try {
    bool hashed = false;
    if (entry) {
      hashed = check_shard_file(path, *entry, /*hash=*/true);
      os << "  listed in " << manifest_path.string()
         << (hashed ? "; the file matches its SHA-256 there\n" : "\n");
    } else {
      os << "  not listed in a manifest: opened without a checksum to check first\n";
    }
    ShardReader r(path);
    const ShardHeader& h = r.header();
    const CacheSettings& s = h.settings;
    os << "  shard " << h.shard_index << ": samples [" << h.begin << ", " << h.begin + h.count
       << ") of " << s.num_samples << ", " << h.producer << "\n"
       << "  store " << to_string(s.store) << ", " << to_string(s.dtype) << ", latents "
       << s.latent_shape[0] << "x" << s.latent_shape[1] << "x" << s.latent_shape[2]
       << ", VAE sha256 " << s.vae_sha256.substr(0, 16) << "\n";
    const std::string found = r.compute_checksum();
    if (found != h.sha256)
      throw std::runtime_error(lf::str(path, ": checksum mismatch: the shard records ", h.sha256,
                                       ", its data hash to ", found));
    if (entry && entry->sha256 != found)
      throw std::runtime_error(lf::str(path, ": checksum ", found, " but the manifest lists ",
                                       entry->sha256));
    os << "  verified: the datasets match the checksum " << found.substr(0, 16) << "\n";
    res.ok = true;
  } catch (const std::runtime_error& e) {
    os << "  FAILED: " << e.what() << "\n";
  }
  res.text = os.str();
  return res;
}

}  // namespace lf::data
