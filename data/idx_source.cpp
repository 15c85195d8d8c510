// IDX parsing and the IDX source (see idx_source.h). Format: Y. LeCun's MNIST page — a 4-byte
// magic (0, 0, type code, number of dimensions), big-endian uint32 dimensions, then the data.
#include "data/idx_source.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "core/util/checked.h"
#include "core/util/strings.h"

namespace lf::data {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxDim = 1'000'000'000;      // any single dimension
constexpr int64_t kMaxBytes = int64_t{1} << 36;  // 64 GiB of pixel data
// zlib's documented bound: deflate compresses at most 1032:1 (zlib FAQ, "maximum compression").
constexpr uint64_t kMaxDeflateRatio = 1032;

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

// "28x28": the dimensions of one record.
std::string record_dims(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 1; i < dims.size(); ++i) s += (i > 1 ? "x" : "") + std::to_string(dims[i]);
  return s;
}

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_) throw std::runtime_error(lf::str(path, ": cannot open: ", std::strerror(errno)));
    gzbuffer(f_, 1 << 18);
  }
  // Whether the file is gzip data (after the first read; zlib passes plain files through).
  bool compressed() const { return gzdirect(f_) == 0; }
  ~GzFile() { gzclose(f_); }
  // Reads up to n bytes; returns how many (fewer only at the end of the data).
  size_t read(void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
      int r = gzread(f_, static_cast<char*>(dst) + got, chunk);
      if (r < 0) {
        int err = 0;
        const char* msg = gzerror(f_, &err);
        throw std::runtime_error(lf::str(path_, ": corrupt or unreadable (zlib: ", msg, ")"));
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }

 private:
  std::string path_;
  gzFile f_;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

IdxArray read_idx(const std::string& path, bool allow_truncated, std::string* truncation,
                  const IdxExpect& expect) {
  std::error_code ec;
  const uint64_t file_bytes = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(lf::str(path, ": cannot read: ", ec.message()));
  GzFile f(path);
  unsigned char magic[4];
  size_t got = f.read(magic, 4);
  if (got == 0) throw std::runtime_error(lf::str(path, ": empty file (expected an IDX header)"));
  if (got < 4) throw std::runtime_error(lf::str(path, ": truncated IDX header (", got, " of 4 bytes)"));
  if (magic[0] != 0 || magic[1] != 0 || magic[3] < 1 || magic[3] > 4)
    throw std::runtime_error(lf::str(path, ": not an IDX file (magic bytes ", int(magic[0]), " ",
                                 int(magic[1]), " ", int(magic[2]), " ", int(magic[3]),
                                 "; expected 0 0 8 <1..4>)"));
  if (magic[2] != 0x08)
    throw std::runtime_error(lf::str(path, ": IDX type code 0x", std::hex, int(magic[2]),
                                 " is not supported (only unsigned byte, 0x08)"));
  IdxArray out;
  const int ndim = magic[3];
  if (expect.ndim > 0 && ndim != expect.ndim)
    throw std::runtime_error(lf::str(path, ": IDX ", expect.what, " must have ", expect.ndim,
                                 " dimension", expect.ndim > 1 ? "s" : "", ", found ", ndim));
  unsigned char dbuf[16];
  got = f.read(dbuf, 4 * static_cast<size_t>(ndim));
  if (got < 4u * ndim)
    throw std::runtime_error(lf::str(path, ": truncated IDX header (", 4 + got, " of ", 4 + 4 * ndim,
                                 " bytes)"));
  for (int d = 0; d < ndim; ++d) {
    int64_t v = (int64_t{dbuf[4 * d]} << 24) | (dbuf[4 * d + 1] << 16) | (dbuf[4 * d + 2] << 8) |
                dbuf[4 * d + 3];
    if (v < 1 || v > kMaxDim)
      throw std::runtime_error(lf::str(path, ": IDX dimension ", d, " is ", v, ", expected 1..",
                                   kMaxDim));
    out.dims.push_back(v);
  }
  for (int d = 1; d < ndim; ++d)
    if (out.dims[d] > expect.max_side)
      throw std::runtime_error(lf::str(path, ": IDX ", expect.what, " are ", record_dims(out.dims),
                                       ", larger than ", expect.max_side, " per side (",
                                       expect.max_side_reason, ")"));
  // Every size below is checked before it is used: four dimensions of up to 10^9 overflow
  // int64 (a wrapped product once ended in a division by zero).
  int64_t record = 0, total = 0;
  if (!bounded_product(std::vector<int64_t>(out.dims.begin() + 1, out.dims.end()),
                       int64_t{1} << 28, &record) ||
      !bounded_product({out.dims[0], record}, kMaxBytes, &total))
    throw std::runtime_error(lf::str(path, ": IDX dimensions imply more than ", human_bytes(kMaxBytes),
                                 " of data; the header is corrupt"));
  if (expect.records > 0 && out.dims[0] != expect.records)
    throw std::runtime_error(lf::str(path, " holds ", out.dims[0], " ", expect.what, " but ",
                                     expect.records_source, " holds ", expect.records));
  // A file cannot hold more than it could inflate to (deflate's ratio is at most 1032:1):
  // a header that declares more is refused before anything is inflated or allocated.
  const uint64_t header_bytes = 4 + 4 * static_cast<uint64_t>(ndim);
  const bool gz = f.compressed();
  const uint64_t can_hold = gz ? file_bytes * kMaxDeflateRatio : file_bytes - header_bytes;
  if (static_cast<uint64_t>(total) > can_hold && !allow_truncated)
    throw std::runtime_error(lf::str(path, ": truncated IDX file: the header promises ", total,
                                     " bytes of data, but a ", gz ? "gzip file" : "file", " of ",
                                     file_bytes, " bytes ", gz ? "inflates to at most " : "holds ",
                                     can_hold));
  const uint64_t memory = physical_memory_bytes();
  if (memory > 0 && static_cast<uint64_t>(total) > memory / 2)
    throw std::runtime_error(lf::str(path, ": the IDX header declares ", human_bytes(double(total)),
                                     " of data, more than half of this machine's memory (",
                                     human_bytes(double(memory)), ")"));
  // Grow as data arrive, so a lying header cannot force a huge allocation; never inflate more
  // than the header declares.
  out.data.reserve(static_cast<size_t>(std::min<int64_t>(total, 64 << 20)));
  const size_t step = 16u << 20;
  int64_t have = 0;
  while (have < total) {
    size_t want = static_cast<size_t>(std::min<int64_t>(total - have, step));
    out.data.resize(static_cast<size_t>(have) + want);
    size_t n = f.read(out.data.data() + have, want);
    have += static_cast<int64_t>(n);
    if (n < want) break;
  }
  out.data.resize(static_cast<size_t>(have));
  out.records = have / record;
  if (have < total) {
    std::string what = lf::str("truncated IDX file: the header promises ", out.dims[0],
                           " records of ", record, " bytes (", total, " bytes of data), found ",
                           have, " bytes (", out.records, " complete records)");
    if (!allow_truncated) throw std::runtime_error(lf::str(path, ": ", what));
    if (truncation) *truncation = what;
    out.data.resize(static_cast<size_t>(out.records * record));
  }
  return out;
}

std::string find_idx_file(const std::string& dir, const std::string& prefix,
                          const std::string& what, int ndim) {
  std::vector<std::string> tried;
  for (const char* sep : {"-", "."}) {
    for (const char* ext : {"", ".gz"}) {
      std::string name = lf::str(prefix, "-", what, sep, "idx", ndim, "-ubyte", ext);
      tried.push_back(name);
      if (fs::is_regular_file(fs::path(dir) / name)) return (fs::path(dir) / name).string();
    }
  }
  throw std::invalid_argument(lf::str(dir, ": no IDX ", what, " file for split '",
                                  prefix == "t10k" ? "test" : "train", "' (tried ",
                                  join(tried, ", "), ")"));
}

bool idx_files_present(const std::string& dir) {
  for (const char* prefix : {"train", "t10k"}) {
    try {
      find_idx_file(dir, prefix, "images", 3);
      return true;
    } catch (const std::invalid_argument&) {
    }
  }
  return false;
}

std::string resolve_idx_dataset(const std::string& dataset, const std::string& path) {
  if (dataset != "auto") return dataset;
  std::string p = lower(fs::absolute(path).string());
  if (p.find("fashion") != std::string::npos) return "fashion-mnist";
  if (p.find("mnist") != std::string::npos) return "mnist";
  return "generic";
}

std::vector<std::string> idx_label_names(const std::string& dataset, const std::string& path,
                                         int64_t max_label) {
  std::string kind = resolve_idx_dataset(dataset, path);
  if (kind == "fashion-mnist" || kind == "mnist") {
    if (max_label > 9)
      throw std::invalid_argument(lf::str(path, ": label ", max_label, " found, but ", kind,
                                      " has labels 0..9 (the label set is chosen from the path: one without \"mnist\" in it gets "
                                      "the generic names 0..N)"));
    if (kind == "fashion-mnist")
      // Zalando's Fashion-MNIST README, "Labels".
      return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  }
  std::vector<std::string> names;
  int64_t n = kind == "mnist" ? 10 : std::max<int64_t>(max_label + 1, 1);
  for (int64_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

std::unique_ptr<Source> open_idx_source(const SourceOptions& options) {
  const std::string prefix = options.split == "test" ? "t10k" : "train";
  const std::string images_path = find_idx_file(options.path, prefix, "images", 3);
  const std::string labels_path = find_idx_file(options.path, prefix, "labels", 1);
  std::vector<SkippedInput> skipped;
  std::string trunc;
  IdxExpect want_labels;
  want_labels.ndim = 1;
  want_labels.what = "labels";
  std::string labels_trunc;
  IdxArray lb = read_idx(labels_path, options.skip_bad, &labels_trunc, want_labels);
  // The images' header is checked against the labels and data.image_size before any pixel is
  // read: a wrong file fails at once, however large it claims to be.
  IdxExpect want_images;
  want_images.ndim = 3;
  want_images.what = "images";
  want_images.max_side = options.resolution;
  want_images.max_side_reason = lf::str("data.image_size ", options.resolution,
                                        "; IDX images are padded, never resized");
  want_images.records = lb.dims[0];
  want_images.records_source = labels_path;
  IdxArray im = read_idx(images_path, options.skip_bad, &trunc, want_images);
  if (!trunc.empty()) skipped.push_back({images_path, trunc});
  if (!labels_trunc.empty()) skipped.push_back({labels_path, labels_trunc});
  const int64_t n = std::min(im.records, lb.records);
  if (n == 0)
    throw std::invalid_argument(lf::str(images_path, ": no complete images to use"));
  const int64_t h = im.dims[1], w = im.dims[2], r = options.resolution;  // h, w <= r: checked
  const int64_t c = options.channels == 3 ? 3 : 1;
  int64_t padded = 0;
  if (!bounded_product({n, c, r, r}, kMaxBytes, &padded) ||
      static_cast<uint64_t>(padded) > physical_memory_bytes() / 2)
    throw std::runtime_error(lf::str(images_path, ": ", n, " images padded to ", c, "x", r, "x", r,
                                     " would not fit in memory; lower data.image_size or data.limit"));
  at::Tensor raw = at::from_blob(im.data.data(), {n, 1, h, w}, at::kByte);
  // Centre padding with the background value 0, as the DDPM/LDM MNIST setups pad 28 -> 32.
  at::Tensor images = at::zeros({n, 1, r, r}, at::kByte);
  images.narrow(2, (r - h) / 2, h).narrow(3, (r - w) / 2, w).copy_(raw);
  if (c == 3) images = images.expand({n, 3, r, r}).contiguous();
  at::Tensor labels =
      at::from_blob(lb.data.data(), {n}, at::kByte).to(at::kLong);
  int64_t max_label = labels.max().item<int64_t>();
  nlohmann::json desc = {{"kind", "idx"},
                         {"path", fs::absolute(options.path).lexically_normal().string()},
                         {"split", options.split},
                         {"dataset", resolve_idx_dataset(options.dataset, options.path)},
                         {"images_file", fs::path(images_path).filename().string()},
                         {"labels_file", fs::path(labels_path).filename().string()},
                         {"native_size", {h, w}},
                         {"resolution", r},
                         {"channels", c},
                         {"count", n}};
  return std::make_unique<InMemorySource>(
      images, labels, idx_label_names(options.dataset, options.path, max_label), desc,
      std::move(skipped));
}

}  // namespace lf::data
