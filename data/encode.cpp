// The encode engine and finalize (see encode.h; format in docs/cache.md).
#include "data/encode.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <unordered_map>

#include "core/util/checked.h"
#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/progress.h"
#include "core/util/strings.h"
#include "core/util/tokenizer.h"
#include "data/shard_file.h"
#include "data/text_embeddings.h"

namespace lf::data {

namespace fs = std::filesystem;

namespace {

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) + "…" : h; }

// Settings every shard of this run will carry (latent_shape is known after the first batch).
CacheSettings run_settings(const Source& source, const EncodeOptions& o) {
  CacheSettings s;
  s.store = o.store;
  s.dtype = o.dtype;
  s.flip = o.flip;
  s.shard_size = o.shard_size;
  s.num_samples = source.size();
  s.image_shape = {source.channels(), source.height(), source.width()};
  // Paths and folder names are bytes, not always UTF-8, and JSON holds UTF-8 only: invalid
  // sequences become U+FFFD here, once, so every shard and the manifest agree on them.
  s.source = lf::valid_utf8(source.description());
  for (const auto& name : source.label_names())
    s.label_names.push_back(lf::valid_utf8(nlohmann::json(name)).get<std::string>());
  s.skipped = lf::valid_utf8(to_json(source.skipped()));
  s.vae_sha256 = o.vae_hash;
  s.vae_config = lf::valid_utf8(o.vae_config);
  if (source.captioned()) {
    s.text.tokenizer = lf::ByteTokenizer::kName;
    s.text.context_length = o.context_length;
    s.text.caption_bytes = TextSettings::caption_bytes_for(o.context_length);
  }
  return s;
}

// Refuses a cache made with another VAE or settings. `existing` comes from `where`.
void check_compatible(const CacheSettings& existing, CacheSettings wanted,
                      const std::string& where) {
  if (existing.vae_sha256 != wanted.vae_sha256)
    throw std::invalid_argument(vae_mismatch_message(where, existing.vae_sha256,
                                                     wanted.vae_sha256) +
                                " (or encode into a new cache.dir)");
  wanted.latent_shape = existing.latent_shape;  // not known before encoding
  std::string diff = existing.difference(wanted);
  if (!diff.empty())
    throw std::invalid_argument(lf::str(where, ": the existing cache was made with other settings (",
                                    diff, ", existing vs requested); encode into a new ",
                                    "cache.dir or delete this one"));
}

void remove_stale_temps(const std::string& dir, const std::string& shard_name) {
  const std::string prefix = shard_name + ".tmp-";
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) {
      std::error_code ec;
      fs::remove(e.path(), ec);
    }
  }
}

// Whether a finished shard file is complete, compatible and intact. Throws for an
// incompatible one (that is the user's mistake, not damage); false for damage.
bool existing_shard_ok(const std::string& path, const CacheSettings& wanted,
                       std::string* problem) {
  std::unique_ptr<ShardReader> r;
  try {
    r = std::make_unique<ShardReader>(path);
  } catch (const std::exception& e) {
    *problem = e.what();
    return false;
  }
  check_compatible(r->header().settings, wanted, path);
  try {
    std::string found = r->compute_checksum();
    if (found == r->header().sha256) return true;
    *problem = lf::str(path, ": checksum ", found, " does not match the recorded ", r->header().sha256);
  } catch (const std::exception& e) {
    *problem = e.what();
  }
  return false;
}

// Caption embeddings computed elsewhere (EncodeOptions::text_embeddings): the file and the row
// of each sample.
struct ExternalText {
  std::unique_ptr<TextEmbeddingFile> file;
  std::vector<int64_t> rows;  // per global sample index
};

// Opens options.text_embeddings and finds every image of the source in it by file name.
ExternalText open_external_text(const Source& source, const EncodeOptions& o) {
  ExternalText x;
  if (o.text_embeddings.empty()) return x;
  if (!source.captioned())
    throw std::invalid_argument(lf::str("data.text_embeddings = ", o.text_embeddings,
                                        " but the data set has no captions; it needs an image folder with a "
                                        "metadata.jsonl (the embeddings are of its captions)"));
  x.file = std::make_unique<TextEmbeddingFile>(o.text_embeddings, "file_name");
  // Matched as normalised relative paths ("./a/b.png" and "a//b.png" name a/b.png); a path
  // twice would make the match ambiguous.
  std::unordered_map<std::string, int64_t> row_of;
  const std::vector<std::string>& keys = x.file->keys();
  for (size_t r = 0; r < keys.size(); ++r) {
    auto [it, fresh] = row_of.emplace(fs::path(keys[r]).lexically_normal().string(), static_cast<int64_t>(r));
    if (!fresh)
      throw std::invalid_argument(lf::str(o.text_embeddings, ": dataset 'file_name' names '", lf::excerpt(it->first),
                                          "' twice (rows ", it->second, " and ", r, ")"));
  }
  const std::vector<std::string> names = source.item_names();
  std::vector<std::string> missing;
  for (const std::string& n : names) {
    auto it = row_of.find(n);
    x.rows.push_back(it == row_of.end() ? -1 : it->second);
    if (x.rows.back() < 0) missing.push_back(n);
  }
  if (!missing.empty())
    throw std::invalid_argument(lf::str(o.text_embeddings, ": no embedding for ", missing.size(), " of the ",
                                        names.size(), " images (dataset 'file_name' holds paths as in the folder's "
                                        "metadata.jsonl), e.g. '", lf::excerpt(missing[0]), "'"));
  return x;
}

// Writes shard `i` of the cache to its final path; returns its sample count.
int64_t encode_one_shard(const Source& source, const EncodeFn& encode, const EncodeOptions& o,
                         CacheSettings settings, int64_t i, Progress* progress, ExternalText& external) {
  const std::string path = (fs::path(o.cache_dir) / shard_file_name(i)).string();
  const int64_t begin = i * o.shard_size;
  const int64_t count = std::min(o.shard_size, source.size() - begin);
  const std::string tmp = temp_sibling(path);
  std::unique_ptr<ShardWriter> writer;
  // One batch in flight: batch k is handed to the encoder before batch k-1 is waited for and
  // written (on a GPU the device encodes k while the host writes k-1 and reads k+1).
  struct Pending {
    int64_t b = 0, e = 0;
    at::Tensor labels, indices;
    std::vector<std::string> captions;
    at::Tensor text_embedding, text_mask;
    std::vector<std::pair<bool, EncodedBatch>> encoded;  // (flipped, result)
  };
  auto write_pending = [&](Pending& p) {
    std::map<std::string, at::Tensor> latents;
    for (auto& [flipped, eb] : p.encoded) {
      if (eb.wait) eb.wait();
      const std::string sfx = flipped ? "_flip" : "";
      if (o.store == StoreKind::kMoments) {
        if (!eb.mean.defined() || !eb.logvar.defined())
          throw std::invalid_argument(lf::str("the encoder returned no mean/logvar for samples ", p.b, "..", p.e - 1,
                                              " but cache.store = moments"));
        latents["mean" + sfx] = eb.mean;
        latents["logvar" + sfx] = eb.logvar;
      } else {
        if (!eb.latent.defined())
          throw std::invalid_argument(lf::str("the encoder returned no latent for samples ", p.b, "..", p.e - 1,
                                              " but cache.store = sample"));
        latents["latent" + sfx] = eb.latent;
      }
    }
    if (!writer) {
      const at::Tensor& first = latents.begin()->second;
      if (first.dim() != 4)
        throw std::invalid_argument(lf::str("the encoder returned a latent of shape ", first.sizes(),
                                            ", expected [n, c, h, w]"));
      settings.latent_shape = {first.size(1), first.size(2), first.size(3)};
      writer = std::make_unique<ShardWriter>(tmp, settings, i, begin, count);
    }
    writer->write(latents, p.labels, p.indices, p.captions, p.text_embedding, p.text_mask);
    if (progress) progress->add(p.e - p.b);
  };
  try {
    std::optional<Pending> previous;
    for (int64_t b = begin; b < begin + count; b += o.batch_size) {
      Pending current;
      current.b = b;
      current.e = std::min(b + o.batch_size, begin + count);
      SourceBatch sb = source.get(b, current.e);
      current.labels = sb.labels;
      current.captions = std::move(sb.captions);
      if (external.file)
        external.file->read(std::vector<int64_t>(external.rows.begin() + b, external.rows.begin() + current.e),
                            &current.text_embedding, &current.text_mask);
      current.indices = at::arange(b, current.e, at::kLong);
      current.encoded.emplace_back(false, encode(sb.images, current.indices, false));
      // Horizontal flip = reversing the width axis of NCHW.
      if (o.flip) current.encoded.emplace_back(true, encode(sb.images.flip({3}), current.indices, true));
      if (previous) write_pending(*previous);
      previous = std::move(current);
    }
    if (previous) write_pending(*previous);
    writer->finish();
    writer.reset();
    crash_point("encode.shard_written");
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(lf::str("cannot rename ", tmp, " to ", path, ": ",
                                   std::strerror(errno)));
    fsync_path(o.cache_dir);
  } catch (...) {
    writer.reset();
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  return count;
}

}  // namespace

double parse_scale_factor(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || !(v > 0) || !std::isfinite(v))
    throw std::invalid_argument(lf::str("cache.scale_factor is '", s,
                                    "', expected auto or a positive number"));
  return v;
}

std::string vae_mismatch_message(const std::string& where, const std::string& cache_hash,
                                 const std::string& configured_hash) {
  return lf::str(where, ": VAE hash ", short_hash(cache_hash), " but the configured VAE is ",
             short_hash(configured_hash), "; re-run encode or set vae.weights to the weights ",
             "that made this cache (full hashes: cache ", cache_hash, ", configured ",
             configured_hash, ")");
}

void EncodeOptions::validate() const {
  if (cache_dir.empty()) throw std::invalid_argument("cache.dir is empty; set the cache directory");
  if (shard_size < 1)
    throw std::invalid_argument(lf::str("cache.shard_size is ", shard_size, ", expected >= 1"));
  if (batch_size < 1)
    throw std::invalid_argument(lf::str("encode.batch_size is ", batch_size, ", expected >= 1"));
  if (vae_hash.empty())
    throw std::invalid_argument("the VAE hash is empty; the cache must be bound to its VAE");
  if (scale_factor != "auto") parse_scale_factor(scale_factor);
  if (context_length != 0 && (context_length < 3 || context_length > kMaxContextLength))
    throw std::invalid_argument(lf::str("model.context_length is ", context_length,
                                        ", expected 3..", kMaxContextLength,
                                        " (tokens per caption, begin and end included)"));
}

std::vector<int64_t> shards_for_rank(int64_t num_shards, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument(lf::str("rank ", rank, " of world ", world,
                                    ": expected 0 <= rank < world"));
  std::vector<int64_t> out;
  for (int64_t i = rank; i < num_shards; i += world) out.push_back(i);
  return out;
}

EncodeReport encode_shards(const Source& source, const EncodeFn& encode,
                           const EncodeOptions& options, int rank, int world) {
  options.validate();
  if (source.size() < 1) throw std::invalid_argument("encode: the source holds no images");
  if (options.flip && source.captioned())
    throw std::invalid_argument("cache.flip = true with a captioned data set (metadata.jsonl): a mirrored image no "
                                "longer matches a caption that says left or right; set cache.flip = false");
  if (source.captioned() && options.context_length == 0)
    throw std::invalid_argument("the data set is captioned (metadata.jsonl) but no context length is set; set "
                                "model.context_length (tokens per caption)");
  ExternalText external = open_external_text(source, options);
  fs::create_directories(options.cache_dir);
  CacheSettings settings = run_settings(source, options);
  if (external.file) {
    settings.text.embedding_length = external.file->length();
    settings.text.embedding_dim = external.file->dim();
    settings.text.embedding_sha256 = external.file->sha256();
  }
  const std::string manifest_path = (fs::path(options.cache_dir) / kManifestName).string();
  if (fs::exists(manifest_path))
    check_compatible(Manifest::read(manifest_path).settings, settings, manifest_path);

  EncodeReport report;
  report.shards_total = num_shards(source.size(), options.shard_size);
  const std::vector<int64_t> mine = shards_for_rank(report.shards_total, rank, world);
  int64_t my_samples = 0;
  for (int64_t i : mine)
    my_samples += std::min(options.shard_size, source.size() - i * options.shard_size);
  std::unique_ptr<Progress> progress;
  if (options.progress) progress = std::make_unique<Progress>("encode", my_samples, "images");

  for (int64_t i : mine) {
    const std::string name = shard_file_name(i);
    const std::string path = (fs::path(options.cache_dir) / name).string();
    remove_stale_temps(options.cache_dir, name);
    bool redo = false;
    if (fs::exists(path)) {
      std::string problem;
      if (existing_shard_ok(path, settings, &problem)) {
        ++report.shards_skipped;
        if (progress) {
          progress->add(std::min(options.shard_size, source.size() - i * options.shard_size));
          progress->reset_rate();
        }
        continue;
      }
      LOG(WARNING) << path << " is damaged and will be rewritten: " << problem;
      fs::remove(path);
      redo = true;
    }
    report.samples_encoded +=
        encode_one_shard(source, encode, options, settings, i, progress.get(), external);
    ++report.shards_written;
    if (redo) ++report.shards_redone;
  }
  if (progress) progress->finish();
  return report;
}

Manifest finalize_cache(const std::string& cache_dir, const EncodeOptions& options) {
  if (!fs::is_directory(cache_dir))
    throw std::runtime_error(lf::str(cache_dir, ": not a directory; run encode first"));
  // Find shard files (finished ones only: temporaries carry a suffix).
  std::vector<int64_t> present;
  for (const auto& e : fs::directory_iterator(cache_dir)) {
    const std::string n = e.path().filename().string();
    if (n.size() >= 14 && n.rfind("shard-", 0) == 0 && n.substr(n.size() - 3) == ".h5" &&
        n.find_first_not_of("0123456789", 6) == n.size() - 3) {
      int64_t shard = 0;
      if (!lf::parse_int64(n.substr(6, n.size() - 9), 0, kMaxShards - 1, &shard))
        throw std::runtime_error(lf::str(e.path().string(), ": shard number ",
                                         lf::excerpt(n.substr(6, n.size() - 9)),
                                         " is beyond the largest a cache has (", kMaxShards - 1,
                                         "); it does not come from encode: delete it"));
      present.push_back(shard);
    }
  }
  std::sort(present.begin(), present.end());
  if (present.empty())
    throw std::runtime_error(lf::str(cache_dir, ": no shard files (shard-NNNNN.h5); run encode for ",
                                 "every rank or array task before finalizing"));
  const std::string first_path = (fs::path(cache_dir) / shard_file_name(present[0])).string();
  const CacheSettings settings = ShardReader(first_path).header().settings;
  if (!options.vae_hash.empty() && options.vae_hash != settings.vae_sha256)
    throw std::invalid_argument(vae_mismatch_message(first_path, settings.vae_sha256,
                                                     options.vae_hash));
  auto expect = [&](const std::string& field, const std::string& cache, const std::string& want) {
    if (cache != want)
      throw std::invalid_argument(lf::str(first_path, ": ", field, " is ", cache,
                                      " but finalize was asked for ", want,
                                      "; pass the options encode ran with"));
  };
  expect("store", to_string(settings.store), to_string(options.store));
  expect("dtype", to_string(settings.dtype), to_string(options.dtype));
  expect("flip", settings.flip ? "true" : "false", options.flip ? "true" : "false");
  expect("shard_size", std::to_string(settings.shard_size), std::to_string(options.shard_size));

  const int64_t total = num_shards(settings.num_samples, settings.shard_size);
  std::vector<std::string> missing, extra;
  for (int64_t i = 0, k = 0; i < total; ++i) {
    while (k < static_cast<int64_t>(present.size()) && present[k] < i) ++k;
    if (k >= static_cast<int64_t>(present.size()) || present[k] != i)
      missing.push_back(shard_file_name(i));
  }
  for (int64_t p : present)
    if (p >= total) extra.push_back(shard_file_name(p));
  if (!missing.empty()) {
    std::vector<std::string> show(missing.begin(),
                                  missing.begin() + std::min<size_t>(missing.size(), 8));
    throw std::runtime_error(lf::str(cache_dir, ": ", missing.size(), " of ", total,
                                 " shards are missing (", join(show, ", "),
                                 missing.size() > show.size() ? ", ..." : "",
                                 "); run encode for the ranks or array tasks that own them ",
                                 "(shard i belongs to task i mod the task count), then finalize"));
  }
  if (!extra.empty())
    throw std::runtime_error(lf::str(cache_dir, ": shard files beyond the ", total, " this cache has (",
                                 extra[0], "...); they come from another encode run: delete them"));

  Manifest m;
  m.producer = std::string("LatentForge ") + LF_VERSION;
  m.settings = settings;
  LatentStats stats;
  for (int64_t i = 0; i < total; ++i) {
    const std::string path = (fs::path(cache_dir) / shard_file_name(i)).string();
    ShardReader r(path);
    std::string diff = r.header().settings.difference(settings);
    if (!diff.empty())
      throw std::runtime_error(lf::str(path, ": settings differ from ", first_path, " (", diff,
                                   "); the shards come from different encode runs: delete the ",
                                   "odd ones and re-run encode"));
    std::string found = r.compute_checksum();
    if (found != r.header().sha256)
      throw std::runtime_error(lf::str(path, ": checksum mismatch: recorded ", r.header().sha256,
                                   ", found ", found, "; the shard is damaged: delete it and ",
                                   "re-run encode"));
    stats.add(r.read_stats());
    if (settings.text.enabled()) m.captions_truncated += r.read_truncated();
    // The whole file's hash lets readers check the bytes before libhdf5 parses them.
    m.shards.push_back({shard_file_name(i), r.header().begin, r.header().count, found,
                        sha256_file(path), static_cast<int64_t>(fs::file_size(path))});
  }
  // Mean and (population) standard deviation from the float64 sums.
  for (size_t c = 0; c < stats.count.size(); ++c) {
    double n = static_cast<double>(stats.count[c]), mu = stats.sum[c] / n;
    m.channel_mean.push_back(mu);
    m.channel_std.push_back(std::sqrt(std::max(0.0, stats.sumsq[c] / n - mu * mu)));
  }
  const double n = static_cast<double>(stats.total_count());
  m.latent_mean = stats.total_sum() / n;
  m.latent_std = std::sqrt(std::max(0.0, stats.total_sumsq() / n - m.latent_mean * m.latent_mean));
  if (options.scale_factor == "auto") {
    // LDM's scale_by_std (ldm/models/diffusion/ddpm.py, LatentDiffusion.on_train_batch_start):
    // scale_factor = 1 / z.flatten().std(), here over the whole cache instead of one batch.
    if (!(m.latent_std > 0) || !std::isfinite(m.latent_std))
      throw std::runtime_error(lf::str(cache_dir, ": the latents' standard deviation is ",
                                   m.latent_std, ", so scale_factor = auto is undefined; set ",
                                   "cache.scale_factor to a number"));
    m.scale_factor = 1.0 / m.latent_std;
    m.scale_factor_mode = "auto";
  } else {
    m.scale_factor = parse_scale_factor(options.scale_factor);
    m.scale_factor_mode = "given";
  }
  // A killed finalize leaves its temporary manifest behind: clear it (one process finalizes).
  remove_stale_temps(cache_dir, kManifestName);
  atomic_write_file((fs::path(cache_dir) / kManifestName).string(), m.to_json().dump(2) + "\n",
                    "encode.manifest_write");
  return m;
}

}  // namespace lf::data
