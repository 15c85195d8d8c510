// Fuzz target of the shard reader's handling of what an HDF5 file contains: attributes (kind,
// value, the settings JSON), datasets (present or not, rank, shape, dtype, byte order, layout).
// The input is not the file: it drives a generator that writes a valid HDF5 file through the
// HDF5 API, so libhdf5 never parses fuzzed bytes (docs/fuzzing.md) and every run explores our
// code on files libhdf5 itself considers sound.
#include <hdf5.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "data/cache_format.h"
#include "data/hdf5_util.h"
#include "data/shard_file.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

namespace {

using data::H5Id;

constexpr hid_t kHalf = -1;  // stands for the IEEE half type, made per file

void check(herr_t r, const char* what) {
  if (r < 0) throw std::logic_error(std::string("fuzz shard generator: HDF5 call failed: ") + what);
}

// An integer attribute: usually the value the reader wants (always for a zero byte), sometimes
// near it, any int64, a string, an array of two, or missing.
void int_attr(ByteReader& in, hid_t file, const char* name, int64_t good) {
  const int kind = in.byte() % 8;
  if (kind == 7) return;  // missing
  if (kind == 6) {
    data::h5_write_attr(file, name, in.text(16), "gen");
    return;
  }
  if (kind == 5) {
    const hsize_t two = 2;
    H5Id space(H5Screate_simple(1, &two, nullptr));
    H5Id attr(H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT));
    const int64_t v[2] = {good, in.any_int64()};
    check(H5Awrite(attr, H5T_NATIVE_INT64, v), name);
    return;
  }
  const int64_t v = kind == 4 ? in.any_int64() : kind == 3 ? good + in.in_range(-2, 2) : good;
  data::h5_write_attr(file, name, v, "gen");
}

// A string attribute: the wanted one (always for a zero byte), another string, a fixed-length
// string, an integer, or missing.
void string_attr(ByteReader& in, hid_t file, const char* name, const std::string& good) {
  const int kind = in.byte() % 6;
  if (kind == 5) return;
  if (kind == 4) {
    data::h5_write_attr(file, name, int64_t{7}, "gen");
    return;
  }
  std::string v = kind == 3 ? in.text(96) : good;
  if (kind == 2) {  // fixed-length (h5py writes these for numpy bytes)
    H5Id type(H5Tcopy(H5T_C_S1));
    check(H5Tset_size(type, std::max<size_t>(1, v.size())), name);
    H5Id space(H5Screate(H5S_SCALAR));
    H5Id attr(H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    v.resize(std::max<size_t>(1, v.size()));
    check(H5Awrite(attr, type, v.data()), name);
    return;
  }
  data::h5_write_attr(file, name, v, "gen");
}

// The settings JSON: mostly well-formed with small fields drawn from the input, sometimes
// whatever bytes are left.
std::string settings_json(ByteReader& in, data::CacheSettings* s) {
  s->store = in.flag() ? data::StoreKind::kMoments : data::StoreKind::kSample;
  s->dtype = in.flag() ? data::StoreDType::kF16 : data::StoreDType::kF32;
  s->flip = in.flag();
  s->shard_size = in.in_range(1, 8);
  s->num_samples = in.in_range(1, 24);
  s->image_shape = {1, 8, 8};
  s->latent_shape = {in.in_range(1, 3), in.in_range(1, 3), in.in_range(1, 3)};
  s->source = nlohmann::json::object();
  s->vae_sha256 = std::string(64, 'a');
  if (in.byte() % 4 == 3) {  // captioned
    s->text.tokenizer = "bytes-v1";
    s->text.context_length = in.in_range(3, 6);
    s->text.caption_bytes = data::TextSettings::caption_bytes_for(s->text.context_length);
  }
  nlohmann::json j = s->to_json();
  switch (in.byte() % 11) {
    case 10: if (s->text.enabled()) j["text"]["context_length"] = in.any_int64(); break;
    case 9: return in.text(255);  // raw text
    case 8: j[in.text(12)] = in.any_int64(); break;
    case 7: j.erase(in.flag() ? "store" : "latent_shape"); break;
    case 6: j["latent_shape"] = {in.any_int64(), 1, 1}; break;
    case 5: j["num_samples"] = in.any_int64(); break;
    case 4: j["dtype"] = in.text(4); break;
    default: break;  // well-formed (always for a zero byte)
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // keys may be any bytes
}

struct Dtype {
  hid_t type;
  size_t bytes;
};

// One dataset with a shape near the wanted one and a type drawn from the input, filled with
// input bytes; contiguous or chunked (the reader falls back to H5Dread for the latter).
void dataset(ByteReader& in, hid_t file, const std::string& name, std::vector<hsize_t> want,
             hid_t want_type, size_t want_bytes) {
  if (in.byte() % 16 == 15) return;  // missing
  std::vector<hsize_t> dims = want;  // always for a zero byte
  switch (in.byte() % 8) {
    case 7: dims.push_back(1); break;
    case 6: if (dims.size() > 1) dims.pop_back(); break;
    case 5: dims[0] = static_cast<hsize_t>(in.in_range(0, 9)); break;
    case 4: dims.back() = static_cast<hsize_t>(in.in_range(1, 5)); break;
    default: break;
  }
  const Dtype types[] = {{want_type, want_bytes}, {H5T_IEEE_F32LE, 4}, {H5T_IEEE_F64LE, 8},
                         {H5T_STD_I64LE, 8},     {H5T_STD_I32LE, 4},  {H5T_STD_I64BE, 8},
                         {H5T_STD_U8LE, 1},      {H5T_IEEE_F32BE, 4}};
  const Dtype t = in.byte() % 2 ? types[0] : types[in.byte() % 8];
  H5Id half;
  hid_t type = t.type;
  if (type == kHalf) {  // the half type is made per file
    half = data::h5_f16_type("gen");
    type = half;
  }
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (in.byte() % 4 == 3 && n > 0) {
    std::vector<hsize_t> chunk(dims.size(), 1);
    check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "chunk");
  }
  H5Id ds(H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (!ds.valid()) throw std::logic_error("fuzz shard generator: cannot create dataset " + name);
  std::vector<unsigned char> bytes(n * t.bytes);
  for (auto& b : bytes) b = in.byte();
  if (n > 0) check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), name.c_str());
}

}  // namespace

void run_shard(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  ByteReader in(data, size);
  data::h5_init();
  {
    std::lock_guard<std::recursive_mutex> lock(data::h5_mutex());
    H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    if (!file.valid()) throw std::logic_error("fuzz shard generator: cannot create " + path);
    data::CacheSettings s;
    const std::string settings = settings_json(in, &s);
    const int64_t shards = data::num_shards(s.num_samples, s.shard_size);
    const int64_t index = in.in_range(0, std::max<int64_t>(0, shards - 1));
    const int64_t begin = index * s.shard_size;
    const int64_t count = std::min(s.shard_size, s.num_samples - begin);
    int_attr(in, file, "format_version", data::kCacheFormatVersion);
    string_attr(in, file, "producer", "fuzz");
    int_attr(in, file, "shard_index", index);
    int_attr(in, file, "begin", begin);
    int_attr(in, file, "count", count);
    string_attr(in, file, "sha256", std::string(64, '0'));
    string_attr(in, file, "settings", settings);
    const hsize_t n = static_cast<hsize_t>(std::max<int64_t>(count, 0));
    const hsize_t c = static_cast<hsize_t>(s.latent_shape[0]);
    const hid_t lat_type = s.dtype == data::StoreDType::kF16 ? kHalf : H5T_IEEE_F32LE;
    const size_t lat_bytes = s.dtype == data::StoreDType::kF16 ? 2 : 4;
    for (const auto& name : data::shard_dataset_names(s)) {
      if (name == "caption")
        dataset(in, file, name, {n, static_cast<hsize_t>(s.text.caption_bytes)}, H5T_STD_U8LE, 1);
      else if (name == "tokens")
        dataset(in, file, name, {n, static_cast<hsize_t>(s.text.context_length)}, H5T_STD_I32LE, 4);
      else if (name == "labels" || name == "index" || name == "text_truncated")
        dataset(in, file, name, {name == "text_truncated" ? 1 : n}, H5T_STD_I64LE, 8);
      else if (name == "stats_count")
        dataset(in, file, name, {c}, H5T_STD_I64LE, 8);
      else if (name.rfind("stats_", 0) == 0)
        dataset(in, file, name, {name == "stats_overall" ? 3 : c}, H5T_IEEE_F64LE, 8);
      else
        dataset(in, file, name, {n, c, static_cast<hsize_t>(s.latent_shape[1]),
                                 static_cast<hsize_t>(s.latent_shape[2])}, lat_type, lat_bytes);
    }
  }
  // What the program does with a shard: open (attributes, settings), checksum, statistics,
  // rows through pread/H5Dread and through the memory map.
  data::ShardReader r(path);
  r.compute_checksum();
  r.read_stats();
  const auto& s = r.header().settings;
  for (const auto& name : data::latent_dataset_names(s.store, s.flip)) {
    const int64_t rows = std::min<int64_t>(r.header().count, 3);
    std::vector<char> buf(static_cast<size_t>(rows * r.row_bytes(name)));
    r.read_rows(name, 0, rows, buf.data());
    r.mapped_rows(name);
  }
  if (s.text.enabled()) {
    r.read_truncated();
    r.read_captions(0, std::min<int64_t>(r.header().count, 3));
  }
}

}  // namespace lf::fuzz
