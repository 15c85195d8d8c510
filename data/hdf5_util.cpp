// Checked HDF5 access (see hdf5_util.h).
#include "data/hdf5_util.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::data {

namespace {

herr_t collect_error(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (!out->empty()) *out += "; ";
  *out += err->func_name ? err->func_name : "?";
  *out += ": ";
  *out += err->desc ? err->desc : "(no description)";
  return n < 8 ? 0 : 1;  // the first few frames say enough
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

}  // namespace

void h5_fail(const char* call, const std::string& h5file, const char* src, int line) {
  std::string stack;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &stack);
  H5Eclear2(H5E_DEFAULT);
  throw std::runtime_error(lf::str(h5file, ": HDF5 call ", call, " failed (", src, ":", line,
                               ", host ", host_name(), ")",
                               stack.empty() ? std::string() : ": " + stack));
}

std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex mu;
  return mu;
}

void h5_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
  // The automatic printer is per thread on a thread-safe build: silence this thread too.
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

void H5Id::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = -1;
}

H5Id h5_f16_type(const std::string& h5file) {
  // The recipe of h5py's h5t.pyx (H5PY_FLOAT16): sign bit 15, exponent 10..14 with bias 15,
  // mantissa 0..9.
  H5Id t(LF_H5(H5Tcopy(H5T_IEEE_F32LE), h5file));
  LF_H5(H5Tset_fields(t, 15, 10, 5, 0, 10), h5file);
  LF_H5(H5Tset_size(t, 2), h5file);
  LF_H5(H5Tset_ebias(t, 15), h5file);
  return t;
}

void h5_write_attr(hid_t obj, const std::string& name, const std::string& value,
                   const std::string& h5file) {
  H5Id type(LF_H5(H5Tcopy(H5T_C_S1), h5file));
  LF_H5(H5Tset_size(type, H5T_VARIABLE), h5file);
  LF_H5(H5Tset_cset(type, H5T_CSET_UTF8), h5file);
  H5Id space(LF_H5(H5Screate(H5S_SCALAR), h5file));
  H5Id attr(LF_H5(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), h5file));
  const char* p = value.c_str();
  LF_H5(H5Awrite(attr, type, &p), h5file);
}

void h5_write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& h5file) {
  H5Id space(LF_H5(H5Screate(H5S_SCALAR), h5file));
  H5Id attr(LF_H5(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                  h5file));
  LF_H5(H5Awrite(attr, H5T_NATIVE_INT64, &value), h5file);
}

bool h5_has_attr(hid_t obj, const std::string& name, const std::string& h5file) {
  return LF_H5(H5Aexists(obj, name.c_str()), h5file) > 0;
}

std::string h5_read_attr_string(hid_t obj, const std::string& name, const std::string& h5file,
                                size_t max_len) {
  if (!h5_has_attr(obj, name, h5file))
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is missing"));
  H5Id attr(LF_H5(H5Aopen(obj, name.c_str(), H5P_DEFAULT), h5file));
  H5Id ftype(LF_H5(H5Aget_type(attr), h5file));
  if (LF_H5(H5Tget_class(ftype), h5file) != H5T_STRING)
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is not a string"));
  H5Id space(LF_H5(H5Aget_space(attr), h5file));
  if (LF_H5(H5Sget_simple_extent_npoints(space), h5file) != 1)
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is not a scalar string"));
  if (LF_H5(H5Tis_variable_str(ftype), h5file) > 0) {
    H5Id mtype(LF_H5(H5Tcopy(H5T_C_S1), h5file));
    LF_H5(H5Tset_size(mtype, H5T_VARIABLE), h5file);
    LF_H5(H5Tset_cset(mtype, H5Tget_cset(ftype)), h5file);
    char* p = nullptr;
    LF_H5(H5Aread(attr, mtype, &p), h5file);
    std::string out = p ? std::string(p) : std::string();
    H5free_memory(p);
    if (out.size() > max_len)
      throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is ", out.size(),
                                   " bytes, more than the limit ", max_len));
    return out;
  }
  size_t n = H5Tget_size(ftype);
  if (n == 0 || n > max_len)
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' has size ", n,
                                 ", expected 1..", max_len));
  std::string buf(n, '\0');
  LF_H5(H5Aread(attr, ftype, buf.data()), h5file);
  return std::string(buf.c_str());
}

int64_t h5_read_attr_int(hid_t obj, const std::string& name, const std::string& h5file) {
  if (!h5_has_attr(obj, name, h5file))
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is missing"));
  H5Id attr(LF_H5(H5Aopen(obj, name.c_str(), H5P_DEFAULT), h5file));
  H5Id ftype(LF_H5(H5Aget_type(attr), h5file));
  H5Id space(LF_H5(H5Aget_space(attr), h5file));
  if (LF_H5(H5Tget_class(ftype), h5file) != H5T_INTEGER ||
      LF_H5(H5Sget_simple_extent_npoints(space), h5file) != 1)
    throw std::runtime_error(lf::str(h5file, ": attribute '", name, "' is not a scalar integer"));
  int64_t v = 0;
  LF_H5(H5Aread(attr, H5T_NATIVE_INT64, &v), h5file);
  return v;
}

std::vector<hsize_t> h5_dataset_dims(hid_t file, const std::string& name,
                                     const std::string& h5file) {
  if (LF_H5(H5Lexists(file, name.c_str(), H5P_DEFAULT), h5file) <= 0)
    throw std::runtime_error(lf::str(h5file, ": dataset '", name, "' is missing"));
  H5Id ds(LF_H5(H5Dopen2(file, name.c_str(), H5P_DEFAULT), h5file));
  H5Id space(LF_H5(H5Dget_space(ds), h5file));
  int rank = LF_H5(H5Sget_simple_extent_ndims(space), h5file);
  if (rank < 1 || rank > 8)
    throw std::runtime_error(lf::str(h5file, ": dataset '", name, "' has rank ", rank,
                                 ", expected 1..8"));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  LF_H5(H5Sget_simple_extent_dims(space, dims.data(), nullptr), h5file);
  return dims;
}

void h5_read_rows(hid_t dataset, hid_t mem_type, hsize_t row, hsize_t count,
                  const std::vector<hsize_t>& dims, void* dst, const std::string& h5file) {
  if (count == 0) return;
  H5Id fspace(LF_H5(H5Dget_space(dataset), h5file));
  std::vector<hsize_t> start(dims.size(), 0), cnt = dims;
  start[0] = row;
  cnt[0] = count;
  LF_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr),
        h5file);
  H5Id mspace(LF_H5(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), h5file));
  LF_H5(H5Dread(dataset, mem_type, mspace, fspace, H5P_DEFAULT, dst), h5file);
}

bool is_hdf5_file(const std::string& path) {
  // HDF5 File Format Specification, "Format Signature": \211HDF\r\n\032\n at 0 or a power
  // of two from 512.
  std::ifstream in(path, std::ios::binary);
  char sig[8];
  for (std::streamoff at : {0, 512, 1024, 2048}) {
    if (!in.seekg(at) || !in.read(sig, 8)) return false;
    if (std::memcmp(sig, "\211HDF\r\n\032\n", 8) == 0) return true;
  }
  return false;
}

std::string dims_str(const std::vector<hsize_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

}  // namespace lf::data
