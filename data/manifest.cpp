// manifest.json (see manifest.h; format in docs/cache.md).
#include "data/manifest.h"

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace lf::data {

nlohmann::json Manifest::to_json() const {
  nlohmann::json shards_j = nlohmann::json::array();
  for (const auto& s : shards)
    shards_j.push_back(
        {{"file", s.file}, {"begin", s.begin}, {"count", s.count}, {"sha256", s.sha256}});
  const auto& st = settings;
  return {{"format", "latentforge-latent-cache"},
          {"format_version", format_version},
          {"producer", producer},
          {"source", st.source},
          {"num_samples", st.num_samples},
          {"image_shape", st.image_shape},
          {"latent_shape", st.latent_shape},
          {"store", to_string(st.store)},
          {"dtype", to_string(st.dtype)},
          {"flip", st.flip},
          {"datasets", latent_dataset_names(st.store, st.flip)},
          {"vae", {{"sha256", st.vae_sha256}, {"config", st.vae_config}}},
          {"scale_factor", scale_factor},
          {"scale_factor_mode", scale_factor_mode},
          {"latent_stats",
           {{"channel_mean", channel_mean},
            {"channel_std", channel_std},
            {"mean", latent_mean},
            {"std", latent_std}}},
          {"label_names", st.label_names},
          {"num_classes", static_cast<int64_t>(st.label_names.size())},
          {"shard_size", st.shard_size},
          {"shards", shards_j},
          {"skipped", st.skipped}};
}

Manifest Manifest::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { return std::runtime_error(lf::str(where, ": ", what)); };
  if (!j.is_object()) throw fail("not a JSON object");
  Manifest m;
  try {
    if (j.at("format").get<std::string>() != "latentforge-latent-cache")
      throw fail(lf::str("format is ", j.at("format").dump(), ", expected \"latentforge-latent-cache\""));
    m.format_version = j.at("format_version").get<int64_t>();
    if (m.format_version != kCacheFormatVersion)
      throw fail(lf::str("format_version ", m.format_version, ", this build reads ",
                     kCacheFormatVersion, "; re-run encode with this version"));
    m.producer = j.at("producer").get<std::string>();
    nlohmann::json s = {{"store", j.at("store")},
                        {"dtype", j.at("dtype")},
                        {"flip", j.at("flip")},
                        {"shard_size", j.at("shard_size")},
                        {"num_samples", j.at("num_samples")},
                        {"image_shape", j.at("image_shape")},
                        {"latent_shape", j.at("latent_shape")},
                        {"source", j.at("source")},
                        {"label_names", j.at("label_names")},
                        {"skipped", j.at("skipped")},
                        {"vae_sha256", j.at("vae").at("sha256")},
                        {"vae_config", j.at("vae").at("config")}};
    m.settings = CacheSettings::from_json(s, where);
    if (j.at("num_classes").get<int64_t>() != m.num_classes())
      throw fail(lf::str("num_classes ", j.at("num_classes").dump(), " but ", m.num_classes(),
                     " label_names"));
    m.scale_factor = j.at("scale_factor").get<double>();
    m.scale_factor_mode = j.at("scale_factor_mode").get<std::string>();
    const auto& ls = j.at("latent_stats");
    m.channel_mean = ls.at("channel_mean").get<std::vector<double>>();
    m.channel_std = ls.at("channel_std").get<std::vector<double>>();
    m.latent_mean = ls.at("mean").get<double>();
    m.latent_std = ls.at("std").get<double>();
    const auto& sj = j.at("shards");
    if (!sj.is_array()) throw fail("shards is not an array");
    const int64_t want = num_shards(m.settings.num_samples, m.settings.shard_size);
    if (static_cast<int64_t>(sj.size()) != want)
      throw fail(lf::str("lists ", sj.size(), " shards, expected ", want, " for ",
                     m.settings.num_samples, " samples in shards of ", m.settings.shard_size));
    int64_t next = 0;
    for (size_t i = 0; i < sj.size(); ++i) {
      ManifestShard sh{sj[i].at("file").get<std::string>(), sj[i].at("begin").get<int64_t>(),
                       sj[i].at("count").get<int64_t>(), sj[i].at("sha256").get<std::string>()};
      if (sh.file != shard_file_name(static_cast<int64_t>(i)) || sh.begin != next ||
          sh.count < 1 || sh.count > m.settings.shard_size || sh.sha256.size() != 64)
        throw fail(lf::str("shard entry ", i, " (", sj[i].dump(), ") is not ",
                       shard_file_name(static_cast<int64_t>(i)), " starting at ", next,
                       " with 1..", m.settings.shard_size, " samples and a SHA-256"));
      next += sh.count;
      m.shards.push_back(sh);
    }
    if (next != m.settings.num_samples)
      throw fail(lf::str("shards hold ", next, " samples, num_samples is ", m.settings.num_samples));
  } catch (const nlohmann::json::exception& e) {
    throw fail(lf::str("bad or missing field (", e.what(), ")"));
  }
  if (!(m.scale_factor > 0) || !std::isfinite(m.scale_factor))
    throw fail(lf::str("scale_factor ", m.scale_factor, " must be a positive number"));
  return m;
}

Manifest Manifest::read(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec)
    throw std::runtime_error(lf::str(path, ": cannot read the cache manifest (", ec.message(),
                                 "); run `latentforge encode` to make the cache, or finish a job "
                                 "array with `latentforge encode --finalize`"));
  if (static_cast<int64_t>(size) > kMaxManifestBytes)
    throw std::runtime_error(lf::str(path, ": ", size, " bytes, more than the limit ",
                                 kMaxManifestBytes, " for a manifest"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(lf::str(path, ": not valid JSON (", e.what(), ")"));
  }
  return from_json(j, path);
}

}  // namespace lf::data
