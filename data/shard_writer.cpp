// Writing shard files: deterministic HDF5 layout, per-dataset hashes, latent statistics
// (see shard_file.h and docs/cache.md).
#include "data/shard_file.h"

#include <cstring>
#include <stdexcept>

#include "core/util/tokenizer.h"

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace lf::data {

namespace {

// Property lists that make identical content give identical files: no object timestamps
// (HDF5 stores creation/modification times by default), a fixed file-format version, and
// contiguous data allocated at creation without fill writes.
H5Id make_fcpl(const std::string& f) {
  H5Id p(LF_H5(H5Pcreate(H5P_FILE_CREATE), f));
  LF_H5(H5Pset_obj_track_times(p, false), f);
  return p;
}
H5Id make_fapl(const std::string& f) {
  H5Id p(LF_H5(H5Pcreate(H5P_FILE_ACCESS), f));
  // 1.8 format: readable by every HDF5 since 1.8, and large attributes go to dense storage.
  LF_H5(H5Pset_libver_bounds(p, H5F_LIBVER_V18, H5F_LIBVER_V18), f);
  return p;
}
H5Id make_dcpl(const std::string& f) {
  H5Id p(LF_H5(H5Pcreate(H5P_DATASET_CREATE), f));
  LF_H5(H5Pset_obj_track_times(p, false), f);
  LF_H5(H5Pset_layout(p, H5D_CONTIGUOUS), f);
  LF_H5(H5Pset_alloc_time(p, H5D_ALLOC_TIME_EARLY), f);
  LF_H5(H5Pset_fill_time(p, H5D_FILL_TIME_NEVER), f);
  return p;
}

}  // namespace

std::string checksum_line(const std::string& name, const std::string& dtype,
                          const std::vector<hsize_t>& dims, const std::string& sha) {
  return lf::str(name, " ", dtype, " ", dims_str(dims), " ", sha, "\n");
}

// ---- LatentStats ----------------------------------------------------------------------

void LatentStats::add(const LatentStats& o) {
  if (count.empty()) {
    *this = o;
    return;
  }
  if (o.count.size() != count.size())
    throw std::runtime_error(lf::str("latent statistics with ", o.count.size(), " channels cannot be ",
                                 "added to ones with ", count.size()));
  for (size_t c = 0; c < count.size(); ++c) {
    count[c] += o.count[c];
    sum[c] += o.sum[c];
    sumsq[c] += o.sumsq[c];
  }
}
int64_t LatentStats::total_count() const {
  int64_t n = 0;
  for (auto v : count) n += v;
  return n;
}
double LatentStats::total_sum() const {
  double s = 0;
  for (auto v : sum) s += v;
  return s;
}
double LatentStats::total_sumsq() const {
  double s = 0;
  for (auto v : sumsq) s += v;
  return s;
}

// ---- ShardWriter ----------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, const CacheSettings& settings, int64_t shard_index,
                         int64_t begin, int64_t count)
    : path_(std::move(path)),
      settings_(settings),
      shard_index_(shard_index),
      begin_(begin),
      count_(count) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  const std::string& f = path_;
  H5Id fcpl = make_fcpl(f), fapl = make_fapl(f);
  file_ = H5Id(LF_H5(H5Fcreate(f.c_str(), H5F_ACC_TRUNC, fcpl, fapl), f));
  f16_ = h5_f16_type(f);
  h5_write_attr(file_, "format_version", kCacheFormatVersion, f);
  h5_write_attr(file_, "producer", std::string("LatentForge ") + LF_VERSION, f);
  h5_write_attr(file_, "shard_index", shard_index, f);
  h5_write_attr(file_, "begin", begin, f);
  h5_write_attr(file_, "count", count, f);
  h5_write_attr(file_, "vae_sha256", settings.vae_sha256, f);
  h5_write_attr(file_, "settings", settings.to_json().dump(), f);

  H5Id dcpl = make_dcpl(f);
  const auto& ls = settings.latent_shape;
  const hsize_t channels = static_cast<hsize_t>(ls.at(0));
  auto create = [&](const std::string& name, hid_t type, std::vector<hsize_t> dims) {
    H5Id space(LF_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), f));
    datasets_[name] = H5Id(LF_H5(
        H5Dcreate2(file_, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), f));
    hashes_[name] = std::make_unique<Sha256>();
    std::string dtype = type == f16_.get() ? "f16"
                        : H5Tget_class(type) == H5T_FLOAT
                            ? (H5Tget_size(type) == 8 ? "f64" : "f32")
                            : H5Tget_size(type) == 8 ? "i64"
                            : H5Tget_size(type) == 4 ? "i32"
                                                     : "u8";
    dataset_lines_[name] = lf::str(name, " ", dtype, " ", dims_str(dims), " ");
  };
  const hsize_t n = static_cast<hsize_t>(count);
  hid_t latent_type = settings.dtype == StoreDType::kF16 ? f16_.get() : H5T_IEEE_F32LE;
  for (const auto& name : latent_dataset_names(settings.store, settings.flip))
    create(name, latent_type,
           {n, channels, static_cast<hsize_t>(ls.at(1)), static_cast<hsize_t>(ls.at(2))});
  create("labels", H5T_STD_I64LE, {n});
  create("index", H5T_STD_I64LE, {n});
  if (settings.text.enabled()) {
    create("caption", H5T_STD_U8LE, {n, static_cast<hsize_t>(settings.text.caption_bytes)});
    create("tokens", H5T_STD_I32LE, {n, static_cast<hsize_t>(settings.text.context_length)});
    create("text_truncated", H5T_STD_I64LE, {1});
  }
  if (settings.text.external()) {
    const hsize_t len = static_cast<hsize_t>(settings.text.embedding_length);
    create("text_embedding", f16_.get(), {n, len, static_cast<hsize_t>(settings.text.embedding_dim)});
    create("text_mask", H5T_STD_U8LE, {n, len});
  }
  create("stats_count", H5T_STD_I64LE, {channels});
  create("stats_sum", H5T_IEEE_F64LE, {channels});
  create("stats_sumsq", H5T_IEEE_F64LE, {channels});
  create("stats_overall", H5T_IEEE_F64LE, {3});
  stats_.count.assign(channels, 0);
  stats_.sum.assign(channels, 0.0);
  stats_.sumsq.assign(channels, 0.0);
}

ShardWriter::~ShardWriter() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  datasets_.clear();
  f16_.reset();
  file_.reset();
}

void ShardWriter::write_rows(const std::string& name, hid_t type, const void* data, int64_t n,
                             int64_t row_elems, int64_t elem_bytes) {
  const std::string& f = path_;
  hid_t ds = datasets_.at(name);
  H5Id fspace(LF_H5(H5Dget_space(ds), f));
  int rank = LF_H5(H5Sget_simple_extent_ndims(fspace), f);
  std::vector<hsize_t> dims(static_cast<size_t>(rank)), start(dims.size(), 0);
  LF_H5(H5Sget_simple_extent_dims(fspace, dims.data(), nullptr), f);
  start[0] = static_cast<hsize_t>(written_);
  dims[0] = static_cast<hsize_t>(n);
  LF_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, dims.data(), nullptr),
        f);
  H5Id mspace(LF_H5(H5Screate_simple(rank, dims.data(), nullptr), f));
  LF_H5(H5Dwrite(ds, type, mspace, fspace, H5P_DEFAULT, data), f);
  hashes_.at(name)->update(data, static_cast<size_t>(n * row_elems * elem_bytes));
}

void ShardWriter::write(const std::map<std::string, at::Tensor>& latents,
                        const at::Tensor& labels, const at::Tensor& indices,
                        const std::vector<std::string>& captions, const at::Tensor& text_embedding,
                        const at::Tensor& text_mask) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  if (finished_) throw std::logic_error(lf::str(path_, ": write() after finish()"));
  const int64_t n = labels.size(0);
  const auto& ls = settings_.latent_shape;
  if (written_ + n > count_)
    throw std::invalid_argument(lf::str(path_, ": writing rows ", written_, "..", written_ + n,
                                    " of a shard of ", count_));
  if (indices.numel() != n || labels.dim() != 1)
    throw std::invalid_argument(lf::str(path_, ": labels [", labels.numel(), "] and indices [",
                                    indices.numel(), "] must both be [n]"));
  const bool f16 = settings_.dtype == StoreDType::kF16;
  std::map<std::string, at::Tensor> stored;  // in the storage dtype
  for (const auto& name : latent_dataset_names(settings_.store, settings_.flip)) {
    auto it = latents.find(name);
    if (it == latents.end() || !it->second.defined())
      throw std::invalid_argument(lf::str(path_, ": the encoder gave no '", name, "' tensor"));
    const at::Tensor& t = it->second;
    if (t.dim() != 4 || t.size(0) != n || t.size(1) != ls[0] || t.size(2) != ls[1] ||
        t.size(3) != ls[2])
      throw std::invalid_argument(lf::str(path_, ": '", name, "' has shape ", t.sizes(),
                                      ", expected [", n, ", ", ls[0], ", ", ls[1], ", ", ls[2],
                                      "]"));
    at::Tensor s = t.detach().to(at::kCPU, f16 ? at::kHalf : at::kFloat).contiguous();
    if (!at::isfinite(s).all().item<bool>())
      throw std::runtime_error(lf::str(path_, ": '", name, "' holds non-finite values (inf/NaN) ",
                                   "for samples ", begin_ + written_, "..",
                                   begin_ + written_ + n - 1,
                                   f16 ? "; values beyond +-65504 overflow f16, try "
                                         "cache.dtype = f32"
                                       : ""));
    stored[name] = s;
    write_rows(name, f16 ? f16_.get() : H5T_IEEE_F32LE, s.data_ptr(), n, s[0].numel(),
               f16 ? 2 : 4);
  }
  at::Tensor lab = labels.to(at::kCPU, at::kLong).contiguous();
  at::Tensor idx = indices.to(at::kCPU, at::kLong).contiguous();
  write_rows("labels", H5T_NATIVE_INT64, lab.data_ptr(), n, 1, 8);
  write_rows("index", H5T_NATIVE_INT64, idx.data_ptr(), n, 1, 8);
  const TextSettings& text = settings_.text;
  if (text.enabled() != !captions.empty() && n > 0)
    throw std::invalid_argument(lf::str(path_, ": ", captions.size(), " captions for ", n, " rows of ",
                                        text.enabled() ? "a captioned" : "an uncaptioned", " cache"));
  if (text.enabled()) {
    if (static_cast<int64_t>(captions.size()) != n)
      throw std::invalid_argument(lf::str(path_, ": ", captions.size(), " captions for ", n, " rows"));
    const lf::ByteTokenizer tokenizer(text.context_length);
    const lf::ByteTokenizer::Batch tok = tokenizer.encode(captions);
    truncated_ += tok.truncated;
    std::vector<uint8_t> bytes(static_cast<size_t>(n * text.caption_bytes), 0);
    for (int64_t r = 0; r < n; ++r) {
      const std::string cut = lf::utf8_prefix(captions[static_cast<size_t>(r)], text.caption_bytes);
      std::memcpy(bytes.data() + r * text.caption_bytes, cut.data(), cut.size());
    }
    write_rows("caption", H5T_NATIVE_UINT8, bytes.data(), n, text.caption_bytes, 1);
    at::Tensor t = tok.tokens.to(at::kInt).contiguous();
    write_rows("tokens", H5T_NATIVE_INT32, t.data_ptr(), n, text.context_length, 4);
  }
  if (text.external() != text_embedding.defined())
    throw std::invalid_argument(lf::str(path_, ": caption embeddings ", text_embedding.defined() ? "given to" : "missing for",
                                        " a cache ", text.external() ? "with" : "without", " them"));
  if (text.external()) {
    const int64_t len = text.embedding_length, dim = text.embedding_dim;
    if (text_embedding.sizes() != at::IntArrayRef{n, len, dim} || !text_mask.defined() ||
        text_mask.sizes() != at::IntArrayRef{n, len})
      throw std::invalid_argument(lf::str(path_, ": caption embeddings ", text_embedding.sizes(), " and mask ",
                                          text_mask.defined() ? lf::str(text_mask.sizes()) : "(none)", ", expected [", n,
                                          ", ", len, ", ", dim, "] and [", n, ", ", len, "]"));
    at::Tensor e = text_embedding.to(at::kCPU, at::kHalf).contiguous();
    if (!at::isfinite(e).all().item<bool>())
      throw std::runtime_error(lf::str(path_, ": caption embeddings of samples ", begin_ + written_, "..",
                                       begin_ + written_ + n - 1, " are not finite in f16 (beyond +-65504?)"));
    at::Tensor m = text_mask.to(at::kCPU).ne(0).to(at::kByte).contiguous();
    write_rows("text_embedding", f16_.get(), e.data_ptr(), n, len * dim, 2);
    write_rows("text_mask", H5T_NATIVE_UINT8, m.data_ptr(), n, len, 1);
  }

  // Statistics of the latent the trainer will see (see LatentStats), from stored values.
  at::Tensor sum, sumsq;
  if (settings_.store == StoreKind::kMoments) {
    at::Tensor m = stored["mean"].to(at::kDouble), lv = stored["logvar"].to(at::kDouble);
    sum = m.sum({0, 2, 3});
    sumsq = (m * m + lv.exp()).sum({0, 2, 3});
  } else {
    at::Tensor z = stored["latent"].to(at::kDouble);
    sum = z.sum({0, 2, 3});
    sumsq = (z * z).sum({0, 2, 3});
  }
  for (int64_t c = 0; c < ls[0]; ++c) {
    stats_.count[c] += n * ls[1] * ls[2];
    stats_.sum[c] += sum[c].item<double>();
    stats_.sumsq[c] += sumsq[c].item<double>();
  }
  written_ += n;
}

std::string ShardWriter::finish() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  if (written_ != count_)
    throw std::logic_error(lf::str(path_, ": finish() after ", written_, " of ", count_, " rows"));
  const int64_t c = static_cast<int64_t>(stats_.count.size());
  std::vector<double> overall = {static_cast<double>(stats_.total_count()), stats_.total_sum(),
                                 stats_.total_sumsq()};
  written_ = 0;  // the stats datasets are written from row 0
  write_rows("stats_count", H5T_NATIVE_INT64, stats_.count.data(), c, 1, 8);
  write_rows("stats_sum", H5T_NATIVE_DOUBLE, stats_.sum.data(), c, 1, 8);
  write_rows("stats_sumsq", H5T_NATIVE_DOUBLE, stats_.sumsq.data(), c, 1, 8);
  write_rows("stats_overall", H5T_NATIVE_DOUBLE, overall.data(), 3, 1, 8);
  if (settings_.text.enabled()) write_rows("text_truncated", H5T_NATIVE_INT64, &truncated_, 1, 1, 8);
  written_ = count_;
  Sha256 all;
  for (const auto& name : shard_dataset_names(settings_))
    all.update(dataset_lines_.at(name) + hashes_.at(name)->hex() + "\n");
  std::string sha = all.hex();
  h5_write_attr(file_, "sha256", sha, path_);
  datasets_.clear();
  LF_H5(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_);
  f16_.reset();
  file_.reset();
  fsync_path(path_);
  finished_ = true;
  return sha;
}

}  // namespace lf::data
