// Reading shard files: attributes, validated datasets, raw row reads and memory maps,
// checksum recomputation (see shard_file.h and docs/cache.md).
#include "data/shard_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/util/json.h"
#include "core/util/strings.h"

namespace lf::data {

namespace {

bool is_text(const std::string& name) {
  return name == "caption" || name == "tokens" || name == "text_truncated" || name == "text_embedding" ||
         name == "text_mask";
}

bool is_latent(const std::string& name) {
  return name != "labels" && name != "index" && name.rfind("stats_", 0) != 0 && !is_text(name);
}

// The dtype a non-latent dataset has, as its checksum line names it.
const char* fixed_dtype(const std::string& name) {
  if (name == "caption" || name == "text_mask") return "u8";
  if (name == "text_embedding") return "f16";
  if (name == "tokens") return "i32";
  if (name == "stats_sum" || name == "stats_sumsq" || name == "stats_overall") return "f64";
  return "i64";
}

}  // namespace

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
  const std::string where = f + " attribute 'settings'";
  lf::JsonLimits limits;
  limits.max_bytes = static_cast<size_t>(kMaxSettingsBytes);
  limits.error = lf::ErrorKind::kEnvironment;
  header_.settings = CacheSettings::from_json(
      lf::parse_json(h5_read_attr_string(file_, "settings", f, kMaxSettingsBytes), where, limits),
      where);
  const auto& s = header_.settings;
  const int64_t shards = num_shards(s.num_samples, s.shard_size);
  if (header_.shard_index < 0 || header_.shard_index >= shards)
    throw std::runtime_error(lf::str(f, ": attribute 'shard_index' is ", header_.shard_index,
                                     ", expected 0..", shards - 1, " for ", s.num_samples,
                                     " samples in shards of ", s.shard_size));
  // In range now: shard_index * shard_size < num_samples cannot overflow.
  const int64_t want_begin = header_.shard_index * s.shard_size;
  const int64_t want_count = std::min(s.shard_size, s.num_samples - want_begin);
  if (header_.begin != want_begin || header_.count != want_count)
    throw std::runtime_error(lf::str(f, ": shard ", header_.shard_index, " holds ",
                                     header_.count, " samples from ", header_.begin,
                                     ", expected ", want_count, " from ", want_begin));
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
  const H5T_class_t cls = LF_H5(H5Tget_class(d.type), f);
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
  } else if (is_text(name)) {
    const bool embedding = name == "text_embedding" || name == "text_mask";
    if (!s.text.enabled() || (embedding && !s.text.external()))
      throw std::runtime_error(lf::str(f, ": dataset '", name, "' asked of a shard without ",
                                       embedding ? "caption embeddings" : "captions"));
    const hsize_t len = static_cast<hsize_t>(s.text.embedding_length);
    want = name == "caption"          ? std::vector<hsize_t>{n, static_cast<hsize_t>(s.text.caption_bytes)}
           : name == "tokens"         ? std::vector<hsize_t>{n, static_cast<hsize_t>(s.text.context_length)}
           : name == "text_embedding" ? std::vector<hsize_t>{n, len, static_cast<hsize_t>(s.text.embedding_dim)}
           : name == "text_mask"      ? std::vector<hsize_t>{n, len}
                                      : std::vector<hsize_t>{1};
    want_elem = name == "caption" || name == "text_mask" ? 1 : name == "tokens" ? 4 : name == "text_embedding" ? 2 : 8;
    if (name == "text_embedding") want_cls = H5T_FLOAT;
  } else {
    want = {name == "stats_overall" ? 3 : c};
    if (name != "stats_count") want_cls = H5T_FLOAT;
  }
  if (d.dims != want || elem != want_elem || cls != want_cls ||
      LF_H5(H5Tget_order(d.type), f) != H5T_ORDER_LE)
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
  if (LF_H5(H5Pget_layout(dcpl), f) == H5D_CONTIGUOUS && LF_H5(H5Pget_nfilters(dcpl), f) == 0 &&
      off != HADDR_UNDEF &&
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
  for (const auto& name : shard_dataset_names(s)) {
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
    std::string dtype = is_latent(name) ? to_string(s.dtype) : fixed_dtype(name);
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

int64_t ShardReader::read_truncated() {
  int64_t v = 0;
  read_rows("text_truncated", 0, 1, &v);
  if (v < 0 || v > header_.count)
    throw std::runtime_error(lf::str(path_, ": dataset 'text_truncated' is ", v, ", expected 0..",
                                     header_.count));
  return v;
}

std::vector<std::string> ShardReader::read_captions(int64_t row, int64_t n) {
  const int64_t width = header_.settings.text.caption_bytes;
  std::vector<char> buf(static_cast<size_t>(std::max<int64_t>(n, 0) * width));
  read_rows("caption", row, n, buf.data());
  std::vector<std::string> out;
  for (int64_t r = 0; r < n; ++r) {
    const char* p = buf.data() + r * width;
    out.emplace_back(p, strnlen(p, static_cast<size_t>(width)));
  }
  return out;
}

}  // namespace lf::data
