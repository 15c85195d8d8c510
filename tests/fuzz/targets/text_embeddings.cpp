// Fuzz target of the caption-embedding file reader (data/text_embeddings.h): which datasets an
// HDF5 file has (embedding, mask, file_name), their ranks, shapes and types (floats, integers,
// h5py's bool enum, variable- or fixed-length strings, numbers where strings belong), repeated
// or odd names, mask values other than 0/1 and rows with no token. Like the shard target, the
// input drives a generator that writes the file through the HDF5 API (docs/fuzzing.md).
#include <hdf5.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "data/hdf5_util.h"
#include "data/text_embeddings.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

namespace {

using data::H5Id;

void check(herr_t r, const char* what) {
  if (r < 0) throw std::logic_error(std::string("fuzz text_embeddings generator: HDF5 call failed: ") + what);
}

// Dimensions near `want` (always `want` for a zero byte).
std::vector<hsize_t> near(ByteReader& in, std::vector<hsize_t> dims) {
  switch (in.byte() % 8) {
    case 7: dims.push_back(1); break;
    case 6: dims.pop_back(); break;
    case 5: dims[0] = static_cast<hsize_t>(in.in_range(0, 7)); break;
    case 4: dims.back() = static_cast<hsize_t>(in.in_range(0, 5)); break;
    default: break;
  }
  if (dims.empty()) dims.push_back(1);
  return dims;
}

// A numeric dataset of a type drawn from the input (`good` for a zero byte), filled with input
// bytes; `bits01` keeps every byte 0 or 1 (a valid mask: 1, a token, for a zero byte).
void numeric(ByteReader& in, hid_t file, const char* name, const std::vector<hsize_t>& dims, hid_t good,
             bool bits01) {
  H5Id boolean(H5Tenum_create(H5T_NATIVE_INT8));  // h5py's bool
  const int8_t f = 0, t = 1;
  check(H5Tenum_insert(boolean, "FALSE", &f), "enum");
  check(H5Tenum_insert(boolean, "TRUE", &t), "enum");
  H5Id half = data::h5_f16_type("gen");
  const hid_t types[] = {good, H5T_IEEE_F32LE, H5T_IEEE_F64BE, H5T_STD_I64LE, H5T_STD_U8LE, H5T_STD_I32BE, boolean, half};
  const int pick = in.byte() % 8;
  const hid_t type = in.flag() ? good : types[pick];
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  H5Id ds(H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!ds.valid()) throw std::logic_error(std::string("fuzz text_embeddings generator: cannot create ") + name);
  std::vector<unsigned char> bytes(n * H5Tget_size(type));
  for (auto& b : bytes) b = bits01 ? 1 - (in.byte() & 1) : in.byte();
  if (type == half || H5Tget_class(type) == H5T_FLOAT)  // finite values mostly: clear the exponent's top bit
    for (size_t i = 0; i < bytes.size(); ++i)
      if (in.byte() % 4 != 3 && (i + 1) % H5Tget_size(type) == 0) bytes[i] &= 0x3f;
  if (n > 0) check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), name);
}

// The strings naming the rows: variable-length (h5py's string_dtype()), fixed-length, numbers
// instead, or missing. Names come from the input, so they may repeat.
void strings(ByteReader& in, hid_t file, const char* name, hsize_t n) {
  const int kind = in.byte() % 8;
  if (kind == 7) return;
  std::vector<hsize_t> dims = {kind == 6 ? n + 1 : n};
  if (kind == 5) dims.push_back(2);
  hsize_t total = 1;
  for (hsize_t d : dims) total *= d;
  std::vector<std::string> v;
  for (hsize_t i = 0; i < total; ++i) v.push_back(in.flag() ? in.text(12) : "img/" + std::to_string(i) + ".png");
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  if (kind == 4) {  // integers where strings belong
    H5Id ds(H5Dcreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    std::vector<int64_t> ints(total, 7);
    if (total > 0) check(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ints.data()), name);
    return;
  }
  H5Id type(H5Tcopy(H5T_C_S1));
  if (kind == 3 || kind == 2) {  // fixed-length, null- or space-padded
    const size_t width = static_cast<size_t>(in.in_range(1, 16));
    check(H5Tset_size(type, width), "size");
    if (kind == 2) check(H5Tset_strpad(type, H5T_STR_SPACEPAD), "strpad");
    std::vector<char> buf(total * width, kind == 2 ? ' ' : '\0');
    for (hsize_t i = 0; i < total; ++i) std::copy_n(v[i].begin(), std::min(width, v[i].size()), buf.begin() + i * width);
    H5Id ds(H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (total > 0) check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), name);
    return;
  }
  check(H5Tset_size(type, H5T_VARIABLE), "size");
  check(H5Tset_cset(type, H5T_CSET_UTF8), "cset");
  std::vector<const char*> ptrs;
  for (const auto& s : v) ptrs.push_back(s.c_str());
  H5Id ds(H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (total > 0) check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), name);
}

}  // namespace

void run_text_embeddings(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  ByteReader in(data, size);
  data::h5_init();
  const hsize_t n = static_cast<hsize_t>(in.in_range(1, 5)), len = static_cast<hsize_t>(in.in_range(1, 4)),
                dim = static_cast<hsize_t>(in.in_range(1, 4));
  {
    std::lock_guard<std::recursive_mutex> lock(data::h5_mutex());
    H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    if (!file.valid()) throw std::logic_error("fuzz text_embeddings generator: cannot create " + path);
    if (in.byte() % 16 != 15) numeric(in, file, "embedding", near(in, {n, len, dim}), H5T_IEEE_F32LE, false);
    if (in.byte() % 16 != 15) numeric(in, file, "mask", near(in, {n, len}), H5T_STD_U8LE, in.byte() % 4 != 3);
    strings(in, file, "file_name", n);
    if (in.flag()) strings(in, file, "text", n);
  }
  // What encode and sample do with such a file: open it, read the names and every row.
  data::TextEmbeddingFile f(path, "file_name");
  f.texts();
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < f.size(); ++r) rows.push_back(f.size() - 1 - r);
  at::Tensor e, m;
  f.read(rows, &e, &m);
}

}  // namespace lf::fuzz
