// samples.h5 reading and writing through HDF5 (see samples_file.h).
#include "data/samples_file.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/util/checked.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/strings.h"
#include "data/hdf5_util.h"

namespace lf::data {

namespace {

constexpr int64_t kSamplesFormatVersion = 1;
constexpr uint64_t kMaxImageBytes = uint64_t{1} << 36;

void write_dataset(hid_t file, const char* name, hid_t type, const std::vector<hsize_t>& dims, const void* data,
                   const std::string& path) {
  H5Id space(LF_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), path));
  H5Id dcpl(LF_H5(H5Pcreate(H5P_DATASET_CREATE), path));
  LF_H5(H5Pset_obj_track_times(dcpl, 0), path);
  H5Id ds(LF_H5(H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), path));
  LF_H5(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path);
}

}  // namespace

void write_samples_file(const std::string& path, const at::Tensor& images_u8, const at::Tensor& labels,
                        const std::vector<std::string>& label_names) {
  TORCH_CHECK(images_u8.dim() == 4 && images_u8.scalar_type() == at::kByte, "samples: images must be uint8 [N,C,H,W]");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images_u8.size(0), "samples: labels must be [N]");
  h5_init();
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  at::Tensor img = images_u8.contiguous().cpu();
  at::Tensor lab = labels.to(at::kLong).contiguous().cpu();
  const std::string tmp = temp_sibling(path);
  {
    H5Id fcpl(LF_H5(H5Pcreate(H5P_FILE_CREATE), tmp));
    H5Id file(LF_H5(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), tmp));
    std::vector<hsize_t> dims;
    for (auto d : img.sizes()) dims.push_back(static_cast<hsize_t>(d));
    write_dataset(file, "images", H5T_NATIVE_UINT8, dims, img.data_ptr(), tmp);
    write_dataset(file, "labels", H5T_NATIVE_INT64, {static_cast<hsize_t>(lab.size(0))}, lab.data_ptr(), tmp);
    h5_write_attr(file, "format_version", kSamplesFormatVersion, tmp);
    h5_write_attr(file, "producer", std::string("latentforge ") + LF_VERSION, tmp);
    h5_write_attr(file, "label_names", nlohmann::json(label_names).dump(), tmp);
    LF_H5(H5Fflush(file, H5F_SCOPE_GLOBAL), tmp);
  }
  fsync_path(tmp);
  std::filesystem::rename(tmp, path);
  fsync_path(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path().string());
}

SamplesFile read_samples_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::invalid_argument(str(path, ": no such samples file"));
  h5_init();
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) throw std::invalid_argument(str(path, ": not an HDF5 file"));
  auto dims = h5_dataset_dims(file, "images", path);
  if (dims.size() != 4) throw std::invalid_argument(str(path, ": images has ", dims.size(), " dimensions, expected 4 (N,C,H,W)"));
  uint64_t bytes = 0;
  if (!bounded_product(std::vector<uint64_t>(dims.begin(), dims.end()), kMaxImageBytes, &bytes))
    throw std::invalid_argument(str(path, ": dataset images is ", dims_str(dims), ", more than the limit of ",
                                    kMaxImageBytes, " bytes"));
  auto ldims = h5_dataset_dims(file, "labels", path);
  if (ldims.size() != 1 || ldims[0] != dims[0])
    throw std::invalid_argument(str(path, ": labels must be [", dims[0], "]"));
  SamplesFile out;
  out.images = at::empty({int64_t(dims[0]), int64_t(dims[1]), int64_t(dims[2]), int64_t(dims[3])}, at::kByte);
  out.labels = at::empty({int64_t(dims[0])}, at::kLong);
  H5Id img(LF_H5(H5Dopen2(file, "images", H5P_DEFAULT), path));
  LF_H5(H5Dread(img, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.images.data_ptr()), path);
  H5Id lab(LF_H5(H5Dopen2(file, "labels", H5P_DEFAULT), path));
  LF_H5(H5Dread(lab, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.labels.data_ptr()), path);
  if (h5_has_attr(file, "label_names", path)) {
    const std::string where = path + " attribute label_names";
    const nlohmann::json names = parse_json(h5_read_attr_string(file, "label_names", path, 1 << 20), where);
    if (!names.is_array()) throw std::invalid_argument(str(where, ": is not a JSON list of strings"));
    for (const auto& n : names) {
      if (!n.is_string()) throw std::invalid_argument(str(where, ": is not a JSON list of strings"));
      out.label_names.push_back(n.get<std::string>());
    }
  }
  return out;
}

}  // namespace lf::data
