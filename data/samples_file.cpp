// samples.h5 reading and writing through HDF5 (see samples_file.h).
#include "data/samples_file.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "core/util/checked.h"
#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/strings.h"
#include "data/hdf5_util.h"

namespace lf::data {

static_assert(std::is_same<hid_t, int64_t>::value, "SamplesWriter stores an hid_t as int64_t");

namespace {

constexpr int64_t kSamplesFormatVersion = 1;
constexpr uint64_t kMaxImageBytes = uint64_t{1} << 36;

void create_dataset(hid_t file, const char* name, hid_t type, const std::vector<hsize_t>& dims, const std::string& path) {
  H5Id space(LF_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), path));
  H5Id dcpl(LF_H5(H5Pcreate(H5P_DATASET_CREATE), path));
  LF_H5(H5Pset_obj_track_times(dcpl, 0), path);
  H5Id ds(LF_H5(H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), path));
}

// Writes rows [row, row + dims[0]) of dataset `name` (full extent `full`) from `data`.
void write_rows(hid_t file, const char* name, hid_t type, const std::vector<hsize_t>& full, hsize_t row,
                hsize_t count, const void* data, const std::string& path) {
  if (count == 0) return;
  H5Id ds(LF_H5(H5Dopen2(file, name, H5P_DEFAULT), path));
  H5Id fspace(LF_H5(H5Dget_space(ds), path));
  std::vector<hsize_t> start(full.size(), 0), cnt = full;
  start[0] = row;
  cnt[0] = count;
  LF_H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr), path);
  H5Id mspace(LF_H5(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), path));
  LF_H5(H5Dwrite(ds, type, mspace, fspace, H5P_DEFAULT, data), path);
}

struct OpenSamples {
  H5Id file;
  std::vector<hsize_t> dims;  // of images
};

// Opens and checks a samples file: 4-d images of bounded size, labels [N].
OpenSamples open_samples(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::invalid_argument(str(path, ": no such samples file"));
  h5_init();
  OpenSamples o;
  o.file = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!o.file.valid()) throw std::invalid_argument(str(path, ": not an HDF5 file"));
  o.dims = h5_dataset_dims(o.file, "images", path);
  const auto& dims = o.dims;
  if (dims.size() != 4) throw std::invalid_argument(str(path, ": images has ", dims.size(), " dimensions, expected 4 (N,C,H,W)"));
  uint64_t bytes = 0;
  if (!bounded_product(std::vector<uint64_t>(dims.begin(), dims.end()), kMaxImageBytes, &bytes))
    throw std::invalid_argument(str(path, ": dataset images is ", dims_str(dims), ", more than the limit of ",
                                    kMaxImageBytes, " bytes"));
  auto ldims = h5_dataset_dims(o.file, "labels", path);
  if (ldims.size() != 1 || ldims[0] != dims[0]) throw std::invalid_argument(str(path, ": labels must be [", dims[0], "]"));
  return o;
}

// The label_names attribute: a bounded JSON list of strings (a crafted file may hold anything).
std::vector<std::string> read_label_names(hid_t file, const std::string& path) {
  if (!h5_has_attr(file, "label_names", path)) return {};
  const std::string where = path + " attribute label_names";
  const nlohmann::json names = parse_json(h5_read_attr_string(file, "label_names", path, 1 << 20), where);
  if (!names.is_array()) throw std::invalid_argument(str(where, ": is not a JSON list of strings"));
  std::vector<std::string> out;
  for (const auto& n : names) {
    if (!n.is_string()) throw std::invalid_argument(str(where, ": is not a JSON list of strings"));
    out.push_back(n.get<std::string>());
  }
  return out;
}

}  // namespace

SamplesWriter::SamplesWriter(std::string path, int64_t num, std::vector<int64_t> image_shape,
                             const std::vector<std::string>& label_names,
                             const std::map<std::string, std::string>& attributes)
    : path_(std::move(path)), num_(num), image_shape_(std::move(image_shape)) {
  TORCH_CHECK(num_ >= 0 && image_shape_.size() == 3, "samples: ", path_, ": expected N >= 0 and a (C, H, W) shape");
  h5_init();
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  tmp_ = temp_sibling(path_);
  file_ = LF_H5(H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), tmp_);
  try {
    std::vector<hsize_t> dims = {static_cast<hsize_t>(num_)};
    for (auto d : image_shape_) dims.push_back(static_cast<hsize_t>(d));
    create_dataset(file_, "images", H5T_NATIVE_UINT8, dims, tmp_);
    create_dataset(file_, "labels", H5T_NATIVE_INT64, {static_cast<hsize_t>(num_)}, tmp_);
    h5_write_attr(file_, "format_version", kSamplesFormatVersion, tmp_);
    h5_write_attr(file_, "producer", std::string("latentforge ") + LF_VERSION, tmp_);
    h5_write_attr(file_, "label_names", nlohmann::json(label_names).dump(), tmp_);
    for (const auto& [name, value] : attributes) h5_write_attr(file_, name, value, tmp_);
  } catch (...) {
    H5Fclose(file_);
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
    throw;
  }
}

SamplesWriter::~SamplesWriter() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  if (file_ >= 0) H5Fclose(file_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

void SamplesWriter::write(int64_t begin, const at::Tensor& images_u8, const at::Tensor& labels) {
  TORCH_CHECK(images_u8.dim() == 4 && images_u8.scalar_type() == at::kByte, "samples: images must be uint8 [n,C,H,W]");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images_u8.size(0), "samples: labels must be [n]");
  TORCH_CHECK(std::vector<int64_t>(images_u8.sizes().begin() + 1, images_u8.sizes().end()) == image_shape_,
              "samples: ", path_, ": images of shape ", images_u8.sizes(), " do not match the file's (C, H, W)");
  const int64_t n = images_u8.size(0);
  TORCH_CHECK(begin >= 0 && begin + n <= num_, "samples: ", path_, ": rows [", begin, ", ", begin + n,
              ") outside [0, ", num_, ")");
  at::Tensor img = images_u8.cpu().contiguous();
  at::Tensor lab = labels.to(at::kCPU, at::kLong).contiguous();
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  std::vector<hsize_t> dims = {static_cast<hsize_t>(num_)};
  for (auto d : image_shape_) dims.push_back(static_cast<hsize_t>(d));
  write_rows(file_, "images", H5T_NATIVE_UINT8, dims, begin, n, img.data_ptr(), tmp_);
  write_rows(file_, "labels", H5T_NATIVE_INT64, {static_cast<hsize_t>(num_)}, begin, n, lab.data_ptr(), tmp_);
  written_ += n;
}

void SamplesWriter::commit(const char* crash_point_name) {
  if (written_ != num_)
    throw std::logic_error(str("samples: ", path_, ": ", written_, " of ", num_, " rows written before commit"));
  {
    std::lock_guard<std::recursive_mutex> lock(h5_mutex());
    LF_H5(H5Fflush(file_, H5F_SCOPE_GLOBAL), tmp_);
    LF_H5(H5Fclose(file_), tmp_);
    file_ = -1;
  }
  fsync_path(tmp_);
  if (crash_point_name) crash_point(crash_point_name);
  std::filesystem::rename(tmp_, path_);
  committed_ = true;
  auto dir = std::filesystem::path(path_).parent_path();
  fsync_path(dir.empty() ? "." : dir.string());
}

void write_samples_file(const std::string& path, const at::Tensor& images_u8, const at::Tensor& labels,
                        const std::vector<std::string>& label_names) {
  TORCH_CHECK(images_u8.dim() == 4 && images_u8.scalar_type() == at::kByte, "samples: images must be uint8 [N,C,H,W]");
  SamplesWriter w(path, images_u8.size(0), {images_u8.size(1), images_u8.size(2), images_u8.size(3)}, label_names);
  w.write(0, images_u8, labels);
  w.commit();
}

SamplesInfo read_samples_info(const std::string& path) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  OpenSamples o = open_samples(path);
  SamplesInfo info;
  info.num = static_cast<int64_t>(o.dims[0]);
  info.image_shape = {int64_t(o.dims[1]), int64_t(o.dims[2]), int64_t(o.dims[3])};
  info.label_names = read_label_names(o.file, path);
  return info;
}

SamplesFile read_samples_range(const std::string& path, int64_t begin, int64_t count) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  OpenSamples o = open_samples(path);
  const auto& dims = o.dims;
  if (begin < 0 || count < 0 || begin + count > static_cast<int64_t>(dims[0]))
    throw std::invalid_argument(str(path, ": rows [", begin, ", ", begin + count, ") requested, the file holds ", dims[0]));
  SamplesFile out;
  out.images = at::empty({count, int64_t(dims[1]), int64_t(dims[2]), int64_t(dims[3])}, at::kByte);
  out.labels = at::empty({count}, at::kLong);
  H5Id img(LF_H5(H5Dopen2(o.file, "images", H5P_DEFAULT), path));
  h5_read_rows(img, H5T_NATIVE_UINT8, begin, count, dims, out.images.data_ptr(), path);
  H5Id lab(LF_H5(H5Dopen2(o.file, "labels", H5P_DEFAULT), path));
  h5_read_rows(lab, H5T_NATIVE_INT64, begin, count, {dims[0]}, out.labels.data_ptr(), path);
  out.label_names = read_label_names(o.file, path);
  return out;
}

SamplesFile read_samples_file(const std::string& path) {
  return read_samples_range(path, 0, read_samples_info(path).num);
}

std::string read_samples_attribute(const std::string& path, const std::string& name) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  OpenSamples o = open_samples(path);
  if (!h5_has_attr(o.file, name, path)) return "";
  return h5_read_attr_string(o.file, name, path, 1 << 20);
}

}  // namespace lf::data
