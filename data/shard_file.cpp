// Shard files: writer, reader, checksum (see shard_file.h and docs/cache.md).
#include "data/shard_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/util/fs.h"
#include "core/util/strings.h"

namespace lf::data {

namespace {

std::string dims_str(const std::vector<hsize_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

bool is_latent(const std::string& name) {
  return name != "labels" && name != "index" && name.rfind("stats_", 0) != 0;
}

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
                            : "i64";
    dataset_lines_[name] = lf::str(name, " ", dtype, " ", dims_str(dims), " ");
  };
  const hsize_t n = static_cast<hsize_t>(count);
  hid_t latent_type = settings.dtype == StoreDType::kF16 ? f16_.get() : H5T_IEEE_F32LE;
  for (const auto& name : latent_dataset_names(settings.store, settings.flip))
    create(name, latent_type,
           {n, channels, static_cast<hsize_t>(ls.at(1)), static_cast<hsize_t>(ls.at(2))});
  create("labels", H5T_STD_I64LE, {n});
  create("index", H5T_STD_I64LE, {n});
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
                        const at::Tensor& labels, const at::Tensor& indices) {
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
  written_ = count_;
  Sha256 all;
  for (const auto& name : shard_dataset_names(settings_.store, settings_.flip))
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

// ---- ShardReader ----------------------------------------------------------------------

ShardReader::ShardReader(std::string path) : path_(std::move(path)) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  const std::string& f = path_;
  if (LF_H5(H5Fis_hdf5(f.c_str()), f) <= 0)
    throw std::runtime_error(lf::str(f, ": not an HDF5 file"));
  file_ = H5Id(LF_H5(H5Fopen(f.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), f));
  fd_ = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error(lf::str(f, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd_, &st) == 0 && st.st_size > 0) {
    void* m = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd_, 0);
    if (m != MAP_FAILED) {  // otherwise reads fall back to pread
      map_ = static_cast<const char*>(m);
      map_size_ = static_cast<size_t>(st.st_size);
    }
  }
  header_.format_version = h5_read_attr_int(file_, "format_version", f);
  if (header_.format_version != kCacheFormatVersion)
    throw std::runtime_error(lf::str(f, ": cache format version ", header_.format_version,
                                 ", this build reads version ", kCacheFormatVersion,
                                 "; re-run encode with this version"));
  header_.producer = h5_read_attr_string(file_, "producer", f, 1024);
  header_.shard_index = h5_read_attr_int(file_, "shard_index", f);
  header_.begin = h5_read_attr_int(file_, "begin", f);
  header_.count = h5_read_attr_int(file_, "count", f);
  header_.sha256 = h5_read_attr_string(file_, "sha256", f, 128);
  std::string settings = h5_read_attr_string(file_, "settings", f);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(settings);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(lf::str(f, ": attribute 'settings' is not valid JSON (", e.what(), ")"));
  }
  header_.settings = CacheSettings::from_json(j, f + " attribute 'settings'");
  const auto& s = header_.settings;
  const int64_t shards = num_shards(s.num_samples, s.shard_size);
  const int64_t want_begin = header_.shard_index * s.shard_size;
  const int64_t want_count = std::min(s.shard_size, s.num_samples - want_begin);
  if (header_.shard_index < 0 || header_.shard_index >= shards || header_.begin != want_begin ||
      header_.count != want_count)
    throw std::runtime_error(lf::str(f, ": shard ", header_.shard_index, " holds [", header_.begin,
                                 ", ", header_.begin + header_.count, "), expected shard 0..",
                                 shards - 1, " holding [", want_begin, ", ",
                                 want_begin + want_count, ")"));
}

ShardReader::~ShardReader() {
  if (map_) ::munmap(const_cast<char*>(map_), map_size_);
  if (fd_ >= 0) ::close(fd_);
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  datasets_.clear();
  file_.reset();
}

ShardReader::Dataset& ShardReader::dataset(const std::string& name) {
  auto it = datasets_.find(name);
  if (it != datasets_.end()) return it->second;
  const std::string& f = path_;
  const auto& s = header_.settings;
  Dataset d;
  d.dims = h5_dataset_dims(file_, name, f);
  d.id = H5Id(LF_H5(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), f));
  d.type = H5Id(LF_H5(H5Dget_type(d.id), f));
  const size_t elem = H5Tget_size(d.type);
  const H5T_class_t cls = H5Tget_class(d.type);
  std::vector<hsize_t> want;
  size_t want_elem = 8;
  H5T_class_t want_cls = H5T_INTEGER;
  const hsize_t n = static_cast<hsize_t>(header_.count);
  const hsize_t c = static_cast<hsize_t>(s.latent_shape[0]);
  if (is_latent(name)) {
    want = {n, c, static_cast<hsize_t>(s.latent_shape[1]), static_cast<hsize_t>(s.latent_shape[2])};
    want_elem = static_cast<size_t>(dtype_bytes(s.dtype));
    want_cls = H5T_FLOAT;
  } else if (name == "labels" || name == "index") {
    want = {n};
  } else {
    want = {name == "stats_overall" ? 3 : c};
    if (name != "stats_count") want_cls = H5T_FLOAT;
  }
  if (d.dims != want || elem != want_elem || cls != want_cls ||
      H5Tget_order(d.type) != H5T_ORDER_LE)
    throw std::runtime_error(lf::str(f, ": dataset '", name, "' is ", dims_str(d.dims), " of ", elem,
                                 "-byte ", cls == H5T_FLOAT ? "floats" : "values",
                                 ", expected little-endian ", dims_str(want), " of ", want_elem,
                                 "-byte ", want_cls == H5T_FLOAT ? "floats" : "integers"));
  d.row_bytes = static_cast<int64_t>(elem);
  for (size_t i = 1; i < d.dims.size(); ++i) d.row_bytes *= static_cast<int64_t>(d.dims[i]);
  // Raw reads are valid for contiguous storage without filters, whose bytes are the dataset's
  // elements in row-major order (HDF5 File Format Specification, "Data Layout Message").
  H5Id dcpl(LF_H5(H5Dget_create_plist(d.id), f));
  const haddr_t off = H5Dget_offset(d.id);
  if (H5Pget_layout(dcpl) == H5D_CONTIGUOUS && H5Pget_nfilters(dcpl) == 0 && off != HADDR_UNDEF &&
      H5Dget_storage_size(d.id) == static_cast<hsize_t>(d.row_bytes) * d.dims[0])
    d.offset = static_cast<int64_t>(off);
  return datasets_.emplace(name, std::move(d)).first->second;
}

int64_t ShardReader::row_bytes(const std::string& name) const {
  auto* self = const_cast<ShardReader*>(this);
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  return self->dataset(name).row_bytes;
}

void ShardReader::read_rows(const std::string& name, int64_t row, int64_t n, void* dst) {
  std::unique_lock<std::recursive_mutex> lock(h5_mutex());
  Dataset& d = dataset(name);  // map nodes are stable: usable after the lock is released
  if (row < 0 || n < 0 || static_cast<hsize_t>(row + n) > d.dims[0])
    throw std::invalid_argument(lf::str(path_, ": rows [", row, ", ", row + n, ") of dataset '",
                                        name, "' with ", d.dims[0], " rows"));
  if (d.offset < 0) {
    h5_read_rows(d.id, d.type, static_cast<hsize_t>(row), static_cast<hsize_t>(n), d.dims, dst,
                 path_);
    return;
  }
  lock.unlock();
  char* p = static_cast<char*>(dst);
  size_t left = static_cast<size_t>(n * d.row_bytes);
  off_t at = static_cast<off_t>(d.offset + row * d.row_bytes);
  while (left > 0) {
    ssize_t got = ::pread(fd_, p, left, at);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      throw std::runtime_error(lf::str(path_, ": reading rows ", row, "..", row + n - 1,
                                       " of dataset '", name, "' at byte ", at, " failed: ",
                                       got < 0 ? std::strerror(errno)
                                               : "unexpected end of file (truncated shard)"));
    p += got;
    at += got;
    left -= static_cast<size_t>(got);
  }
}

const char* ShardReader::mapped_rows(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  Dataset& d = dataset(name);
  if (!map_ || d.offset < 0) return nullptr;
  const uint64_t end = static_cast<uint64_t>(d.offset) + d.dims[0] * d.row_bytes;
  if (end > map_size_)
    throw std::runtime_error(lf::str(path_, ": dataset '", name, "' ends at byte ", end,
                                     " but the file has ", map_size_, " (truncated shard)"));
  return map_ + d.offset;
}

int64_t ShardReader::data_offset(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  haddr_t off = H5Dget_offset(dataset(name).id);
  if (off == HADDR_UNDEF)
    throw std::runtime_error(lf::str(path_, ": dataset '", name, "' has no contiguous data offset"));
  return static_cast<int64_t>(off);
}

std::string ShardReader::compute_checksum() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  const auto& s = header_.settings;
  Sha256 all;
  std::vector<char> buf;
  for (const auto& name : shard_dataset_names(s.store, s.flip)) {
    Dataset& d = dataset(name);
    const int64_t rows = static_cast<int64_t>(d.dims[0]);
    const int64_t step = std::max<int64_t>(1, (8 << 20) / d.row_bytes);
    Sha256 h;
    buf.resize(static_cast<size_t>(std::min(rows, step) * d.row_bytes));
    for (int64_t r = 0; r < rows; r += step) {
      int64_t n = std::min(step, rows - r);
      read_rows(name, r, n, buf.data());
      h.update(buf.data(), static_cast<size_t>(n * d.row_bytes));
    }
    std::string dtype = is_latent(name) ? to_string(s.dtype)
                        : (name == "stats_sum" || name == "stats_sumsq" ||
                           name == "stats_overall")
                            ? "f64"
                            : "i64";
    all.update(checksum_line(name, dtype, d.dims, h.hex()));
  }
  return all.hex();
}

LatentStats ShardReader::read_stats() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  const int64_t c = header_.settings.latent_shape[0];
  LatentStats st;
  st.count.resize(c);
  st.sum.resize(c);
  st.sumsq.resize(c);
  read_rows("stats_count", 0, c, st.count.data());
  read_rows("stats_sum", 0, c, st.sum.data());
  read_rows("stats_sumsq", 0, c, st.sumsq.data());
  return st;
}

}  // namespace lf::data
