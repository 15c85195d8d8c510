// IDX files (the MNIST / Fashion-MNIST format, gzipped or plain): parsing with bounded sizes,
// and the Source built from a directory's train-* or t10k-* image and label files.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "data/source.h"

namespace lf::data {

// One IDX array of unsigned bytes (type code 0x08): dims as in the header, data row-major.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
  int64_t records = 0;  // complete records read (dims[0] unless truncated and allowed)
};

// What a caller expects of an IDX file, checked from the header before any data are read.
struct IdxExpect {
  int ndim = 0;                    // 0: any of 1..4
  int64_t max_side = std::numeric_limits<int64_t>::max();  // bound on every dimension but the first
  std::string max_side_reason;     // for the message ("data.image_size ...")
  int64_t records = 0;             // > 0: the first dimension must equal it...
  std::string records_source;      // ...as the file named here holds
  std::string what = "records";    // "images", "labels"
};

// Reads an IDX file, gzipped or not (zlib reads plain files transparently). Throws
// std::runtime_error "<path>: <reason>" for an empty file, a bad magic number, a type other
// than unsigned byte, implausible dimensions (each bounded, their product computed without
// overflow), a header that disagrees with `expect`, declares more data than the file can hold
// (a gzip file inflates at most 1032:1) or than half this machine's memory, or a truncated
// file. Never inflates more than the header declares. With `allow_truncated`, a truncated file
// instead yields its complete records and `*truncation` describes what was lost.
IdxArray read_idx(const std::string& path, bool allow_truncated = false,
                  std::string* truncation = nullptr, const IdxExpect& expect = {});

// Whether `dir` holds IDX image files (train-images-idx3-ubyte[.gz] or the t10k ones).
bool idx_files_present(const std::string& dir);

// The path of `<prefix>-<what>-idx<N>-ubyte[.gz]` (or the `.idx<N>-ubyte` spelling) in `dir`;
// throws std::invalid_argument naming the directory and the names tried when absent.
std::string find_idx_file(const std::string& dir, const std::string& prefix,
                          const std::string& what, int ndim);

// Label names for IDX data. dataset: "fashion-mnist" (the ten Fashion-MNIST classes),
// "mnist" (digits "0".."9"), "generic" ("0".."max_label"), or "auto": fashion-mnist when the
// path contains "fashion", mnist when it contains "mnist", generic otherwise.
std::vector<std::string> idx_label_names(const std::string& dataset, const std::string& path,
                                         int64_t max_label);
std::string resolve_idx_dataset(const std::string& dataset, const std::string& path);

// The IDX source of options.path/options.split: images uint8 in memory, centre-padded with
// the background value 0 (-1 after scaling) to options.resolution (28x28 -> 32x32, so a VAE
// with f = 4 gives 8x8 latents), grey or replicated to RGB when channels = 3.
std::unique_ptr<Source> open_idx_source(const SourceOptions& options);

}  // namespace lf::data
