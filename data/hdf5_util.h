// Thin, checked access to the HDF5 C API for the latent cache: the LF_H5 check macro (every
// HDF5 call goes through it, adding file:line, host and the HDF5 file being accessed), an
// owning handle, attribute helpers, the IEEE half type and hyperslab row I/O.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace lf::data {

// Throws std::runtime_error "<h5file>: HDF5 <call> failed (<src>:<line>, host <h>): <HDF5
// error stack>". Called by LF_H5 when a call returns a negative value.
[[noreturn]] void h5_fail(const char* call, const std::string& h5file, const char* src, int line);

// Runs `call` (an HDF5 C call returning herr_t or hid_t) and throws when it fails, naming
// `h5file` (the path being read or written). Evaluates to the call's result.
#define LF_H5(call, h5file)                                                            \
  ([&]() {                                                                             \
    auto lf_h5_result_ = (call);                                                       \
    if (lf_h5_result_ < 0) ::lf::data::h5_fail(#call, (h5file), __FILE__, __LINE__); \
    return lf_h5_result_;                                                              \
  }())

// Serialises this project's HDF5 calls: a non-thread-safe HDF5 build (common on clusters)
// must never see two threads at once; on a thread-safe build the library's own global lock
// would serialise them anyway, so this costs nothing extra.
std::recursive_mutex& h5_mutex();

// Silences HDF5's automatic error printing (errors are reported through LF_H5 instead).
// Idempotent; called by every entry point that opens files.
void h5_init();

// Owns one HDF5 identifier of any kind and closes it with the matching H5*close.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: used directly in C calls
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = -1;
};

// IEEE 754 binary16, laid out as h5py's float16 (so numpy reads it as float16).
H5Id h5_f16_type(const std::string& h5file);

// Attributes on an object (the file's root group for shards).
void h5_write_attr(hid_t obj, const std::string& name, const std::string& value,
                   const std::string& h5file);
void h5_write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& h5file);
bool h5_has_attr(hid_t obj, const std::string& name, const std::string& h5file);
// Throw std::runtime_error naming the file and attribute when it is missing or of another
// kind. Strings are bounded by `max_len` bytes (the file is untrusted).
std::string h5_read_attr_string(hid_t obj, const std::string& name, const std::string& h5file,
                                size_t max_len = 64u << 20);
int64_t h5_read_attr_int(hid_t obj, const std::string& name, const std::string& h5file);

// Whether `path` starts with the HDF5 signature (at offset 0, 512, 1024 or 2048: the
// superblock may follow a user block). Reads the bytes itself; no HDF5 call parses the file.
bool is_hdf5_file(const std::string& path);

// Dimensions as "AxBxC" for messages and dataset descriptions.
std::string dims_str(const std::vector<hsize_t>& dims);

// The dimensions of dataset `name` (throws naming it when missing).
std::vector<hsize_t> h5_dataset_dims(hid_t file, const std::string& name,
                                     const std::string& h5file);

// Reads rows [row, row+count) of a dataset whose first dimension is the row, in the dataset's
// own file type (no conversion), into `dst` (count * row_bytes bytes). `mem_type` must be the
// type the data were written with.
void h5_read_rows(hid_t dataset, hid_t mem_type, hsize_t row, hsize_t count,
                  const std::vector<hsize_t>& dims, void* dst, const std::string& h5file);

}  // namespace lf::data
