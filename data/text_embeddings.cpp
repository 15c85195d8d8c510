// Caption embeddings from an HDF5 file (see text_embeddings.h).
#include "data/text_embeddings.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "data/cache_format.h"

namespace lf::data {

namespace {

constexpr size_t kMaxKeyBytes = 64u << 10;

const char* class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER: return "integers";
    case H5T_FLOAT: return "floats";
    case H5T_STRING: return "strings";
    case H5T_ENUM: return "an enum (h5py's bool)";
    default: return "another kind of data";
  }
}

}  // namespace

TextEmbeddingFile::TextEmbeddingFile(std::string path, const std::string& key) : path_(std::move(path)) {
  h5_init();
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  auto bad = [&](const std::string& what) { return std::invalid_argument(lf::str(path_, ": ", what)); };
  if (!is_hdf5_file(path_)) throw bad("not an HDF5 file (expected datasets embedding, mask and " + key + ")");
  file_ = H5Id(LF_H5(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path_));
  for (const char* name : {"embedding", "mask"})
    if (H5Lexists(file_, name, H5P_DEFAULT) <= 0) throw bad(lf::str("no dataset '", name, "'"));
  if (H5Lexists(file_, key.c_str(), H5P_DEFAULT) <= 0) throw bad(lf::str("no dataset '", key, "' (strings naming the rows)"));
  const auto e = h5_dataset_dims(file_, "embedding", path_);
  const auto m = h5_dataset_dims(file_, "mask", path_);
  if (e.size() != 3 || e[0] == 0 || e[1] == 0 || e[2] == 0)
    throw bad(lf::str("dataset 'embedding' is ", dims_str(e), ", expected N x L x D (rows, tokens, width), none 0"));
  n_ = static_cast<int64_t>(e[0]);
  length_ = static_cast<int64_t>(e[1]);
  dim_ = static_cast<int64_t>(e[2]);
  if (n_ > kMaxSamples || length_ > kMaxContextLength || dim_ > kMaxEmbeddingDim || length_ * dim_ > kMaxLatentElements)
    throw bad(lf::str("dataset 'embedding' is ", dims_str(e), ": at most ", kMaxContextLength, " tokens of ",
                      kMaxEmbeddingDim, " values (and ", kMaxLatentElements, " in all) per row"));
  if (m.size() != 2 || m[0] != e[0] || m[1] != e[1])
    throw bad(lf::str("dataset 'mask' is ", dims_str(m), ", expected ", e[0], "x", e[1], " (N x L, as 'embedding')"));
  embedding_ = H5Id(LF_H5(H5Dopen2(file_, "embedding", H5P_DEFAULT), path_));
  mask_ = H5Id(LF_H5(H5Dopen2(file_, "mask", H5P_DEFAULT), path_));
  // A plain struct, not structured bindings: LF_H5's lambda cannot capture those in C++17 (clang).
  struct Expected {
    hid_t ds;
    const char* name;
    H5T_class_t want;
  };
  for (const Expected& x : {Expected{hid_t{embedding_}, "embedding", H5T_FLOAT}, Expected{hid_t{mask_}, "mask", H5T_INTEGER}}) {
    H5Id type(LF_H5(H5Dget_type(x.ds), path_));
    const H5T_class_t c = H5Tget_class(type);
    if (c != x.want)
      throw bad(lf::str("dataset '", x.name, "' holds ", class_name(c), ", expected ", class_name(x.want),
                        x.want == H5T_INTEGER ? " (0 or 1; write a bool mask as mask.astype(\"uint8\"))" : ""));
  }
  keys_ = read_strings(key);
  if (static_cast<int64_t>(keys_.size()) != n_)
    throw bad(lf::str("dataset '", key, "' holds ", keys_.size(), " strings, 'embedding' ", n_, " rows"));
}

std::vector<std::string> TextEmbeddingFile::read_strings(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  auto bad = [&](const std::string& what) { return std::invalid_argument(lf::str(path_, ": dataset '", name, "' ", what)); };
  H5Id ds(LF_H5(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), path_));
  H5Id ftype(LF_H5(H5Dget_type(ds), path_));
  if (H5Tget_class(ftype) != H5T_STRING) throw bad(lf::str("holds ", class_name(H5Tget_class(ftype)), ", expected strings"));
  const auto dims = h5_dataset_dims(file_, name, path_);
  if (dims.size() != 1) throw bad(lf::str("is ", dims_str(dims), ", expected a list of N strings"));
  const size_t n = dims[0];
  if (static_cast<int64_t>(n) > kMaxSamples) throw bad(lf::str("holds ", n, " strings, more than ", kMaxSamples));
  std::vector<std::string> out(n);
  H5Id mtype(LF_H5(H5Tcopy(H5T_C_S1), path_));
  LF_H5(H5Tset_cset(mtype, H5Tget_cset(ftype)), path_);
  if (H5Tis_variable_str(ftype) > 0) {
    LF_H5(H5Tset_size(mtype, H5T_VARIABLE), path_);
    std::vector<char*> ptrs(n, nullptr);
    LF_H5(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), path_);
    H5Id space(LF_H5(H5Dget_space(ds), path_));
    std::string error;
    for (size_t i = 0; i < n; ++i) {
      const size_t len = ptrs[i] ? strnlen(ptrs[i], kMaxKeyBytes + 1) : 0;
      if (len > kMaxKeyBytes && error.empty()) error = lf::str("row ", i, " is longer than ", kMaxKeyBytes, " bytes");
      if (ptrs[i]) out[i].assign(ptrs[i], std::min(len, kMaxKeyBytes));
    }
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mtype, space, H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, ptrs.data());
#endif
    if (!error.empty()) throw bad(error);
  } else {
    const size_t width = H5Tget_size(ftype);
    if (width == 0 || width > kMaxKeyBytes) throw bad(lf::str("has strings of ", width, " bytes, expected 1..", kMaxKeyBytes));
    LF_H5(H5Tset_size(mtype, width), path_);
    std::vector<char> buf(n * width);
    LF_H5(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), path_);
    for (size_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * width;
      size_t len = strnlen(s, width);
      while (len > 0 && s[len - 1] == ' ') --len;  // space-padded (Fortran style)
      out[i].assign(s, len);
    }
  }
  return out;
}

std::vector<std::string> TextEmbeddingFile::texts() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  if (H5Lexists(file_, "text", H5P_DEFAULT) <= 0) return {};
  std::vector<std::string> t = read_strings("text");
  if (static_cast<int64_t>(t.size()) != n_)
    throw std::invalid_argument(lf::str(path_, ": dataset 'text' holds ", t.size(), " strings, 'embedding' ", n_, " rows"));
  return t;
}

void TextEmbeddingFile::read(const std::vector<int64_t>& rows, at::Tensor* embeddings, at::Tensor* mask) {
  const int64_t n = static_cast<int64_t>(rows.size());
  at::Tensor e = at::empty({n, length_, dim_}, at::kFloat);
  at::Tensor m64 = at::empty({n, length_}, at::kLong);
  {
    std::lock_guard<std::recursive_mutex> lock(h5_mutex());
    const std::vector<hsize_t> edims{static_cast<hsize_t>(n_), static_cast<hsize_t>(length_), static_cast<hsize_t>(dim_)};
    const std::vector<hsize_t> mdims{static_cast<hsize_t>(n_), static_cast<hsize_t>(length_)};
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = rows[static_cast<size_t>(i)];
      if (r < 0 || r >= n_) throw std::invalid_argument(lf::str(path_, ": row ", r, " outside 0..", n_ - 1));
      h5_read_rows(embedding_, H5T_NATIVE_FLOAT, static_cast<hsize_t>(r), 1, edims, e[i].data_ptr(), path_);
      h5_read_rows(mask_, H5T_NATIVE_INT64, static_cast<hsize_t>(r), 1, mdims, m64[i].data_ptr(), path_);
    }
  }
  // Checked for the whole batch at once; the first bad row is named.
  const at::Tensor bad_value = m64.lt(0).logical_or(m64.gt(1)).any(1);
  const at::Tensor no_token = m64.ne(0).any(1).logical_not();
  const at::Tensor not_finite = at::isfinite(e).flatten(1).all(1).logical_not();
  const at::Tensor any_bad = bad_value.logical_or(no_token).logical_or(not_finite);
  if (n > 0 && any_bad.any().item<bool>()) {
    const int64_t i = any_bad.nonzero()[0][0].item<int64_t>();
    const int64_t r = rows[static_cast<size_t>(i)];
    const std::string where = lf::str(" row ", r, " (", lf::excerpt(keys_[static_cast<size_t>(r)]), "): ");
    if (bad_value[i].item<bool>())
      throw std::runtime_error(lf::str(path_, ": dataset 'mask',", where, "holds a value other than 0 and 1"));
    if (no_token[i].item<bool>())
      throw std::runtime_error(lf::str(path_, ": dataset 'mask',", where, "no token set (every caption needs at least one)"));
    throw std::runtime_error(lf::str(path_, ": dataset 'embedding',", where, "not finite (NaN or infinity)"));
  }
  *embeddings = e;
  *mask = m64.to(at::kByte);
}

std::string TextEmbeddingFile::sha256() const { return sha256_file(path_); }

}  // namespace lf::data
