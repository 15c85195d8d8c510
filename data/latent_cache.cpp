// The latent cache reader (see latent_cache.h).
#include "data/latent_cache.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "core/util/progress.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "data/encode.h"
#include "data/half_convert.h"
#include "data/hdf5_util.h"
#include "data/shard_file.h"

namespace lf::data {

namespace fs = std::filesystem;

namespace {

at::ScalarType stored_type(StoreDType d) { return d == StoreDType::kF16 ? at::kHalf : at::kFloat; }

// A per-thread staging buffer that grows and is never zero-filled (reads overwrite it).
char* staging_buffer(size_t bytes) {
  thread_local std::unique_ptr<char[]> buf;
  thread_local size_t cap = 0;
  if (bytes > cap) {
    buf.reset(new char[bytes]);
    cap = bytes;
  }
  return buf.get();
}

// Checks a shard's own attributes against the manifest entry (cheap: no data read).
void check_shard_header(const ShardReader& r, const Manifest& m, int64_t i) {
  const ManifestShard& e = m.shards[static_cast<size_t>(i)];
  const auto& h = r.header();
  if (h.shard_index != i || h.begin != e.begin || h.count != e.count)
    throw std::runtime_error(lf::str(r.path(), ": holds shard ", h.shard_index, " [", h.begin, ", ",
                                     h.begin + h.count, ") but the manifest lists [", e.begin,
                                     ", ", e.begin + e.count, ") for ", e.file));
  if (h.sha256 != e.sha256)
    throw std::runtime_error(lf::str(r.path(), ": records checksum ", h.sha256,
                                     " but the manifest expects ", e.sha256,
                                     "; the shard was rewritten after finalize: run "
                                     "`latentforge encode --finalize` again"));
  std::string diff = h.settings.difference(m.settings);
  if (!diff.empty())
    throw std::runtime_error(lf::str(r.path(), ": settings differ from the manifest (", diff,
                                     ", shard vs manifest)"));
}

// Where read_into puts a captioned cache's per-row text: the tokens (int32) and, with external
// caption embeddings, the stored f16 embedding rows (converted to float32 when the output is
// float, like the latents) and the mask bytes. The constructor checks the output tensors.
class TextRowSink {
 public:
  TextRowSink(const TextSettings& t, LatentRows& out, int64_t n)
      : ctx_(t.context_length), emb_elems_(t.embedding_length * t.embedding_dim), mask_row_(t.embedding_length) {
    if (t.enabled()) {
      TORCH_CHECK(out.tokens.defined() && out.tokens.is_contiguous() && out.tokens.scalar_type() == at::kInt &&
                      out.tokens.numel() == n * ctx_,
                  "LatentCache::read_into: tokens must be a contiguous int32 [", n, ", ", ctx_, "]");
      tok_ = out.tokens.data_ptr<int32_t>();
    }
    if (t.external()) {
      emb_float_ = out.text_embedding.defined() && out.text_embedding.scalar_type() == at::kFloat;
      TORCH_CHECK(out.text_embedding.defined() && out.text_embedding.is_contiguous() &&
                      (emb_float_ || out.text_embedding.scalar_type() == at::kHalf) &&
                      out.text_embedding.numel() == n * emb_elems_ && out.text_mask.defined() &&
                      out.text_mask.is_contiguous() && out.text_mask.scalar_type() == at::kByte &&
                      out.text_mask.numel() == n * mask_row_,
                  "LatentCache::read_into: text_embedding must be a contiguous float32 or float16 [", n, ", ",
                  t.embedding_length, ", ", t.embedding_dim, "] and text_mask uint8 [", n, ", ", mask_row_, "]");
      emb_ = static_cast<char*>(out.text_embedding.data_ptr());
      mask_ = out.text_mask.data_ptr<uint8_t>();
    }
  }
  bool has_tokens() const { return tok_ != nullptr; }
  bool has_embeddings() const { return emb_ != nullptr; }
  int64_t context_length() const { return ctx_; }
  int64_t embedding_row_bytes() const { return emb_elems_ * 2; }  // stored as f16
  int64_t mask_row_bytes() const { return mask_row_; }
  // Output row q from a stored row.
  void put_tokens(int64_t q, const int32_t* src) const {
    std::memcpy(tok_ + q * ctx_, src, static_cast<size_t>(ctx_) * 4);
  }
  void put_embedding(int64_t q, const char* emb, const uint8_t* mask) const {
    if (emb_float_)
      half_to_float(reinterpret_cast<const uint16_t*>(emb), reinterpret_cast<float*>(emb_) + q * emb_elems_, emb_elems_);
    else
      std::memcpy(emb_ + q * emb_elems_ * 2, emb, static_cast<size_t>(emb_elems_) * 2);
    std::memcpy(mask_ + q * mask_row_, mask, static_cast<size_t>(mask_row_));
  }

 private:
  int64_t ctx_, emb_elems_, mask_row_;
  int32_t* tok_ = nullptr;
  char* emb_ = nullptr;
  uint8_t* mask_ = nullptr;
  bool emb_float_ = false;
};

}  // namespace

bool check_shard_file(const std::string& path, const ManifestShard& e, bool hash) {
  if (e.bytes >= 0) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec)
      throw std::runtime_error(lf::str(path, ": cannot read the shard (", ec.message(),
                                       "); re-run encode and finalize"));
    if (size != static_cast<uintmax_t>(e.bytes))
      throw std::runtime_error(lf::str(path, ": ", size, " bytes, the manifest lists ", e.bytes,
                                       "; the shard is damaged or was replaced: delete it, re-run "
                                       "encode and finalize"));
  }
  if (!hash || e.file_sha256.empty()) return false;
  const std::string found = sha256_file(path);
  if (found != e.file_sha256)
    throw std::runtime_error(lf::str(path, ": checksum mismatch: the manifest expects ",
                                     e.file_sha256, " for the file, it hashes to ", found,
                                     "; the shard is damaged: delete it, re-run encode and "
                                     "finalize"));
  return true;
}

std::shared_ptr<LatentCache> LatentCache::open(const std::string& dir, bool verify,
                                               bool memory_map) {
  std::shared_ptr<LatentCache> c(new LatentCache());
  c->dir_ = dir;
  c->memory_map_ = memory_map;
  c->manifest_ = Manifest::read((fs::path(dir) / kManifestName).string());
  c->shards_.resize(c->manifest_.shards.size());
  c->mapped_.reset(new MappedShard[c->manifest_.shards.size()]);
  if (verify) c->verify();
  return c;
}

LatentCache::~LatentCache() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  shards_.clear();
}

ShardReader& LatentCache::shard(int64_t i) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = shards_[static_cast<size_t>(i)];
  if (!slot) {
    const ManifestShard& e = manifest_.shards[static_cast<size_t>(i)];
    const std::string path = (fs::path(dir_) / e.file).string();
    check_shard_file(path, e, /*hash=*/false);
    auto r = std::make_unique<ShardReader>(path);
    check_shard_header(*r, manifest_, i);
    slot = std::move(r);
  }
  return *slot;
}

const LatentCache::MappedShard& LatentCache::mapped(int64_t i) const {
  MappedShard& m = mapped_[static_cast<size_t>(i)];
  if (m.state.load(std::memory_order_acquire) != 0) return m;
  std::lock_guard<std::mutex> lock(map_mu_);
  if (m.state.load(std::memory_order_relaxed) != 0) return m;
  ShardReader& r = shard(i);
  const auto& s = manifest_.settings;
  bool ok = memory_map_;
  for (const auto& name : latent_dataset_names(s.store, s.flip)) {
    m.latent.push_back(ok ? r.mapped_rows(name) : nullptr);
    ok = ok && m.latent.back();
  }
  if (ok) {
    m.labels = reinterpret_cast<const int64_t*>(r.mapped_rows("labels"));
    m.index = reinterpret_cast<const int64_t*>(r.mapped_rows("index"));
    ok = m.labels && m.index;
    if (ok && s.text.enabled()) {
      m.tokens = reinterpret_cast<const int32_t*>(r.mapped_rows("tokens"));
      ok = m.tokens != nullptr;
    }
    if (ok && s.text.external()) {
      m.text_embedding = r.mapped_rows("text_embedding");
      m.text_mask = reinterpret_cast<const uint8_t*>(r.mapped_rows("text_mask"));
      ok = m.text_embedding && m.text_mask;
    }
  }
  m.state.store(ok ? 1 : 2, std::memory_order_release);
  return m;
}

int64_t LatentCache::sample_bytes() const {
  const auto& s = manifest_.settings;
  int64_t per = dtype_bytes(s.dtype);
  for (int64_t d : s.latent_shape) per *= d;
  return per * static_cast<int64_t>(latent_dataset_names(s.store, s.flip).size());
}

void LatentCache::verify() const {
  const std::vector<double> mb = shard_file_mb();
  double total = 0;
  for (double m : mb) total += m;
  Progress progress(lf::str("verify ", dir_), static_cast<int64_t>(std::ceil(total)), "MB");
  double done = 0;
  for (int64_t i = 0; i < num_shards(); ++i) {
    verify_shard(i);
    done += mb[static_cast<size_t>(i)];
    progress.update(static_cast<int64_t>(std::ceil(done)));
  }
}

std::vector<double> LatentCache::shard_file_mb() const {
  constexpr double kMB = 1024.0 * 1024.0;
  std::vector<double> mb(manifest_.shards.size(), 0.0);
  for (size_t i = 0; i < mb.size(); ++i) {
    std::error_code ec;
    auto bytes = fs::file_size(fs::path(dir_) / manifest_.shards[i].file, ec);
    mb[i] = ec ? 0.0 : static_cast<double>(bytes) / kMB;
  }
  return mb;
}

void LatentCache::verify_shard(int64_t i) const {
  // With the file's hash in the manifest, shard() checks it before HDF5 opens the file, and
  // equal bytes are the data finalize verified; older manifests hash the datasets instead.
  const ManifestShard& e = manifest_.shards[static_cast<size_t>(i)];
  if (check_shard_file((fs::path(dir_) / e.file).string(), e, /*hash=*/true)) {
    shard(i);  // opens it: its attributes must match the manifest
    return;
  }
  ShardReader& r = shard(i);
  std::string found = r.compute_checksum();
  const std::string& want = e.sha256;
  if (found != want)
    throw std::runtime_error(lf::str(r.path(), ": checksum mismatch: the manifest expects ",
                                     want, ", the data hash to ", found,
                                     "; the shard is damaged: delete it, re-run encode and ",
                                     "finalize"));
}

void LatentCache::check_vae(const std::string& configured_hash) const {
  if (manifest_.settings.vae_sha256 != configured_hash)
    throw std::invalid_argument(
        vae_mismatch_message((fs::path(dir_) / kManifestName).string(),
                             manifest_.settings.vae_sha256, configured_hash));
}

LatentRows LatentCache::allocate_rows(int64_t n, bool as_float) const {
  const auto& s = manifest_.settings;
  LatentRows out;
  const at::ScalarType st = as_float ? at::kFloat : stored_type(s.dtype);
  for (const auto& name : latent_dataset_names(s.store, s.flip))
    out.latents[name] = at::empty({n, s.latent_shape[0], s.latent_shape[1], s.latent_shape[2]}, st);
  out.labels = at::empty({n}, at::kLong);
  out.indices = at::empty({n}, at::kLong);
  if (s.text.enabled()) out.tokens = at::empty({n, s.text.context_length}, at::kInt);
  if (s.text.external()) {
    out.text_embedding = at::empty({n, s.text.embedding_length, s.text.embedding_dim}, as_float ? at::kFloat : at::kHalf);
    out.text_mask = at::empty({n, s.text.embedding_length}, at::kByte);
  }
  return out;
}

LatentRows LatentCache::read(const std::vector<int64_t>& indices, bool as_float,
                             int64_t gap_bytes) const {
  LatentRows out = allocate_rows(static_cast<int64_t>(indices.size()), as_float);
  read_into(indices, out, gap_bytes);
  return out;
}

void LatentCache::read_into(const std::vector<int64_t>& indices, LatentRows& out,
                            int64_t gap_bytes) const {
  const auto& s = manifest_.settings;
  const int64_t n = static_cast<int64_t>(indices.size());
  const auto names = latent_dataset_names(s.store, s.flip);
  const int64_t elems = s.latent_shape[0] * s.latent_shape[1] * s.latent_shape[2];
  const bool as_float = out.latents.count(names[0]) &&
                        out.latents.at(names[0]).scalar_type() == at::kFloat;
  const at::ScalarType st = as_float ? at::kFloat : stored_type(s.dtype);
  for (const auto& name : names) {
    auto it = out.latents.find(name);
    TORCH_CHECK(it != out.latents.end() && it->second.is_contiguous() &&
                    it->second.scalar_type() == st && it->second.numel() == n * elems,
                "LatentCache::read_into: output '", name, "' must be a contiguous ", st,
                " tensor of ", n, " x ", elems, " elements");
  }
  TORCH_CHECK(out.labels.numel() == n && out.indices.numel() == n &&
                  out.labels.scalar_type() == at::kLong && out.indices.scalar_type() == at::kLong,
              "LatentCache::read_into: labels and indices must be int64 [", n, "]");
  const TextRowSink text(s.text, out, n);
  const bool convert = as_float && s.dtype == StoreDType::kF16;  // fused gather + f16->f32
  const int64_t lat_row = sample_bytes() / static_cast<int64_t>(names.size());

  for (int64_t v : indices)
    if (v < 0 || v >= size())
      throw std::invalid_argument(lf::str(dir_, ": sample index ", v, " is outside the cache of ",
                                          size(), " samples"));

  // Fast path: every shard touched is memory-mapped; copy (or convert) each row straight from
  // the page cache into its place, in request order. No sort, no staging buffer.
  bool all_mapped = memory_map_;
  for (int64_t q = 0; q < n && all_mapped; ++q)
    all_mapped = mapped(indices[q] / s.shard_size).state.load(std::memory_order_acquire) == 1;
  if (all_mapped) {
    const MappedShard* maps = mapped_.get();
    int64_t* lab = out.labels.data_ptr<int64_t>();
    int64_t* idx = out.indices.data_ptr<int64_t>();
    std::vector<char*> dst;
    for (const auto& name : names) dst.push_back(static_cast<char*>(out.latents[name].data_ptr()));
    const int64_t out_row = convert ? elems * 4 : lat_row;
    constexpr int64_t kAhead = 8;  // rows prefetched ahead: hides memory latency of random rows
    auto prefetch = [&](int64_t q) {
      const int64_t v = indices[q], sh = v / s.shard_size, row = v - sh * s.shard_size;
      for (const char* base : maps[sh].latent)
        for (int64_t off = 0; off < lat_row; off += 64)
          __builtin_prefetch(base + row * lat_row + off);
    };
    for (int64_t q = 0; q < std::min(n, kAhead); ++q) prefetch(q);
    for (int64_t q = 0; q < n; ++q) {
      if (q + kAhead < n) prefetch(q + kAhead);
      const int64_t v = indices[q], sh = v / s.shard_size, row = v - sh * s.shard_size;
      const MappedShard* b = &maps[sh];
      for (size_t d = 0; d < names.size(); ++d) {
        const char* src = b->latent[d] + row * lat_row;
        if (convert)
          half_to_float(reinterpret_cast<const uint16_t*>(src),
                        reinterpret_cast<float*>(dst[d] + q * out_row), elems);
        else
          std::memcpy(dst[d] + q * out_row, src, static_cast<size_t>(lat_row));
      }
      lab[q] = b->labels[row];
      idx[q] = b->index[row];
      if (text.has_tokens()) text.put_tokens(q, b->tokens + row * text.context_length());
      if (text.has_embeddings())
        text.put_embedding(q, b->text_embedding + row * text.embedding_row_bytes(),
                           b->text_mask + row * text.mask_row_bytes());
      if (idx[q] != v)
        throw std::runtime_error(lf::str(shard(sh).path(), ": row ", row, " stores sample index ",
                                         idx[q], ", expected ", v, "; the shard is damaged"));
    }
    return;
  }

  // Fallback: pread()/H5Dread in runs. Sort the requests by sample index, remembering where
  // each goes; nearby rows are read as one run.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return indices[a] < indices[b]; });
  const int64_t max_gap_rows = std::max<int64_t>(0, gap_bytes / std::max<int64_t>(lat_row, 1));
  const int64_t max_run_rows = std::max<int64_t>(1, (int64_t{32} << 20) / lat_row);
  std::vector<int64_t> lab_buf, idx_buf;
  size_t k = 0;
  while (k < order.size()) {
    // One run: consecutive requests in the same shard whose rows are close together.
    const int64_t first = indices[order[k]];
    const int64_t sh = first / s.shard_size;
    const int64_t shard_begin = sh * s.shard_size;
    const int64_t shard_end = shard_begin + manifest_.shards[static_cast<size_t>(sh)].count;
    size_t e = k + 1;
    int64_t last = first;
    while (e < order.size()) {
      int64_t v = indices[order[e]];
      if (v >= shard_end || v - last - 1 > max_gap_rows || v - first + 1 > max_run_rows) break;
      last = v;
      ++e;
    }
    const int64_t row0 = first - shard_begin, rows = last - first + 1;
    ShardReader& r = shard(sh);
    for (const auto& name : names) {
      char* staging = staging_buffer(static_cast<size_t>(rows * lat_row));
      r.read_rows(name, row0, rows, staging);
      char* dst = static_cast<char*>(out.latents[name].data_ptr());
      const int64_t out_row = convert ? elems * 4 : lat_row;
      for (size_t q = k; q < e; ++q) {
        const char* src = staging + (indices[order[q]] - first) * lat_row;
        if (convert)
          half_to_float(reinterpret_cast<const uint16_t*>(src),
                        reinterpret_cast<float*>(dst + order[q] * out_row), elems);
        else
          std::memcpy(dst + order[q] * out_row, src, static_cast<size_t>(lat_row));
      }
    }
    lab_buf.resize(static_cast<size_t>(rows));
    idx_buf.resize(static_cast<size_t>(rows));
    r.read_rows("labels", row0, rows, lab_buf.data());
    r.read_rows("index", row0, rows, idx_buf.data());
    if (text.has_tokens()) {
      const int64_t ctx = text.context_length();
      std::vector<int32_t> tok_buf(static_cast<size_t>(rows * ctx));
      r.read_rows("tokens", row0, rows, tok_buf.data());
      for (size_t q = k; q < e; ++q) text.put_tokens(order[q], tok_buf.data() + (indices[order[q]] - first) * ctx);
    }
    if (text.has_embeddings()) {
      const int64_t eb = text.embedding_row_bytes(), mb = text.mask_row_bytes();
      std::vector<char> emb_buf(static_cast<size_t>(rows * eb));
      std::vector<uint8_t> mask_buf(static_cast<size_t>(rows * mb));
      r.read_rows("text_embedding", row0, rows, emb_buf.data());
      r.read_rows("text_mask", row0, rows, mask_buf.data());
      for (size_t q = k; q < e; ++q) {
        const int64_t at_row = indices[order[q]] - first;
        text.put_embedding(order[q], emb_buf.data() + at_row * eb, mask_buf.data() + at_row * mb);
      }
    }
    int64_t* lab = out.labels.data_ptr<int64_t>();
    int64_t* idx = out.indices.data_ptr<int64_t>();
    for (size_t q = k; q < e; ++q) {
      lab[order[q]] = lab_buf[static_cast<size_t>(indices[order[q]] - first)];
      idx[order[q]] = idx_buf[static_cast<size_t>(indices[order[q]] - first)];
      if (idx[order[q]] != indices[order[q]])
        throw std::runtime_error(lf::str(r.path(), ": row ", indices[order[q]] - shard_begin,
                                         " stores sample index ", idx[order[q]], ", expected ",
                                         indices[order[q]], "; the shard is damaged"));
    }
    k = e;
  }
}

std::vector<std::string> LatentCache::read_captions(const std::vector<int64_t>& indices) const {
  const auto& s = manifest_.settings;
  if (!s.text.enabled()) throw std::invalid_argument(lf::str(dir_, ": the cache holds no captions"));
  std::vector<std::string> out;
  for (int64_t v : indices) {
    if (v < 0 || v >= size())
      throw std::invalid_argument(lf::str(dir_, ": sample index ", v, " is outside the cache of ", size(), " samples"));
    const int64_t sh = v / s.shard_size;
    out.push_back(shard(sh).read_captions(v - sh * s.shard_size, 1).at(0));
  }
  return out;
}

LatentRows LatentCache::read_all(bool as_float) const {
  std::vector<int64_t> all(static_cast<size_t>(size()));
  std::iota(all.begin(), all.end(), 0);
  return read(all, as_float);
}

std::string LatentCache::summary() const {
  const Manifest& m = manifest_;
  const auto& s = m.settings;
  auto shape = [](const std::vector<int64_t>& v) {
    std::vector<std::string> p;
    for (auto d : v) p.push_back(std::to_string(d));
    return join(p, "x");
  };
  auto fmt = [](const std::vector<double>& v) {
    std::vector<std::string> p;
    for (double d : v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.4g", d);
      p.push_back(b);
    }
    return "[" + join(p, ", ") + "]";
  };
  int64_t disk = 0;
  for (const auto& sh : m.shards) {
    std::error_code ec;
    auto sz = fs::file_size(fs::path(dir_) / sh.file, ec);
    if (!ec) disk += static_cast<int64_t>(sz);
  }
  std::ostringstream os;
  os << "cache " << dir_ << " (format " << m.format_version << ", " << m.producer << ")\n";
  os << "  source:       " << s.source.dump() << "\n";
  os << "  samples:      " << s.num_samples << " images " << shape(s.image_shape) << " -> latents "
     << shape(s.latent_shape) << "\n";
  os << "  store:        " << to_string(s.store) << " (" << join(latent_dataset_names(s.store, s.flip), ", ")
     << "), " << to_string(s.dtype) << ", flip " << (s.flip ? "yes" : "no") << "\n";
  os << "  VAE:          sha256 " << s.vae_sha256 << "\n";
  os << "  scale factor: " << m.scale_factor << " (" << m.scale_factor_mode << ")\n";
  os << "  latent stats: mean " << m.latent_mean << ", std " << m.latent_std
     << "; per channel mean " << fmt(m.channel_mean) << ", std " << fmt(m.channel_std) << "\n";
  os << "  classes:      " << m.num_classes();
  if (m.num_classes() > 0) {
    std::vector<std::string> names(s.label_names.begin(),
                                   s.label_names.begin() + std::min<int64_t>(m.num_classes(), 20));
    os << " (" << join(names, ", ") << (m.num_classes() > 20 ? ", ..." : "") << ")";
  } else {
    os << " (unlabelled: unconditional)";
  }
  if (s.text.enabled()) {
    os << "\n  captions:     " << s.text.tokenizer << " tokens, context length " << s.text.context_length << ", "
       << m.captions_truncated << " of " << s.num_samples << " cut to it";
    if (s.num_samples > 0) os << "; sample 0: \"" << excerpt(read_captions({0}).at(0)) << "\"";
    if (s.text.external())
      os << "\n  embeddings:   " << s.text.embedding_length << " x " << s.text.embedding_dim
         << " per caption (f16, external; file sha256 " << s.text.embedding_sha256.substr(0, 12) << "…)";
  }
  os << "\n  shards:       " << m.shards.size() << " of up to " << s.shard_size
     << " samples, " << human_bytes(static_cast<double>(disk)) << " on disk\n";
  os << "  skipped:      " << s.skipped.size() << " inputs\n";
  for (size_t i = 0; i < s.skipped.size() && i < 10; ++i)
    os << "    " << s.skipped[i].value("path", "?") << ": " << s.skipped[i].value("reason", "?")
       << "\n";
  if (s.skipped.size() > 10) os << "    ...\n";
  return os.str();
}

InspectResult inspect_cache(const std::string& dir) {
  auto cache = LatentCache::open(dir, /*verify=*/false);
  InspectResult res;
  std::ostringstream os;
  os << cache->summary();
  os << "verification:\n";
  const Manifest& m = cache->manifest();
  int64_t bad = 0;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const std::string path = (fs::path(dir) / m.shards[i].file).string();
    try {
      const bool hashed = check_shard_file(path, m.shards[i], /*hash=*/true);
      ShardReader r(path);
      check_shard_header(r, m, static_cast<int64_t>(i));
      const std::string found = hashed ? m.shards[i].sha256 : r.compute_checksum();
      if (found != m.shards[i].sha256)
        throw std::runtime_error(lf::str(path, ": checksum mismatch: the manifest expects ",
                                         m.shards[i].sha256, ", the data hash to ", found));
      os << "  " << m.shards[i].file << " ok (" << m.shards[i].count << " samples)\n";
    } catch (const std::exception& e) {
      ++bad;
      os << "  " << m.shards[i].file << " FAILED: " << e.what() << "\n";
    }
  }
  res.ok = bad == 0;
  if (res.ok)
    os << "all " << m.shards.size() << " shards verified\n";
  else
    os << bad << " of " << m.shards.size() << " shards FAILED verification\n";
  res.text = os.str();
  return res;
}

}  // namespace lf::data
