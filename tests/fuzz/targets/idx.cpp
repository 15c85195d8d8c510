// Fuzz targets of the IDX reader: the input as a plain IDX file, and compressed into a .gz so
// that the fuzzer explores what is inflated (zlib's own parsing is not ours to fuzz).
#include <zlib.h>

#include <filesystem>
#include <stdexcept>

#include "data/idx_source.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

namespace {

// read_idx in the ways the program calls it: any shape, truncation allowed (skip_bad), and as
// the image file of an IDX source next to a labels file of the count its header declares.
void read_all_ways(const std::string& path, const std::string& dir, const uint8_t* data, size_t size) {
  std::string truncation;
  data::IdxArray a = data::read_idx(path, /*allow_truncated=*/true, &truncation);
  int64_t record = 1;
  for (size_t d = 1; d < a.dims.size(); ++d) record *= a.dims[d];  // bounded by read_idx
  if (a.records > a.dims[0] || static_cast<int64_t>(a.data.size()) != a.records * record)
    throw std::logic_error("read_idx: data size is not complete records x record size");
  // An IDX source: labels for the declared number of images (when small), resolution 32.
  int64_t n = size >= 8 ? (int64_t{data[4]} << 24 | data[5] << 16 | data[6] << 8 | data[7]) : 1;
  if (n < 1 || n > 4096) n = 1;
  std::string labels = {0, 0, 8, 1, char(n >> 24), char(n >> 16), char(n >> 8), char(n)};
  labels.append(static_cast<size_t>(n), '\1');
  write_file(dir + "/train-labels-idx1-ubyte", labels.data(), labels.size());
  data::SourceOptions o;
  o.path = dir;
  o.kind = "idx";
  o.skip_bad = true;
  auto source = data::open_source(o);
  source->get(0, std::min<int64_t>(source->size(), 4));
  data::read_idx(path);  // strict: throws for a truncated file
}

}  // namespace

void run_idx(const uint8_t* data, size_t size, const std::string& path, const std::string& dir) {
  write_file(path, data, size);
  read_all_ways(path, dir, data, size);
}

void run_idx_gz(const uint8_t* data, size_t size, const std::string& path, const std::string& dir) {
  gzFile f = gzopen(path.c_str(), "wb1");
  if (!f) throw std::runtime_error(path + ": cannot write the fuzz input");
  if (size > 0) gzwrite(f, data, static_cast<unsigned>(size));
  gzclose(f);
  read_all_ways(path, dir, data, size);
}

}  // namespace lf::fuzz
