// Cache vocabulary and settings (see cache_format.h).
#include "data/cache_format.h"

#include <cstdio>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::data {

const EnumTable<StoreKind>& store_kinds() {
  static const EnumTable<StoreKind> table = {{"moments", StoreKind::kMoments}, {"sample", StoreKind::kSample}};
  return table;
}

const EnumTable<StoreDType>& store_dtypes() {
  static const EnumTable<StoreDType> table = {{"f16", StoreDType::kF16}, {"f32", StoreDType::kF32}};
  return table;
}

int64_t dtype_bytes(StoreDType d) { return d == StoreDType::kF16 ? 2 : 4; }

std::string shard_file_name(int64_t shard) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld.h5", static_cast<long long>(shard));
  return buf;
}

int64_t num_shards(int64_t num_samples, int64_t shard_size) {
  return shard_size > 0 ? (num_samples + shard_size - 1) / shard_size : 0;
}

std::vector<std::string> latent_dataset_names(StoreKind store, bool flip) {
  std::vector<std::string> base =
      store == StoreKind::kMoments ? std::vector<std::string>{"mean", "logvar"}
                                   : std::vector<std::string>{"latent"};
  std::vector<std::string> out = base;
  if (flip)
    for (const auto& b : base) out.push_back(b + "_flip");
  return out;
}

std::vector<std::string> shard_dataset_names(StoreKind store, bool flip) {
  auto out = latent_dataset_names(store, flip);
  for (const char* n : {"labels", "index", "stats_count", "stats_sum", "stats_sumsq",
                        "stats_overall"})
    out.push_back(n);
  return out;
}

nlohmann::json CacheSettings::to_json() const {
  return {{"store", to_string(store)},     {"dtype", to_string(dtype)},
          {"flip", flip},                  {"shard_size", shard_size},
          {"num_samples", num_samples},    {"image_shape", image_shape},
          {"latent_shape", latent_shape},  {"source", source},
          {"label_names", label_names},    {"skipped", skipped},
          {"vae_sha256", vae_sha256},      {"vae_config", vae_config}};
}

CacheSettings CacheSettings::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) -> std::runtime_error {
    return std::runtime_error(lf::str(where, ": ", what));
  };
  if (!j.is_object()) throw fail("cache settings are not a JSON object");
  CacheSettings s;
  try {
    s.store = store_kinds().parse(j.at("store").get<std::string>(), "store");
    s.dtype = store_dtypes().parse(j.at("dtype").get<std::string>(), "dtype");
    s.flip = j.at("flip").get<bool>();
    s.shard_size = j.at("shard_size").get<int64_t>();
    s.num_samples = j.at("num_samples").get<int64_t>();
    s.image_shape = j.at("image_shape").get<std::vector<int64_t>>();
    s.latent_shape = j.at("latent_shape").get<std::vector<int64_t>>();
    s.source = j.at("source");
    s.label_names = j.at("label_names").get<std::vector<std::string>>();
    s.skipped = j.at("skipped");
    s.vae_sha256 = j.at("vae_sha256").get<std::string>();
    s.vae_config = j.at("vae_config");
  } catch (const nlohmann::json::exception& e) {
    throw fail(lf::str("bad or missing field (", e.what(), ")"));
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }
  if (s.num_samples < 1 || s.num_samples > kMaxSamples)
    throw fail(lf::str("num_samples ", s.num_samples, " is outside 1..", kMaxSamples));
  if (s.shard_size < 1 || num_shards(s.num_samples, s.shard_size) > kMaxShards)
    throw fail(lf::str("shard_size ", s.shard_size, " gives more than ", kMaxShards,
                   " shards or is not positive"));
  auto check_shape = [&](const std::vector<int64_t>& shape, const char* name) {
    int64_t n = 1;
    for (int64_t d : shape) {
      if (d < 1 || d > kMaxLatentElements) throw fail(lf::str(name, " has a dimension ", d));
      n *= d;
      if (n > kMaxLatentElements) throw fail(lf::str(name, " has more than ", kMaxLatentElements,
                                                 " elements"));
    }
    if (shape.size() != 3) throw fail(lf::str(name, " must have 3 dimensions [C,H,W]"));
  };
  check_shape(s.image_shape, "image_shape");
  check_shape(s.latent_shape, "latent_shape");
  if (!s.skipped.is_array()) throw fail("skipped is not an array");
  return s;
}

std::string CacheSettings::difference(const CacheSettings& other) const {
  nlohmann::json a = to_json(), b = other.to_json();
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (b.contains(it.key()) && b[it.key()] == it.value()) continue;
    auto shorten = [](const nlohmann::json& v) {
      std::string s = v.dump();
      return s.size() > 200 ? s.substr(0, 197) + "..." : s;
    };
    return lf::str(it.key(), ": ", shorten(it.value()), " vs ",
               b.contains(it.key()) ? shorten(b[it.key()]) : std::string("(absent)"));
  }
  return "";
}

}  // namespace lf::data
