// manifest.json (see manifest.h; format in docs/cache.md).
#include "data/manifest.h"

#include <cmath>
#include <limits>
#include <filesystem>
#include <stdexcept>

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace lf::data {

nlohmann::json Manifest::to_json() const {
  nlohmann::json shards_j = nlohmann::json::array();
  for (const auto& s : shards) {
    nlohmann::json e = {{"file", s.file}, {"begin", s.begin}, {"count", s.count}, {"sha256", s.sha256}};
    if (!s.file_sha256.empty()) e["file_sha256"] = s.file_sha256;
    if (s.bytes >= 0) e["bytes"] = s.bytes;
    shards_j.push_back(e);
  }
  const auto& st = settings;
  nlohmann::json j = {{"format", "latentforge-latent-cache"},
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
  if (st.text.enabled()) {
    j["text"] = st.text_json();
    j["text"]["truncated"] = captions_truncated;
  }
  return j;
}

Manifest Manifest::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { return std::runtime_error(lf::str(where, ": ", what)); };
  const lf::JsonFields f(j, where, "", lf::ErrorKind::kEnvironment);
  Manifest m;
  const std::string format = f.string("format", 256);
  if (format != "latentforge-latent-cache")
    f.fail("format", lf::str("is \"", lf::excerpt(format), "\", expected \"latentforge-latent-cache\""));
  m.format_version = f.integer("format_version");
  if (m.format_version != kCacheFormatVersion)
    throw fail(lf::str("format_version ", m.format_version, ", this build reads ",
                       kCacheFormatVersion, "; re-run encode with this version"));
  m.producer = f.string("producer", 256);
  m.settings = CacheSettings::from_fields(f, /*manifest_layout=*/true);
  if (m.settings.text.enabled())
    m.captions_truncated = f.object("text").integer("truncated", 0, m.settings.num_samples);
  const int64_t classes = f.integer("num_classes", 0, kMaxClasses);
  if (classes != m.num_classes())
    f.fail("num_classes", lf::str("is ", classes, " but label_names lists ", m.num_classes(), " names"));
  m.scale_factor = f.number("scale_factor");
  if (!(m.scale_factor > 0))
    f.fail("scale_factor", lf::str("is ", m.scale_factor, ", expected a positive number"));
  m.scale_factor_mode = f.string("scale_factor_mode", 16);
  const lf::JsonFields ls = f.object("latent_stats");
  const size_t channels = static_cast<size_t>(m.settings.latent_shape[0]);
  m.channel_mean = ls.numbers("channel_mean", channels);
  m.channel_std = ls.numbers("channel_std", channels);
  m.latent_mean = ls.number("mean");
  m.latent_std = ls.number("std");
  const int64_t want = num_shards(m.settings.num_samples, m.settings.shard_size);
  const nlohmann::json& sj = f.array("shards", static_cast<size_t>(kMaxShards));
  if (static_cast<int64_t>(sj.size()) != want)
    throw fail(lf::str("lists ", sj.size(), " shards, expected ", want, " for ",
                       m.settings.num_samples, " samples in shards of ", m.settings.shard_size));
  int64_t next = 0;
  for (size_t i = 0; i < sj.size(); ++i) {
    const lf::JsonFields e = f.element("shards", i);
    ManifestShard sh;
    sh.file = e.string("file", 64);
    sh.begin = e.integer("begin");
    sh.count = e.integer("count");
    sh.sha256 = e.string("sha256", 64);
    if (e.has("file_sha256")) sh.file_sha256 = e.string("file_sha256", 64);
    if (e.has("bytes")) sh.bytes = e.integer("bytes", 0, std::numeric_limits<int64_t>::max());
    if (sh.file != shard_file_name(static_cast<int64_t>(i)) || sh.begin != next ||
        sh.count < 1 || sh.count > m.settings.shard_size || sh.sha256.size() != 64 ||
        (e.has("file_sha256") && sh.file_sha256.size() != 64))
      throw fail(lf::str("shard entry ", i, " (", lf::json_excerpt(sj[i], 300), ") is not ",
                         shard_file_name(static_cast<int64_t>(i)), " starting at ", next,
                         " with 1..", m.settings.shard_size, " samples and a SHA-256"));
    next += sh.count;
    m.shards.push_back(sh);
  }
  if (next != m.settings.num_samples)
    throw fail(lf::str("shards hold ", next, " samples, num_samples is ", m.settings.num_samples));
  return m;
}

Manifest Manifest::parse(const std::string& text, const std::string& where) {
  lf::JsonLimits limits;
  limits.max_bytes = static_cast<size_t>(kMaxManifestBytes);
  limits.error = lf::ErrorKind::kEnvironment;
  return from_json(lf::parse_json(text, where, limits), where);
}

Manifest Manifest::read(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec)
    throw std::runtime_error(lf::str(path, ": cannot read the cache manifest (", ec.message(),
                                 "); run `latentforge encode` to make the cache, or finish a job "
                                 "array with `latentforge encode --finalize`"));
  if (size > static_cast<uintmax_t>(kMaxManifestBytes))
    throw std::runtime_error(lf::str(path, ": ", size, " bytes, more than the limit ",
                                 kMaxManifestBytes, " for a manifest"));
  return parse(read_file(path, static_cast<size_t>(kMaxManifestBytes)), path);
}

}  // namespace lf::data
